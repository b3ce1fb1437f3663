"""Cached virtualenvs for the sandbox's outside systems (Airflow, fakesnow, local-bigquery), each apart from the
project's own environment, whose dependency trees they must not mix with.

A :class:`ToolVenv` names its Python, its requirements and (optionally) a constraints file; ``ensure()`` builds it
once with ``uv`` and reuses it::

    $CONTROLPLANE_CACHE/<name>       (when CONTROLPLANE_CACHE is set)
    ~/.cache/controlplane/<name>     (otherwise)

A marker file holding a hash of the Python, requirements and constraints is written last, so a half-built venv
is never reused, the second call is instant, and changing the pins rebuilds it. Concurrent callers (several test
sessions) serialise on a lock file; uv is called as a program (the one bin/_bootstrap.sh installed,
``$CONTROLPLANE_UV``), never imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_TIMEOUT_S = 900.0
LOCK_TIMEOUT_S = 1200.0
MARKER = ".controlplane-ready"


class VenvError(RuntimeError):
    """A sandbox venv could not be built; the message carries uv's output."""


def cache_root() -> Path:
    """``$CONTROLPLANE_CACHE`` or ``~/.cache/controlplane``."""
    configured = os.environ.get("CONTROLPLANE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "controlplane"


def find_python(version: str, *, env_var: str) -> str:
    """The interpreter for ``version`` (``"3.13"``): ``$env_var`` if set, else ``python<version>`` on PATH (not a
    pyenv shim), else a pyenv install of it, else the bare version for uv to find (or download, where it may)."""
    configured = os.environ.get(env_var)
    if configured:
        return configured
    on_path = shutil.which(f"python{version}")
    # A pyenv shim is on PATH for every installed version but fails ("command not found") unless that version
    # is selected (pyenv global/local): use the install behind it instead, found below.
    if on_path and Path(on_path).parent.name != "shims":
        return on_path
    pyenv_root = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv" if os.geteuid() == 0 else Path.home() / ".pyenv"))
    for candidate in sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), reverse=True):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return version


def uv_command() -> list[str]:
    """The uv that bin/_bootstrap.sh installed (``$CONTROLPLANE_UV``), else ``uv`` on PATH (a developer's own)."""
    configured = os.environ.get("CONTROLPLANE_UV")
    if configured:
        if not os.access(configured, os.X_OK):
            raise VenvError(f"CONTROLPLANE_UV={configured} is not an executable uv")
        return [configured]
    found = shutil.which("uv")
    if found:
        return [found]
    raise VenvError("uv not found: CONTROLPLANE_UV is not set and no `uv` is on PATH (source bin/_bootstrap.sh)")


def _run_uv(args: Sequence[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONHOME")}
    env["UV_COMPILE_BYTECODE"] = "1"  # these tools import thousands of modules: compiled once here, not per start
    cmd = [*uv_command(), *args]
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise VenvError(f"{' '.join(cmd)} did not finish within {INSTALL_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        raise VenvError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


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
                    raise VenvError(f"another process holds {path} for over {timeout:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class ToolVenv:
    """One tool's venv: ``name`` (its folder under the cache), the ``python`` to build it with, the ``requirements``
    and an optional ``constraints`` file; ``entry`` is the executable whose presence proves the install, and
    ``after_install(venv)`` runs once after it (offline extension installs, say) before the marker is written."""

    name: str
    python: str
    requirements: tuple[str, ...]
    entry: str
    constraints: Path | None = None
    after_install: Callable[[Path], None] | None = field(default=None, compare=False)

    @property
    def path(self) -> Path:
        """Where the venv lives (it may not exist yet)."""
        return cache_root() / self.name

    def executable(self, name: str) -> Path:
        """A program in the venv's ``bin`` (``python``, ``airflow``, ...)."""
        return self.path / "bin" / name

    def fingerprint(self) -> str:
        digest = hashlib.sha256("\n".join((self.python, *self.requirements)).encode())
        if self.constraints is not None and self.constraints.is_file():
            digest.update(self.constraints.read_bytes())
        return digest.hexdigest()

    def is_ready(self) -> bool:
        """True when the venv was completely built for the current Python, requirements and pins."""
        try:
            marker = (self.path / MARKER).read_text().strip()
        except OSError:
            return False
        return marker == self.fingerprint() and self.executable(self.entry).is_file()

    def ensure(self, *, force: bool = False) -> Path:
        """The venv, built on first use (tens of seconds) and reused afterwards (instant)."""
        venv = self.path
        if not force and self.is_ready():
            return venv
        with _locked(venv.parent / f"{self.name}.lock"):
            if not force and self.is_ready():  # built by another process while we waited
                return venv
            if venv.exists():
                shutil.rmtree(venv)
            _run_uv(["venv", "--quiet", "--python", self.python, str(venv)])
            install = ["pip", "install", "--quiet", "--compile-bytecode", "--python", str(self.executable("python"))]
            if self.constraints is not None and self.constraints.is_file():
                install += ["--constraint", str(self.constraints)]
            _run_uv([*install, *self.requirements])
            if not self.executable(self.entry).is_file():
                raise VenvError(f"the install finished but {self.executable(self.entry)} is missing")
            if self.after_install is not None:
                self.after_install(venv)
            (venv / MARKER).write_text(self.fingerprint() + "\n")
        return venv
