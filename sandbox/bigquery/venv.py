"""The cached virtualenv holding local-bigquery 0.3.2 for the sandbox (Python 3.13, apart from the project's).

local-bigquery runs BigQuery's REST API on DuckDB. Its DuckDB (1.5.5) loads the ``ducklake`` (tables with
snapshots: time travel), ``icu`` (time zones: table reads fail "the icu extension needs to be loaded" without
it) and ``spatial`` extensions, which DuckDB would download on first use. They come here as the
``duckdb-extension-*`` wheels instead, and ``after_install`` installs each wheel's ``.duckdb_extension`` file
into ``<venv>/home/.duckdb`` with ``INSTALL '<path>'``: nothing is downloaded at run time. DuckDB resolves
``~/.duckdb`` from ``HOME``, so the server must run with ``HOME=<venv>/home`` (:func:`tool_env`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sandbox.venvs import ToolVenv, VenvError, find_python

LOCAL_BIGQUERY_VERSION = "0.3.2"
DUCKDB_VERSION = "1.5.5"
EXTENSIONS = ("ducklake", "icu", "spatial")
INSTALL_EXTENSION_TIMEOUT_S = 120.0

_INSTALL_SCRIPT = """
import sys, duckdb
con = duckdb.connect()
for path in sys.argv[1:]:
    con.execute("INSTALL '" + path.replace("'", "''") + "'")
"""


def duckdb_home(venv: Path) -> Path:
    """The ``HOME`` the server runs with: DuckDB keeps its installed extensions in ``HOME/.duckdb``."""
    return venv / "home"


def tool_env(venv: Path) -> dict[str, str]:
    """The environment for local-bigquery and the extension install: the venv's HOME, no project Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["HOME"] = str(duckdb_home(venv))
    return env


def install_extensions(venv: Path) -> None:
    """``INSTALL`` every extension file shipped in the ``duckdb-extension-*`` wheels into the venv's HOME."""
    files = sorted(venv.glob("lib/python*/site-packages/duckdb_extension_*/extensions/*/*.duckdb_extension"))
    found = {path.name.removesuffix(".duckdb_extension") for path in files}
    missing = set(EXTENSIONS) - found
    if missing:
        raise VenvError(f"the duckdb-extension wheels in {venv} lack {sorted(missing)} (found {sorted(found)})")
    duckdb_home(venv).mkdir(parents=True, exist_ok=True)
    cmd = [str(venv / "bin" / "python"), "-c", _INSTALL_SCRIPT, *map(str, files)]
    try:
        result = subprocess.run(
            cmd, env=tool_env(venv), capture_output=True, text=True, timeout=INSTALL_EXTENSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise VenvError(f"installing the DuckDB extensions took over {INSTALL_EXTENSION_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        raise VenvError(f"installing the DuckDB extensions failed:\n{result.stdout}\n{result.stderr}")


BIGQUERY_VENV = ToolVenv(
    name=f"local-bigquery-{LOCAL_BIGQUERY_VERSION}-py313",
    python=find_python("3.13", env_var="CONTROLPLANE_BIGQUERY_PYTHON"),
    requirements=(
        f"local-bigquery=={LOCAL_BIGQUERY_VERSION}",
        f"duckdb=={DUCKDB_VERSION}",
        *(f"duckdb-extension-{name}=={DUCKDB_VERSION}" for name in EXTENSIONS),
    ),
    entry="local-bigquery",
    after_install=install_extensions,
)


def ensure_bigquery_venv(*, force: bool = False) -> Path:
    """The local-bigquery venv, built on first use (tens of seconds) and reused afterwards (instant)."""
    return BIGQUERY_VENV.ensure(force=force)


if __name__ == "__main__":
    print(ensure_bigquery_venv(force="--force" in sys.argv[1:]))
