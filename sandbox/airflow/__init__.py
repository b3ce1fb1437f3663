"""The sandbox's real Airflow 3: its venv, its DAGs (``dags/``) and the scripts that start and stop it.

    from sandbox.airflow import start_airflow, stop_airflow
    server = start_airflow(root, pg_admin_url=os.environ["SANDBOX_PG_URL"])
    server.api("GET", "/api/v2/dags")
    server.stop()

See ``server.py`` for the layout under ``root`` and the CLI (``python -m sandbox.airflow``).
"""

from sandbox.airflow.server import (
    DAGS_FOLDER,
    SANDBOX_DAGS,
    AirflowApiError,
    AirflowServer,
    airflow_processes,
    airflow_status,
    api_request,
    fetch_token,
    start_airflow,
    stop_airflow,
)
from sandbox.airflow.venv import AIRFLOW_VERSION, AirflowVenvError, ensure_airflow_venv

__all__ = [
    "AIRFLOW_VERSION",
    "DAGS_FOLDER",
    "SANDBOX_DAGS",
    "AirflowApiError",
    "AirflowServer",
    "AirflowVenvError",
    "airflow_processes",
    "airflow_status",
    "api_request",
    "ensure_airflow_venv",
    "fetch_token",
    "start_airflow",
    "stop_airflow",
]
