"""Start and stop the Snowflake emulator: fakesnow (its own venv, a private port) and the layer in front of it.

    python -m sandbox.snowflake serve --port P --dir DIR --fakesnow-url URL   (the layer, foreground)

Everything lives under ``ROOT/snowflake/``::

    db/              fakesnow's database files (they survive a restart)
    state.json       the layer's objects (tasks, pipes, streams, ...)
    stages/          internal stages' files
    fakesnow.pid / fakesnow.log, layer.pid / layer.log

``sandbox.services`` starts and stops it with Postgres and Redis; clients use the layer's URL only.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from sandbox.processes import LOOPBACK, Detached, free_port, wait_until
from sandbox.snowflake.venv import FAKESNOW_VENV, ensure_fakesnow_venv

READY_TIMEOUT_S = 30.0
PROCESSES = {"fakesnow": "fakesnow_main.py", "layer": "sandbox.snowflake serve"}


def _directory(root: Path) -> Path:
    return root.resolve() / "snowflake"


def _answers(url: str) -> bool:
    """True when an HTTP server answers at ``url`` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _process(directory: Path, name: str) -> Detached:
    return Detached(directory, name, marker=PROCESSES[name])


def _spawn(directory: Path, name: str, cmd: list[str], ready_url: str) -> None:
    process = _process(directory, name)
    proc = process.spawn(cmd)
    if wait_until(lambda: _answers(ready_url), [proc], READY_TIMEOUT_S):
        return
    tail = process.log_tail()
    process.stop()
    raise RuntimeError(
        f"the Snowflake emulator's {name} did not answer at {ready_url} within {READY_TIMEOUT_S:.0f} s\n{tail}"
    )


def start_snowflake(root: Path, port: int) -> str:
    """Start (or reuse) the emulator of ``root`` with the layer on 127.0.0.1:``port``; its URL. Builds the fakesnow
    venv on first use (tens of seconds)."""
    directory = _directory(root)
    (directory / "db").mkdir(parents=True, exist_ok=True)
    url = f"http://{LOOPBACK}:{port}"
    if snowflake_running(root) and _answers(f"{url}/_emulator/health"):
        return url
    stop_snowflake(root)
    ensure_fakesnow_venv()
    fakesnow_port = free_port()
    fakesnow_url = f"http://{LOOPBACK}:{fakesnow_port}"
    launcher = str(Path(__file__).resolve().parent / "fakesnow_main.py")
    _spawn(
        directory,
        "fakesnow",
        [
            str(FAKESNOW_VENV.executable("python")),
            launcher,
            "--port",
            str(fakesnow_port),
            "--db-path",
            str(directory / "db"),
        ],
        fakesnow_url,
    )
    try:
        _spawn(
            directory,
            "layer",
            [
                sys.executable,
                "-m",
                "sandbox.snowflake",
                "serve",
                "--port",
                str(port),
                "--dir",
                str(directory),
                "--fakesnow-url",
                fakesnow_url,
            ],
            f"{url}/_emulator/health",
        )
    except RuntimeError:
        _process(directory, "fakesnow").stop()
        raise
    return url


def stop_snowflake(root: Path) -> bool:
    """Stop the emulator of ``root`` if it runs; True if it was running. Idempotent."""
    directory = _directory(root)
    layer = _process(directory, "layer").stop()
    fakesnow = _process(directory, "fakesnow").stop()
    return layer or fakesnow


def snowflake_running(root: Path) -> bool:
    directory = _directory(root)
    return all(_process(directory, name).pid() is not None for name in PROCESSES)
