"""Alert payloads the control plane accepts, validated at the edge.

The Airflow payload is what the ``on_failure_callback`` in ``sandbox/airflow/dags/controlplane_alerts.py``
sends (the few lines users add to their DAGs; see the README). Unknown extra keys are ignored so newer
callbacks keep working; a missing or malformed known key is refused with a message naming it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

# Airflow's own rule for DAG and task ids (airflow.utils.helpers.KEY_REGEX), plus task-group dots.
_AIRFLOW_KEY = r"^[A-Za-z0-9_.\-]+$"


class AirflowFailureAlert(BaseModel):
    """A failed Airflow task (``task_id`` set) or DAG run (``task_id`` null)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    source: str = Field(default="airflow", pattern=r"^airflow$")
    dag_id: str = Field(min_length=1, max_length=250, pattern=_AIRFLOW_KEY)
    task_id: str | None = Field(default=None, min_length=1, max_length=250, pattern=_AIRFLOW_KEY)
    run_id: str = Field(min_length=1, max_length=250)
    logical_date: datetime | None = None
    try_number: int | None = Field(default=None, ge=0, le=10_000)
    state: str | None = Field(default=None, max_length=40)
    exception: str = Field(default="", max_length=10_000)
    log_url: HttpUrl | None = None
    base_url: HttpUrl | None = None

    @property
    def fingerprint(self) -> str:
        """Dedup key: the same DAG, task and run is the same incident."""
        return f"airflow:{self.dag_id}:{self.task_id or '-'}:{self.run_id}"

    @property
    def title(self) -> str:
        what = f"{self.dag_id}.{self.task_id}" if self.task_id else f"DAG {self.dag_id}"
        return f"{what} failed (run {self.run_id})"[:300]
