"""bench/quarantine_review.py runs end to end on a small dataset (2 tables at 1/40 of the rows, the GCS part
on an emulator it starts) and prints its figure and budget lines; the figures of so small a run are not judged."""

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


def test_quarantine_review_bench_runs_and_prints_its_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    args = ["--small", "--runs", "2", "--baseline-runs", "1", "--gcs-runs", "1", "--cache", str(tmp_path / "data")]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "quarantine_review.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # it stops its emulator on the way out
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"bench/quarantine_review.py did not finish in time\n{out[-3000:]}\n{err[-3000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-4000:]}\n{err[-4000:]}"
    for pattern in (
        r"weekly summary, local +2 +[\d.]+ +[\d.]+ +[\d.]+ +\d+",
        r"seed's polars way \(per-file read \+ concat diagonal_relaxed\) +1 ",
        r"weekly summary, GCS emulator \(orders x 14 days\) +1 ",
        r"same numbers from both ways: yes \(2 tables",
        r"GCS emulator: \d+ HTTP requests per summary",
        r"summary median <= 0.3 s: [\d.]+ s: (PASS|OVER)",
        r"summary peak RSS <= 300 MB: \d+ MB: (PASS|OVER)",
        r"polars / summary >= 7x: .* = [\d.]+x: (PASS|OVER)",
    ):
        assert re.search(pattern, out), f"not printed: {pattern}\n{out[-4000:]}"
    # the dataset is written once and reused
    assert "written to" in err
    again = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "quarantine_review.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0 and f"reused {tmp_path / 'data'}" in again.stderr, again.stderr[-3000:]
