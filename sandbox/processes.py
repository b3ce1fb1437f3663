"""Detached helper processes of the sandbox (the GCS, Snowflake and BigQuery emulators): started in a session of
their own so they outlive the caller (like the daemonized Redis), found again from another process by a pid file
beside their log, and stopped with SIGTERM, then SIGKILL after a bounded wait.

A pid file alone is not trusted: the pid must still run a command line holding the process's ``marker`` (a reused
pid, or a zombie, whose command line is empty, counts as not running).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
PROJECT_DIR = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 10.0


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it; tiny race before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Detached:
    """One detached process: ``DIRECTORY/NAME.pid`` and ``DIRECTORY/NAME.log``; ``marker`` is a piece of its
    command line that tells it from whatever else may hold the pid later."""

    directory: Path
    name: str
    marker: str

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid if the process runs (its command line holds the marker), else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if self.marker in cmdline else None

    def spawn(self, cmd: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` detached from the caller (the project folder as its working directory), its output
        appended to the log, its pid in the pid file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, cwd=PROJECT_DIR,
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        return proc

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM, then SIGKILL if it is still there after ``timeout``; True if it was running. Idempotent."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.05)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the log, headed by its path, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            text = ""
        return f"--- {self.log_file} (tail) ---\n{text or '(empty)'}"


def wait_until(ready: Callable[[], bool], processes: Sequence[subprocess.Popen[bytes]], timeout: float) -> bool:
    """Poll ``ready`` until it is true (True) or ``timeout`` passes or one of ``processes`` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if any(proc.poll() is not None for proc in processes):
            return ready()
        time.sleep(0.05)
    return False
