"""The cached virtualenv holding fakesnow 0.12.1 (its own Python 3.11, not the project's).

fakesnow brings duckdb 2.x, which clashes with the project's duckdb, so it lives in a venv of its own
(``sandbox.venvs``: built once with ``uv``, reused, rebuilt when the pins change). Installs are pinned by
``constraints-fakesnow-0.12.1-py311.txt`` beside this file (a freeze of a working install). fakesnow 0.12.1
imports modules of snowflake-connector-python 4.x that 5.x removed, so the connector is pinned to 4.8.1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sandbox.venvs import ToolVenv

FAKESNOW_VERSION = "0.12.1"

FAKESNOW_VENV = ToolVenv(
    name=f"fakesnow-{FAKESNOW_VERSION}-py311",
    python=os.environ.get("CONTROLPLANE_FAKESNOW_PYTHON", "python3.11"),
    requirements=(f"fakesnow[server]=={FAKESNOW_VERSION}", "snowflake-connector-python==4.8.1"),
    entry="fakesnow",
    constraints=Path(__file__).resolve().parent / f"constraints-fakesnow-{FAKESNOW_VERSION}-py311.txt",
)


def ensure_fakesnow_venv(*, force: bool = False) -> Path:
    """The fakesnow venv, built on first use (tens of seconds) and reused afterwards (instant)."""
    return FAKESNOW_VENV.ensure(force=force)


if __name__ == "__main__":
    print(ensure_fakesnow_venv(force="--force" in sys.argv[1:]))
