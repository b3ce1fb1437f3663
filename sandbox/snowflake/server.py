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

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sandbox.snowflake.venv import FAKESNOW_VENV, ensure_fakesnow_venv

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PROCESSES = {"fakesnow": "fakesnow_main.py", "layer": "sandbox.snowflake serve"}


def _directory(root: Path) -> Path:
    return root.resolve() / "snowflake"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    """True when an HTTP server answers at ``url`` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _pid(directory: Path, name: str) -> int | None:
    try:
        pid = int((directory / f"{name}.pid").read_text().strip())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if PROCESSES[name] in cmdline else None


def _stop(directory: Path, name: str) -> bool:
    pid = _pid(directory, name)
    (directory / f"{name}.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return True  # a zombie of the calling process: gone for every purpose
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _spawn(directory: Path, name: str, cmd: list[str], ready_url: str) -> None:
    log_file = directory / f"{name}.log"
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the caller, like the daemonized Redis
            cwd=Path(__file__).resolve().parents[2],
        )
    (directory / f"{name}.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers(ready_url):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    _stop(directory, name)
    tail = log_file.read_text(errors="replace")[-2000:]
    raise RuntimeError(
        f"the Snowflake emulator's {name} did not answer at {ready_url} within "
        f"{READY_TIMEOUT_S:.0f} s\n--- {log_file} (tail) ---\n{tail}"
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
    fakesnow_port = _free_port()
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
        _stop(directory, "fakesnow")
        raise
    return url


def stop_snowflake(root: Path) -> bool:
    """Stop the emulator of ``root`` if it runs; True if it was running. Idempotent."""
    directory = _directory(root)
    layer = _stop(directory, "layer")
    fakesnow = _stop(directory, "fakesnow")
    return layer or fakesnow


def snowflake_running(root: Path) -> bool:
    directory = _directory(root)
    return _pid(directory, "layer") is not None and _pid(directory, "fakesnow") is not None
