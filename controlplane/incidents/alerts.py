"""Alert payloads the control plane accepts, validated at the edge.

The Airflow payload is what the ``on_failure_callback`` in ``sandbox/airflow/dags/controlplane_alerts.py``
sends (the few lines users add to their DAGs; see the README). Unknown extra keys are ignored so newer
callbacks keep working; a missing or malformed known key is refused with a message naming it.

The generic (``POST /api/v1/alerts``) and Alertmanager bodies are validated by their serializers in
``controlplane/api/serializers.py``, which also describe them in the OpenAPI schema bots read; all three
reach ``incidents.services`` as one ``IncomingAlert`` shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

# Airflow's own rule for DAG and task ids (airflow.utils.helpers.KEY_REGEX), plus task-group dots.
_AIRFLOW_KEY = r"^[A-Za-z0-9_.\-]+$"
# Airflow's default ``allowed_run_id_pattern``: no spaces, brackets or markup in a run id.
_RUN_ID = r"^[A-Za-z0-9_.~:+\-]+$"
MAX_URL = 2000
MAX_FINGERPRINT = 600  # Incident.fingerprint's length


def url_origin(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, lower-cased, the default port left out; None if it is
    not one. What two URLs must share to be on the same server."""
    if not url:
        return None
    try:
        parts = urlsplit(str(url).strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if port is None or port == {"http": 80, "https": 443}[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def log_url_allowed(url: str | None, base_urls: Iterable[Any]) -> bool:
    """A log link is kept and shown only when it points at an Airflow the catalog holds for the alerting
    DAG: the same scheme, host and port as one of those connections' ``base_url``."""
    origin = url_origin(url)
    return origin is not None and any(url_origin(str(base or "")) == origin for base in base_urls)


class AirflowFailureAlert(BaseModel):
    """A failed Airflow task (``task_id`` set) or DAG run (``task_id`` null)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    source: str = Field(default="airflow", pattern=r"^airflow$")
    dag_id: str = Field(min_length=1, max_length=250, pattern=_AIRFLOW_KEY)
    task_id: str | None = Field(default=None, min_length=1, max_length=250, pattern=_AIRFLOW_KEY)
    run_id: str = Field(min_length=1, max_length=250, pattern=_RUN_ID)
    logical_date: datetime | None = None
    try_number: int | None = Field(default=None, ge=0, le=10_000)
    state: str | None = Field(default=None, max_length=40, pattern=r"^[a-z_]+$")
    exception: str = Field(default="", max_length=10_000)
    log_url: HttpUrl | None = Field(default=None, max_length=MAX_URL)
    base_url: HttpUrl | None = Field(default=None, max_length=MAX_URL)

    @property
    def failure_key(self) -> str:
        """What names the failed work: the DAG run's logical date (its day, UTC) or, for a run without
        one (asset-triggered or manual runs in Airflow 3), the run id."""
        if self.logical_date is not None:
            when = self.logical_date if self.logical_date.tzinfo else self.logical_date.replace(tzinfo=UTC)
            return when.astimezone(UTC).date().isoformat()
        return f"run={self.run_id}"

    @property
    def fingerprint(self) -> str:
        """Dedup key: the same Airflow, DAG, task and logical day is the same failure, whichever run of it
        (a rerun, a manual run, a retry) reports it."""
        airflow = url_origin(str(self.base_url)) if self.base_url else None
        key = f"airflow:{airflow or '-'}:{self.dag_id}:{self.task_id or '-'}:{self.failure_key}"
        if len(key) > MAX_FINGERPRINT:
            return f"airflow:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
        return key

    @property
    def title(self) -> str:
        what = f"{self.dag_id}.{self.task_id}" if self.task_id else f"DAG {self.dag_id}"
        return f"{what} failed (run {self.run_id})"[:300]
