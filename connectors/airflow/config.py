"""Configuration, locators and parameter models of the Airflow connector.

Parameter names are Airflow's own (``dag_run_id``, ``task_ids``, ``only_failed``, ``include_downstream``,
``from_date``, ``reprocess_behavior`` ...), so people who know Airflow's API feel at home. Dates and
timestamps are ``UtcDatetime``: ``2025-01-01`` means midnight UTC, and Airflow always gets an aware value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from connectors.base import UtcDatetime

AIRFLOW_KEY = r"^[A-Za-z0-9_.\-]{1,250}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AirflowConfig(_Strict):
    """Where the Airflow API server is and how to log in (the password or token is a secret reference)."""

    base_url: str = Field(description="the API server, e.g. http://airflow.internal:8080 (no /api/v2)")
    username: str | None = Field(default=None, max_length=200)
    verify_tls: bool = True
    connect_timeout_s: float = Field(default=5, gt=0, le=60)
    timeout_s: float = Field(default=20, gt=0, le=300)
    # How long execute waits for cleared/triggered runs to finish, and how often it looks.
    wait_timeout_s: float = Field(default=900, gt=0, le=86_400)
    poll_interval_s: float = Field(default=2, ge=0.2, le=60)
    # Plans touching more task instances or runs than this are high risk (approval outside prod too).
    risky_task_instances: int = Field(default=25, ge=1)
    risky_runs: int = Field(default=10, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        HttpUrl(value)  # raises a clear error for anything that is not an http(s) URL
        return value.rstrip("/")


class DagLocator(_Strict):
    """Locator of a ``dag`` target: ``{"dag_id": ...}``."""

    dag_id: str = Field(pattern=AIRFLOW_KEY)


class InstanceLocator(_Strict):
    """Locator of an ``instance`` target (the Airflow deployment itself): ``{}``."""


LOCATOR_MODELS: dict[str, type[BaseModel]] = {"dag": DagLocator, "instance": InstanceLocator}


class ClearParams(_Strict):
    """What to clear: one run (``dag_run_id``) or the runs between ``start_date`` and ``end_date``;
    ``task_ids`` (all tasks if omitted); Airflow's flags. Defaults follow the seeds' ``airflow tasks clear
    --only-failed --downstream``."""

    # ``x-choices``: the metadata a form (or a bot) lists for this field: GET .../targets/<key>/choices/<kind>
    dag_run_id: str | None = Field(default=None, max_length=250, json_schema_extra={"x-choices": "failed_runs"})
    start_date: UtcDatetime | None = None
    end_date: UtcDatetime | None = None
    task_ids: list[str] | None = Field(default=None, max_length=200, json_schema_extra={"x-choices": "tasks"})
    only_failed: bool = True
    only_running: bool = False
    include_downstream: bool = True
    include_upstream: bool = False
    include_future: bool = False
    include_past: bool = False
    reset_dag_runs: bool = True
    wait_for_completion: bool = Field(default=True, description="wait until the cleared runs finish (verify)")

    @field_validator("task_ids")
    @classmethod
    def _tasks(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            import re

            bad = [t for t in value if not re.match(AIRFLOW_KEY, t)]
            if bad:
                raise ValueError(f"not valid Airflow task ids: {bad}")
        return value

    @model_validator(mode="after")
    def _scope(self) -> ClearParams:
        if not self.dag_run_id and not (self.start_date and self.end_date):
            raise ValueError("give a dag_run_id, or a start_date and end_date for a date range")
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError("start_date is after end_date")
        return self


class RerunParams(_Strict):
    """Trigger a new run. Its id is derived from the action id, so a re-delivery cannot start a second."""

    conf: dict[str, Any] = Field(default_factory=dict)
    logical_date: UtcDatetime | None = None
    note: str | None = Field(default=None, max_length=1000)
    wait_for_completion: bool = True


class BackfillParams(_Strict):
    """Reprocess a date range with Airflow's backfill (``airflow backfill create`` in the seeds)."""

    from_date: UtcDatetime
    to_date: UtcDatetime
    reprocess_behavior: Literal["none", "failed", "completed"] = "none"
    max_active_runs: int = Field(default=2, ge=1, le=32)
    run_backwards: bool = False
    dag_run_conf: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _range(self) -> BackfillParams:
        if self.from_date > self.to_date:
            raise ValueError("from_date is after to_date")
        if (self.to_date - self.from_date).days > 366:
            raise ValueError("a backfill covers at most 366 days; split it")
        return self


class PauseParams(_Strict):
    """Pause (emergency stop) or resume a DAG; no parameters beyond the target."""
