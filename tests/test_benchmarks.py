"""Every benchmark in bench/ runs, at its smallest size, as a user runs it: ``python bench/<name>.py ...`` in a
subprocess that starts and stops its own sandbox. Each must exit 0 and print its figures and budget lines;
the figures of so small a run mean nothing and are not judged (bench/README.md has the real ones)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench

VERDICT = r"\b(PASS|OVER)\b"


def run_bench(script: str, *args: str, timeout: float) -> str:
    """Run ``bench/<script>`` with ``args``; its output (stdout, then stderr) once it exited 0.

    On a timeout the script gets SIGTERM first: it stops the servers it started (its ``finally``), which a
    SIGKILL would leave running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"bench/{script} did not finish within {timeout:.0f} s\n{out[-3000:]}\n{err[-3000:]}")
    assert proc.returncode == 0, f"bench/{script} exited {proc.returncode}\n{out[-4000:]}\n{err[-4000:]}"
    return out + "\n" + err


def assert_lines(output: str, *patterns: str) -> None:
    missing = [p for p in patterns if not re.search(p, output)]
    assert not missing, f"not printed: {missing}\n{output[-4000:]}"


def test_launch_dispatch_runs_with_its_profile() -> None:
    # The profile too (--profile always): it wraps the launch path's functions by name and runs
    # bench/worker_probe.py inside a worker, which is what rots first when the code they name moves.
    output = run_bench(
        "launch_dispatch.py",
        "--quick",
        "--requests",
        "16",
        "--warmup",
        "16",
        "--concurrency",
        "4",
        "--open-requests",
        "16",
        "--open-clients",
        "4",
        "--samples",
        "3",
        "--profile",
        "always",
        "--profile-requests",
        "3",
        timeout=240,
    )
    assert_lines(
        output,
        r"1a\. API launch, closed loop",
        r"1b\. API launch, open loop: 16 launches offered at 150/s",
        r"CPU per launch during the measured runs",
        r"ratio dispatch p50 / bare round-trip p50 = [\d.]+ / [\d.]+ = [\d.]+x",
        rf"API launch p99 at 150/s offered \(open loop\) +[\d.]+ ms +<= 50 ms at 150/s +{VERDICT}",
        rf"API launches/s \(closed loop, the most sustained\) +\d+ /s +>= 250 /s +{VERDICT}",
        rf"dispatch p50 / bare Celery round trip p50 .* [\d.]+x +<= 2x +{VERDICT}",
        r"Profile: where one launch spends its time",
        r"Profile under load",
        r"Profile: inside the worker, task start -> connector call",
    )


def test_airflow_clear_runs_one_pair() -> None:
    # One pair and no warm-up: the script still starts its own Airflow (most of its time), clears a run
    # both ways and prints the budget line.
    output = run_bench("airflow_clear.py", "--samples", "1", "--warmup", "0", timeout=300)
    assert_lines(
        output,
        r"median direct +\d+ ms",
        r"median control plane +\d+ ms",
        rf"median added by the control plane per pair -?\d+ ms = -?[\d.]+% of the direct median +"
        rf"budget <= 50 ms and <= 2%: {VERDICT}",
        r"Where the time goes",
        r"POST /api/v1/actions -> 202",
    )


def test_history_pages_runs_and_every_page_shows_its_rows() -> None:
    # 1,000 rows of each kind (the default small set), topped up to 2,000: enough for every page to have
    # its 50 rows, so the script's own checks of what each page shows apply; a second fill runs too.
    output = run_bench(
        "history_pages.py",
        "--quick",
        "--requests",
        "1",
        "--warmup",
        "0",
        "--small",
        "1000",
        "--rows",
        "2000",
        "--events",
        "10",
        "--incident-actions",
        "5",
        timeout=240,
    )
    assert_lines(
        output,
        rf"incident page .* {VERDICT}",
        rf"API GET /api/v1/actions .* {VERDICT}",
        r"all pages within budget: (yes|NO)",
    )
    assert "did not show what they should" not in output, output[-4000:]


def test_api_fuzz_runs_one_case_per_operation() -> None:
    output = run_bench("api_fuzz.py", "--examples", "1", timeout=180)
    assert_lines(output, r"api_fuzz: cases=\d+ server_errors=0 schema_violations=0 seconds=[\d.]+")


def test_slack_ack_runs_one_small_round() -> None:
    # One measured round of 3 presses (after the warm-up round): every press answered 200 and its action ran.
    output = run_bench("slack_ack.py", "--rounds", "1", "--concurrency", "3", timeout=180)
    assert_lines(
        output,
        r"ack, server: gunicorn's request time of a press .* 3\n",
        r"press sent -> action row \(requested_at\) .* 3\n",
        rf"Slack ack p99 \(server\) .* {VERDICT}",
        rf"button press -> action row p50 .* {VERDICT}",
    )


def test_snowflake_bigquery_runs_one_pair_of_each() -> None:
    # One pair of each part and no warm-up: a resume-task through the API and the worker against the same
    # statements sent with snowflake-connector-python (each path must leave the graph started), and a 2-day
    # backfill plan through the preview against the same dry runs (the script checks both estimate the same bytes).
    output = run_bench("snowflake_bigquery.py", "--samples", "1", "--warmup", "0", "--days", "2", timeout=240)
    assert_lines(
        output,
        r"resume-task of a suspended 3-task graph",
        r"added per pair \(cp - direct\) +-?[\d.]+ +-?[\d.]+ +ratio of the medians [\d.]+x",
        r"statements sent per snowflake operation \(median\): direct \d+ in 1 session\(s\), control plane \d+ in 3",
        r"snowflake: median added by the control plane per pair -?\d+ ms",
        r"backfill plan of 2 day partitions",
        r"bigquery: median added by the control plane per pair -?\d+ ms",
    )
