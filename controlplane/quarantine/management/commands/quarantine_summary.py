"""``manage.py quarantine_summary PATH_OR_GS_URL --week-end YYYY-MM-DD [--json]``: the weekly quarantine summary
of any Silver base path of seed 003's shape, for a bot, a cron or a reviewer.

It reads files only: no database, Redis or other service is opened (system checks are skipped), so it runs
wherever the files are readable. The settings still load as for every ``manage.py`` command (SECRET_KEY when
DEBUG is off, a ``postgres://`` DATABASE_URL, which may point nowhere). ``--json`` prints the documented
interface (docs/quarantine.md, "quarantine_summary JSON"); without it, a readable report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from pydantic import ValidationError

from connectors.base import ConnectorError
from connectors.quarantine import QuarantineConfig, Store, stats
from connectors.quarantine.store import QUARANTINE_DIR

LAYOUT = "{PATH}/quarantine/{table}/ingest_dt=YYYY-MM-DD/*.parquet"


def _day(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = (
        "Print the weekly quarantine summary (rates per table and day, reasons, new reasons, growth) of a Silver "
        f"base path: a local directory or gs://bucket/prefix holding {LAYOUT}. Reads files only."
    )
    requires_system_checks: list[str] = []  # the checks may query the database; this command never does

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the Silver base path (the directory holding quarantine/), or gs://...")
        parser.add_argument(
            "--week-end", type=_day, required=True, help="the last day (UTC) of the 7-day week, YYYY-MM-DD"
        )
        parser.add_argument("--json", action="store_true", help="print the documented JSON instead of a report")
        parser.add_argument("--gcs-endpoint", help="GCS API endpoint (an emulator); default Google's")
        parser.add_argument(
            "--gcs-token-file", type=Path, help="a service account's JSON key for gs:// (default: anonymous)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        store = _store(options["path"], options["gcs_endpoint"], options["gcs_token_file"])
        try:
            if not store.ls(store.join(QUARANTINE_DIR)):
                raise CommandError(
                    f"{options['path']} has nothing under quarantine/: pass the Silver base path, the directory "
                    f"laid out as {LAYOUT}"
                )
            summary = stats.weekly_summary(store, week_end=options["week_end"])
        except ConnectorError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(json.dumps(summary) if options["json"] else report(summary))


def _store(path: str, endpoint: str | None, token_file: Path | None) -> Store:
    secrets: dict[str, str] = {}
    if path.startswith("gs://"):
        if token_file is not None:
            try:
                secrets["gcs_token"] = token_file.read_text()
            except OSError as exc:
                raise CommandError(f"cannot read --gcs-token-file {token_file}: {exc.strerror}") from None
        root = path
    else:
        local = Path(path).expanduser().resolve()
        if not local.is_dir():
            raise CommandError(f"{path} is not a directory (pass the Silver base path, laid out as {LAYOUT})")
        root = str(local)
    try:
        return Store(QuarantineConfig(root=root, gcs_endpoint=endpoint), secrets)
    except ValidationError as exc:
        raise CommandError(f"{path}: {'; '.join(e['msg'] for e in exc.errors())}") from None
    except ConnectorError as exc:
        raise CommandError(exc.message) from None


def report(summary: dict[str, Any]) -> str:
    """The summary as text: per table the week's totals and growth, the rate per day and the reasons."""
    lines = [
        f"Quarantine summary, week {summary['week_start']} to {summary['week_end']} "
        f"({len(summary['tables'])} tables, read in {summary['seconds']:.3f} s)"
    ]
    for table in summary["tables"]:
        growth = "n/a (nothing the week before)" if table["growth"] is None else f"{table['growth']:+.1f}%"
        lines += [
            "",
            f"{table['table']}: {table['quarantined']} quarantined of {table['valid']} valid "
            f"({_pct(table['rate'])}); week over week {growth}",
            "  " + "  ".join(f"{d['date'][5:]} {_pct(d['rate'])}" for d in table["days"]),
        ]
        for reason in table["reasons"]:
            mark = "  NEW" if reason["new"] else ""
            lines.append(f"  {reason['count']:>10}  (prev {reason['previous_week']:>8})  {reason['reason']}{mark}")
    return "\n".join(lines)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2f}%"
