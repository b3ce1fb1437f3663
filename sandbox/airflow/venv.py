"""A cached virtualenv holding Apache Airflow 3.3.2 for the sandbox (its own Python 3.11, not the project's).

Airflow's dependency tree (SQLAlchemy, FastAPI, its task SDK, ...) must not mix with the project's, so it
lives in a venv of its own, built once with ``uv`` and reused::

    $CONTROLPLANE_CACHE/airflow-3.3.2-py311       (when CONTROLPLANE_CACHE is set)
    ~/.cache/controlplane/airflow-3.3.2-py311     (otherwise)

Installs are pinned by ``constraints-3.3.2-py311.txt`` beside this file (a freeze of a working install:
the official constraints URL is not reachable from every machine, PyPI is). A marker file holding a hash
of the requirements and constraints is written last, so a half-built venv is never reused, the second
call is instant, and changing the pins rebuilds it. Concurrent callers (several test sessions) serialise
on a lock file; uv is called as a program (the one bin/_bootstrap.sh installed, ``$CONTROLPLANE_UV``), never
imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

AIRFLOW_VERSION = "3.3.2"
PYTHON = os.environ.get("CONTROLPLANE_AIRFLOW_PYTHON", "python3.11")
REQUIREMENTS = (
    f"apache-airflow=={AIRFLOW_VERSION}",
    "apache-airflow-providers-standard",
    "psycopg2-binary",
    "asyncpg",  # Airflow 3 opens an async engine on the metadata database too
)
CONSTRAINTS_FILE = Path(__file__).resolve().parent / f"constraints-{AIRFLOW_VERSION}-py311.txt"
VENV_NAME = f"airflow-{AIRFLOW_VERSION}-py311"
MARKER = ".controlplane-ready"
INSTALL_TIMEOUT_S = 900.0
LOCK_TIMEOUT_S = 1200.0


class AirflowVenvError(RuntimeError):
    """The Airflow venv could not be built; the message carries uv's output."""


def cache_root() -> Path:
    """``$CONTROLPLANE_CACHE`` or ``~/.cache/controlplane``."""
    configured = os.environ.get("CONTROLPLANE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "controlplane"


def venv_dir() -> Path:
    """Where the Airflow venv lives (it may not exist yet)."""
    return cache_root() / VENV_NAME


def airflow_executable(venv: Path | None = None) -> Path:
    """The ``airflow`` CLI of the venv."""
    return (venv or venv_dir()) / "bin" / "airflow"


def python_executable(venv: Path | None = None) -> Path:
    """The Python interpreter of the venv."""
    return (venv or venv_dir()) / "bin" / "python"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update("\n".join((PYTHON, *REQUIREMENTS)).encode())
    if CONSTRAINTS_FILE.is_file():
        digest.update(CONSTRAINTS_FILE.read_bytes())
    return digest.hexdigest()


def is_ready(venv: Path | None = None) -> bool:
    """True when the venv was completely built for the current requirements and pins."""
    venv = venv or venv_dir()
    try:
        marker = (venv / MARKER).read_text().strip()
    except OSError:
        return False
    return marker == _fingerprint() and airflow_executable(venv).is_file()


def _uv_command() -> list[str]:
    """The uv that bin/_bootstrap.sh installed (``$CONTROLPLANE_UV``), else ``uv`` on PATH (a developer's own)."""
    configured = os.environ.get("CONTROLPLANE_UV")
    if configured:
        if not os.access(configured, os.X_OK):
            raise AirflowVenvError(f"CONTROLPLANE_UV={configured} is not an executable uv")
        return [configured]
    found = shutil.which("uv")
    if found:
        return [found]
    raise AirflowVenvError("uv not found: CONTROLPLANE_UV is not set and no `uv` is on PATH (source bin/_bootstrap.sh)")


def _run_uv(args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONHOME")}
    env["UV_COMPILE_BYTECODE"] = "1"  # Airflow imports thousands of modules: compiled once here, not per start
    cmd = [*_uv_command(), *args]
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AirflowVenvError(f"{' '.join(cmd)} did not finish within {INSTALL_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        raise AirflowVenvError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def _locked(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AirflowVenvError(f"another process holds {path} for over {timeout:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_airflow_venv(*, force: bool = False) -> Path:
    """The Airflow venv, built on first use (tens of seconds) and reused afterwards (instant)."""
    venv = venv_dir()
    if not force and is_ready(venv):
        return venv
    with _locked(venv.parent / f"{VENV_NAME}.lock"):
        if not force and is_ready(venv):  # built by another process while we waited
            return venv
        if venv.exists():
            shutil.rmtree(venv)
        _run_uv(["venv", "--quiet", "--python", PYTHON, str(venv)])
        install = ["pip", "install", "--quiet", "--compile-bytecode", "--python", str(python_executable(venv))]
        if CONSTRAINTS_FILE.is_file():
            install += ["--constraint", str(CONSTRAINTS_FILE)]
        _run_uv([*install, *REQUIREMENTS])
        if not airflow_executable(venv).is_file():
            raise AirflowVenvError(f"the install finished but {airflow_executable(venv)} is missing")
        (venv / MARKER).write_text(_fingerprint() + "\n")
    return venv


if __name__ == "__main__":
    print(ensure_airflow_venv(force="--force" in sys.argv[1:]))
