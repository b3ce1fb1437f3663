"""``manage.py quarantine_summary``: the weekly summary of a layout of seed 003's shape from files only, run as a
bot or a cron would run it (a subprocess whose DATABASE_URL and REDIS_URL point nowhere)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from fsspec.implementations.local import LocalFileSystem

from connectors.quarantine import QuarantineConfig, Store, stats
from tests.quarantine_qread import write_day

ROOT = Path(__file__).resolve().parent.parent
WEEK_END = dt.date(2025, 3, 30)
FS = LocalFileSystem()
# ports nothing listens on: a command that opened the database or Redis would fail
NOWHERE = {
    "DATABASE_URL": "postgres://nobody@127.0.0.1:9/nowhere?connect_timeout=1",
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "SECRET_KEY": "quarantine-summary-test",
    "DEBUG": "false",
}


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SANDBOX_PG_URL")}
    env.update(NOWHERE)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "quarantine_summary", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_source(root: Path) -> None:
    start = WEEK_END - dt.timedelta(days=6)
    write_day(FS, str(root), "orders", start - dt.timedelta(days=7), valid=100, reasons={"price < 0": 4})
    write_day(FS, str(root), "orders", start, valid=100, reasons={"price < 0": 2, "customer_id IS NULL": 3})
    write_day(FS, str(root), "payments", WEEK_END, valid=10, reasons={"amount < 0": 1}, key="payment_id")


def without_seconds(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "seconds"}


def test_json_is_the_summary_and_needs_no_database_or_redis(tmp_path: Path) -> None:
    write_source(tmp_path)

    done = run(str(tmp_path), "--week-end", WEEK_END.isoformat(), "--json")

    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expected = stats.weekly_summary(Store(QuarantineConfig(root=str(tmp_path)), {}), week_end=WEEK_END)
    assert without_seconds(printed) == without_seconds(expected)
    assert 0 < printed["seconds"] < 60
    orders = next(t for t in printed["tables"] if t["table"] == "orders")
    assert (orders["quarantined"], orders["growth"]) == (5, 25.0)


def test_the_report_is_readable_and_marks_new_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # in-process without the db fixture: pytest-django refuses any database access
    write_source(tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    out = io.StringIO()

    call_command("quarantine_summary", tmp_path.name, "--week-end", WEEK_END.isoformat(), stdout=out)  # relative

    assert "week 2025-03-24 to 2025-03-30" in out.getvalue()
    assert "orders: 5 quarantined of 100 valid (5.00%); week over week +25.0%" in out.getvalue()
    assert "customer_id IS NULL  NEW" in out.getvalue()
    assert "price < 0  NEW" not in out.getvalue()


def test_bad_input_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    done = run(str(tmp_path / "missing"), "--week-end", "2025-03-30")

    assert done.returncode != 0
    assert "is not a directory (pass the Silver base path" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}", "--week-end", "2025-03-30"], "has nothing under quarantine/"),  # the parent of the base path
        (["{tmp}/silver/quarantine", "--week-end", "2025-03-30"], "has nothing under quarantine/"),
        (["{tmp}/silver", "--week-end", "2025-02-30"], "'2025-02-30' is not a date"),
        (["{tmp}/silver"], "the following arguments are required: --week-end"),
        (["gs://Not_A_Bucket", "--week-end", "2025-03-30"], "a gs:// root is gs://bucket"),
        (["gs://bucket", "--week-end", "2025-03-30", "--gcs-token-file", "{tmp}/none.json"], "cannot read"),
    ],
)
def test_bad_input_is_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    write_source(tmp_path / "silver")

    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("quarantine_summary", *(a.format(tmp=tmp_path) for a in args))


def test_a_gs_url_reads_the_emulator(tmp_path: Path) -> None:
    url = os.environ.get("SANDBOX_GCS_URL")
    if not url:
        pytest.fail("SANDBOX_GCS_URL is not set: start the sandbox (it runs the GCS emulator)", pytrace=False)
    bucket = f"qread-cmd-{uuid.uuid4().hex[:10]}"
    store = Store(QuarantineConfig(root=f"gs://{bucket}/silver", gcs_endpoint=url), {})
    store.fs.mkdir(bucket)
    try:
        write_source(tmp_path)
        for path in FS.find(str(tmp_path)):
            store.fs.put_file(path, f"{bucket}/silver/{Path(path).relative_to(tmp_path)}")

        done = run(f"gs://{bucket}/silver", "--week-end", WEEK_END.isoformat(), "--json", "--gcs-endpoint", url)

        assert done.returncode == 0, done.stderr
        local = stats.weekly_summary(Store(QuarantineConfig(root=str(tmp_path)), {}), week_end=WEEK_END)
        assert without_seconds(json.loads(done.stdout)) == without_seconds(local)
    finally:
        store.fs.rm(bucket, recursive=True)
