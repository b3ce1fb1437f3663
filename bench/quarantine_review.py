"""Benchmark: the weekly quarantine summary (connectors.quarantine.stats.weekly_summary) over the seed's layout,
against the seed's own polars way (minimally fixed so that it runs), and over the GCS emulator.

    uv run python bench/quarantine_review.py [--runs N] [--baseline-runs N] [--gcs-runs N] [--small] [--keep]

Writes the bench dataset of sandbox/quarantine.py once (6 tables x 90 days, ~20 M quarantined rows in parts
of <= 40k rows, a column added to orders on day 60, ~4.5% quarantined) into a cache directory (``--cache``,
default var/bench/quarantine; reused when it is there) and measures, each figure in a fresh subprocess (its
peak RSS is that process's ru_maxrss): the summary of the last week on local disk (median and p99 of N runs),
the seed's polars way computing the same numbers (per-file ``pl.read_parquet`` + ``pl.concat(how=
"diagonal_relaxed")``, since the seed's ``pl.read_parquet(glob)`` stops at the first schema difference), and
the summary over a GCS emulator (started here, in a temp dir) holding 1 table x 14 days, with the HTTP
requests the emulator answered. Budgets (issue 15, item 8): summary <= 0.3 s (median) and <= 300 MB peak RSS,
>= 7x faster than the polars way. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.launch_dispatch import _raise_interrupt, fmt, machine, print_table, step, verdict  # noqa: E402

BUDGET_S = 0.3
BUDGET_RSS_MB = 300.0
BUDGET_RATIO = 7.0
END = date(2026, 11, 29)  # a Sunday: the summarized week is the last 7 days of the dataset
SMALL_TABLES = ("orders", "payments")
GCS_TABLE, GCS_DAYS = "orders", 14
REQUEST_LINE = re.compile(r'^"(GET|POST|PUT|PATCH|DELETE|HEAD) ', re.M)
WORKER_TIMEOUT_S = 1800


class BenchError(RuntimeError):
    pass


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] if ordered else math.nan


# --------------------------------------------------------------------------------------------- the dataset


def bench_profile(small: bool) -> Any:
    from sandbox.quarantine import PROFILES

    profile = PROFILES["bench"]
    return dataclasses.replace(profile, valid_rows=profile.valid_rows // 40) if small else profile


def write_dataset(
    root: str, *, small: bool, tables: Sequence[str] | None, days: int | None, endpoint: str | None
) -> str:
    from sandbox.quarantine import generate, store_for

    profile = bench_profile(small)
    started = time.perf_counter()
    written = generate(store_for(root, endpoint), profile, end=END, tables=tables, days=days)
    if written.skipped:
        return f"reused {root}"
    return (
        f"written to {root} in {time.perf_counter() - started:.0f} s: {written.files} files, "
        f"{written.bytes / 1e6:.0f} MB, {written.quarantined:,} quarantined and {written.valid:,} valid rows"
    )


# -------------------------------------------------------------------------------------------- the workers


def rss_now_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def summary_numbers(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers both ways compute: per table, (valid, quarantined) per day and per reason of the week
    (count, previous week, new)."""
    return {
        t["table"]: {
            "days": {d["date"]: [d["valid"], d["quarantined"]] for d in t["days"]},
            "reasons": {r["reason"]: [r["count"], r["previous_week"], r["new"]] for r in t["reasons"]},
        }
        for t in summary["tables"]
    }


def ours(root: str, endpoint: str | None, week_end: date) -> dict[str, Any]:
    from connectors.quarantine.stats import weekly_summary
    from sandbox.quarantine import store_for

    return summary_numbers(weekly_summary(store_for(root, endpoint), week_end=week_end))


def polars_way(root: str, endpoint: str | None, week_end: date) -> dict[str, Any]:
    """The seed's ``pl.read_parquet(...)`` + ``group_by('_quarantine_reason')``, fixed to run over drift: each
    file read on its own and concatenated with relaxed types (``order_total`` is text in some files); valid rows
    counted with ``pl.scan_parquet(...).select(pl.len())``. Reads the five weeks the summary needs."""
    import polars as pl

    week_start = week_end - timedelta(days=6)
    first = week_start - timedelta(days=28)
    days = [first + timedelta(days=n) for n in range((week_end - first).days + 1)]
    base = Path(root)
    out: dict[str, Any] = {}
    for table in sorted(p.name for p in (base / "quarantine").iterdir() if p.name != "_control"):
        files = [f for d in days for f in sorted((base / "quarantine" / table / f"ingest_dt={d}").glob("*.parquet"))]
        df = pl.concat([pl.read_parquet(f, hive_partitioning=True) for f in files], how="diagonal_relaxed")
        counts = df.group_by("ingest_dt", "_quarantine_reason").len()
        per_day = dict(counts.group_by("ingest_dt").agg(pl.col("len").sum()).iter_rows())
        week_days = days[-7:]
        valid = {
            d: pl.scan_parquet(sorted((base / table / f"ingest_dt={d}").glob("*.parquet")))
            .select(pl.len())
            .collect()
            .item()
            for d in week_days
        }
        reasons: dict[str, list[Any]] = {}
        for day, reason, n in counts.iter_rows():
            entry = reasons.setdefault(reason, [0, 0, True])
            if day >= week_start:
                entry[0] += n
            else:
                entry[2] = False
                if day >= week_start - timedelta(days=7):
                    entry[1] += n
        out[table] = {
            "days": {d.isoformat(): [valid[d], per_day.get(d, 0)] for d in week_days},
            "reasons": {r: v for r, v in reasons.items() if v[0] > 0},
        }
        del df, counts
    return out


def worker(way: str, root: str, endpoint: str | None, week_end: date, runs: int) -> None:
    """One figure in this fresh process: ``runs`` timed runs, then a JSON line with the times and peak RSS."""
    compute = ours if way == "ours" else polars_way
    if way == "ours":  # imports are start-up, not the summary's time
        import connectors.quarantine.stats  # noqa: F401
        import sandbox.quarantine  # noqa: F401
    else:
        import polars  # noqa: F401
    rss_start = rss_now_mb()
    times, numbers = [], None
    for _ in range(runs):
        started = time.perf_counter()
        numbers = compute(root, endpoint, week_end)
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "peak_rss_mb": peak, "start_rss_mb": rss_start, "numbers": numbers}))


def run_worker(way: str, root: str, week_end: date, runs: int, endpoint: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", way, "--root", root, "--runs", str(runs)]
    cmd += ["--end", week_end.isoformat(), *(["--gcs-endpoint", endpoint] if endpoint else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise BenchError(f"the {way} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Where the summary's numbers differ from the polars way's (every reason the summary lists is checked)."""
    problems = []
    if sorted(a) != sorted(b):
        problems.append(f"tables {sorted(a)} != {sorted(b)}")
    for table in sorted(set(a) & set(b)):
        if a[table]["days"] != b[table]["days"]:
            problems.append(f"{table} days {a[table]['days']} != {b[table]['days']}")
        for reason, values in a[table]["reasons"].items():
            if b[table]["reasons"].get(reason) != values:
                problems.append(f"{table} {reason!r}: {values} != {b[table]['reasons'].get(reason)}")
    return problems


# ---------------------------------------------------------------------------------------------- main run


def measure(opts: argparse.Namespace, tmp: Path) -> None:
    from sandbox.gcs import start_gcs, stop_gcs
    from sandbox.processes import free_port

    cache = Path(opts.cache or ROOT / "var" / "bench" / ("quarantine-small" if opts.small else "quarantine"))
    tables = SMALL_TABLES if opts.small else None
    step(f"the bench dataset in {cache} (written once, reused)")
    how = write_dataset(str(cache.resolve()), small=opts.small, tables=tables, days=None, endpoint=None)
    step(how)
    files = list(cache.glob("quarantine/*/*/*.parquet"))
    week = f"{END - timedelta(days=6)} .. {END}"

    step(f"weekly summary of {week}, local: {opts.runs} runs in a fresh process")
    local = run_worker("ours", str(cache.resolve()), END, opts.runs)
    step(f"the seed's polars way (fixed), same numbers: {opts.baseline_runs} runs in a fresh process")
    base = run_worker("polars", str(cache.resolve()), END, opts.baseline_runs)
    problems = compare(local["numbers"], base["numbers"])
    if problems:
        raise BenchError("the summary and the polars way disagree:\n  " + "\n  ".join(problems[:10]))

    step(f"GCS emulator in {tmp}: {GCS_TABLE} x {GCS_DAYS} days")
    gcs_root = f"gs://bench-quarantine/silver/base{'-small' if opts.small else ''}"
    server = start_gcs(tmp, free_port(), log_requests=True)
    try:
        step(write_dataset(gcs_root, small=opts.small, tables=[GCS_TABLE], days=GCS_DAYS, endpoint=server.url))
        before = len(REQUEST_LINE.findall(server.process.log_file.read_text(errors="replace")))
        remote = run_worker("ours", gcs_root, END, opts.gcs_runs, endpoint=server.url)
        requests = len(REQUEST_LINE.findall(server.process.log_file.read_text(errors="replace"))) - before
    finally:
        stop_gcs(tmp)

    quarantined = sum(d[1] for t in local["numbers"].values() for d in t["days"].values())
    med, med_base, med_gcs = (statistics.median(x["times"]) for x in (local, base, remote))
    ratio = med_base / med
    print("\n" + "=" * 100)
    print("Quarantine weekly summary vs the seed's polars way (bench/quarantine_review.py)")
    print("=" * 100)
    print("\n".join(machine()))
    print(f"dataset     {'small' if opts.small else 'full'}, {len(files)} quarantined files; {how}")
    print(f"week        {week}: {quarantined:,} quarantined rows in the week")
    print_table(
        "Figures (each in a fresh process, its first run included; peak RSS = its ru_maxrss, start = after imports)",
        ["figure", "runs", "median s", "p99 s", "first s", "peak RSS MB", "start MB"],
        [
            [
                name,
                str(len(x["times"])),
                fmt(statistics.median(x["times"]), 3),
                fmt(p99(x["times"]), 3),
                fmt(x["times"][0], 3),
                fmt(x["peak_rss_mb"], 0),
                fmt(x["start_rss_mb"], 0),
            ]
            for name, x in (
                ("weekly summary, local", local),
                ("seed's polars way (per-file read + concat diagonal_relaxed)", base),
                (f"weekly summary, GCS emulator ({GCS_TABLE} x {GCS_DAYS} days)", remote),
            )
        ],
    )
    print(f"\n  same numbers from both ways: yes ({len(local['numbers'])} tables, days and reasons compared)")
    per_summary = requests / len(remote["times"])
    print(f"  GCS emulator: {per_summary:.0f} HTTP requests per summary (info), median {med_gcs:.3f} s")
    print("\nBudgets (issue 15, item 8)")
    print(f"  summary median <= {BUDGET_S} s: {med:.3f} s: {verdict(med <= BUDGET_S)}")
    print(
        f"  summary peak RSS <= {BUDGET_RSS_MB:.0f} MB: {local['peak_rss_mb']:.0f} MB: "
        f"{verdict(local['peak_rss_mb'] <= BUDGET_RSS_MB)}"
    )
    print(
        f"  polars / summary >= {BUDGET_RATIO:.0f}x: {med_base:.2f} / {med:.3f} s = {ratio:.1f}x: "
        f"{verdict(ratio >= BUDGET_RATIO)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/quarantine_review.py", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed summaries on local disk (30)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="timed runs of the polars way (3)")
    parser.add_argument("--gcs-runs", type=int, default=10, help="timed summaries over the GCS emulator (10)")
    parser.add_argument("--small", action="store_true", help="2 tables at 1/40 of the rows (a smoke run)")
    parser.add_argument("--cache", default=None, help="where the dataset is kept (var/bench/quarantine[-small])")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (the emulator's log) after the run")
    parser.add_argument("--worker", choices=["ours", "polars"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--gcs-endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--end", type=date.fromisoformat, default=END, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        worker(opts.worker, opts.root, opts.gcs_endpoint, opts.end, opts.runs)
        return 0
    if min(opts.runs, opts.baseline_runs, opts.gcs_runs) < 1:
        parser.error("--runs, --baseline-runs and --gcs-runs must be >= 1")
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-quarantine-"))
    broke = False
    try:
        measure(opts, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        broke = True
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        broke = True
    except Exception:
        traceback.print_exc()
        broke = True
    finally:
        if opts.keep:
            step(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if broke else 0


if __name__ == "__main__":
    sys.exit(main())
