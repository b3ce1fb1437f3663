"""The cached virtualenv holding Apache Airflow 3.3.2 for the sandbox (its own Python 3.11, not the project's).

Airflow's dependency tree (SQLAlchemy, FastAPI, its task SDK, ...) must not mix with the project's, so it lives
in a venv of its own (``sandbox.venvs``: built once with ``uv``, reused, rebuilt when the pins change). Installs
are pinned by ``constraints-3.3.2-py311.txt`` beside this file (a freeze of a working install: the official
constraints URL is not reachable from every machine, PyPI is).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sandbox.venvs import ToolVenv, VenvError

AIRFLOW_VERSION = "3.3.2"
AirflowVenvError = VenvError

AIRFLOW_VENV = ToolVenv(
    name=f"airflow-{AIRFLOW_VERSION}-py311",
    python=os.environ.get("CONTROLPLANE_AIRFLOW_PYTHON", "python3.11"),
    requirements=(
        f"apache-airflow=={AIRFLOW_VERSION}",
        "apache-airflow-providers-standard",
        "psycopg2-binary",
        "asyncpg",  # Airflow 3 opens an async engine on the metadata database too
    ),
    entry="airflow",
    constraints=Path(__file__).resolve().parent / f"constraints-{AIRFLOW_VERSION}-py311.txt",
)


def airflow_executable() -> Path:
    """The ``airflow`` CLI of the venv."""
    return AIRFLOW_VENV.executable("airflow")


def ensure_airflow_venv(*, force: bool = False) -> Path:
    """The Airflow venv, built on first use (tens of seconds) and reused afterwards (instant)."""
    return AIRFLOW_VENV.ensure(force=force)


if __name__ == "__main__":
    print(ensure_airflow_venv(force="--force" in sys.argv[1:]))
