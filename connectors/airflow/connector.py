"""The Airflow connector: clear, rerun, backfill, pause and resume DAGs on an Airflow 3 API server."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from airflow_client.client.models.dag_run_state import DagRunState
from pydantic import BaseModel, ValidationError

from connectors.airflow.client import shared_client
from connectors.airflow.config import LOCATOR_MODELS, AirflowConfig, DagLocator
from connectors.base import Connector, ConnectorError, ExecutionContext, HealthResult, TargetRef

TERMINAL_RUN_STATES = {DagRunState.SUCCESS.value, DagRunState.FAILED.value}
LOG_EXCERPT_LINES = 15


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class AirflowConnector(Connector):
    """Airflow 3 through its REST API (apache-airflow-client). Targets: ``dag`` and ``instance``."""

    kind = "airflow"
    config_model = AirflowConfig
    secret_names = ("password", "token")
    target_kinds = ("dag", "instance")

    def __init__(self, config: BaseModel, secrets: Mapping[str, str]) -> None:
        super().__init__(config, secrets)
        assert isinstance(config, AirflowConfig)
        self.cfg: AirflowConfig = config
        self.client = shared_client(config, dict(secrets))

    @classmethod
    def validate_locator(cls, kind: str, locator: Mapping[str, Any]) -> None:
        super().validate_locator(kind, locator)
        LOCATOR_MODELS[kind].model_validate(dict(locator))

    def dag_id(self, target: TargetRef) -> str:
        if target.kind != "dag":
            raise ConnectorError(f"target {target.key!r} is a {target.kind!r}; this needs a dag")
        try:
            return DagLocator.model_validate(dict(target.locator)).dag_id
        except ValidationError as exc:
            raise ConnectorError(
                f"target {target.key!r} has an invalid dag locator: {exc.errors()[0]['msg']}"
            ) from None

    def health(self) -> HealthResult:
        ok, summary, latency = self.client.health()
        return HealthResult(ok=ok, summary=summary, latency_ms=latency)

    # --------------------------------------------------------------------------------------- reading

    def dag(self, dag_id: str) -> Any:
        return self.client.call(f"reading DAG {dag_id}", self.client.dags.get_dag, dag_id)

    def run(self, dag_id: str, run_id: str) -> Any:
        return self.client.call(f"reading run {run_id} of {dag_id}", self.client.runs.get_dag_run, dag_id, run_id)

    def task_instances(
        self, dag_id: str, run_id: str = "~", *, state: list[str] | None = None, limit: int = 100
    ) -> list[Any]:
        result = self.client.call(
            f"listing task instances of {dag_id}",
            self.client.task_instances.get_task_instances,
            dag_id,
            run_id,
            state=state,
            limit=limit,
            order_by=["-start_date"],
        )
        return list(result.task_instances)

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, *, lines: int = LOG_EXCERPT_LINES
    ) -> str:
        """The last ``lines`` lines of a task try's log (Airflow 3 returns structured log events)."""
        result = self.client.call(
            f"reading the log of {dag_id}.{task_id} try {try_number}",
            self.client.task_instances.get_log,
            dag_id,
            run_id,
            task_id,
            try_number,
            full_content=True,
        )
        content = getattr(result.content, "actual_instance", result.content)
        entries: Iterable[Any] = content if isinstance(content, list) else [content]
        text_lines: list[str] = []
        for entry in entries:
            if isinstance(entry, str):
                text_lines.extend(entry.splitlines())
                continue
            event = getattr(entry, "event", None) or getattr(getattr(entry, "actual_instance", None), "event", None)
            if event is None:
                continue
            extra = getattr(entry, "additional_properties", {}) or {}
            level = extra.get("level", "")
            stamp = getattr(entry, "timestamp", None)
            prefix = f"[{stamp:%H:%M:%S}] " if isinstance(stamp, datetime) else ""
            text_lines.append(f"{prefix}{level.upper() + ' ' if level else ''}{event}")
            if extra.get("error_detail"):
                for err in extra["error_detail"]:
                    if isinstance(err, dict):
                        text_lines.append(f"    {err.get('exc_type', '')}: {err.get('exc_value', '')}")
        return "\n".join(text_lines[-lines:])

    def logs(self, target: TargetRef, ref: Mapping[str, Any], *, lines: int = 40) -> str:
        """The end of a task try's log; ``ref`` holds ``dag_run_id``, ``task_id`` and ``try_number``."""
        try_number = int(ref.get("try_number") or 1)
        return self.task_log(self.dag_id(target), str(ref["dag_run_id"]), str(ref["task_id"]), try_number, lines=lines)

    def wait_for_runs(self, dag_id: str, run_ids: list[str], ctx: ExecutionContext | None) -> dict[str, str]:
        """Poll runs until each is success or failed, or the wait times out; report progress and logs.

        Returns the last state of every run. A cancel request stops the wait (the caller decides what
        cancelling means for its verb)."""
        deadline = time.monotonic() + self.cfg.wait_timeout_s
        states: dict[str, str] = {}
        while True:
            turn_started = time.monotonic()
            for run_id in run_ids:
                if states.get(run_id) in TERMINAL_RUN_STATES:
                    continue
                state = str(self.run(dag_id, run_id).state.value)
                if ctx is not None and state != states.get(run_id):
                    ctx.log(f"run {run_id}: {state}")
                states[run_id] = state
            done = sum(1 for s in states.values() if s in TERMINAL_RUN_STATES)
            if ctx is not None:
                ctx.progress(done, len(run_ids))
            if done == len(run_ids):
                return states
            if ctx is not None and ctx.cancel_requested():
                return states
            if time.monotonic() > deadline:
                waiting = [r for r, s in states.items() if s not in TERMINAL_RUN_STATES]
                raise ConnectorError(
                    f"runs {waiting} of {dag_id} did not finish within {self.cfg.wait_timeout_s:.0f} s "
                    "(look for a stuck task: the dag-stuck-running runbook)"
                )
            # One read per interval, however long the reads and the bookkeeping took.
            rest = max(0.0, self.cfg.poll_interval_s - (time.monotonic() - turn_started))
            time.sleep(rest)

    def metadata(self, what: str, **filters: Any) -> list[dict[str, Any]]:
        """Choices for forms: ``dags``, ``tasks`` (dag_id=...), ``failed_runs`` (dag_id=...); each row has
        ``value`` and ``label``."""
        if what == "dags":
            dags = self.client.call("listing DAGs", self.client.dags.get_dags, limit=500).dags
            return [
                {
                    "value": d.dag_id,
                    "label": f"{d.dag_id}{' (paused)' if d.is_paused else ''}",
                    "dag_id": d.dag_id,
                    "is_paused": d.is_paused,
                }
                for d in dags
            ]
        dag_id = str(filters.get("dag_id", ""))
        if what == "tasks":
            tasks = self.client.call(f"listing tasks of {dag_id}", self.client.tasks.get_tasks, dag_id).tasks
            return [
                {
                    "value": t.task_id,
                    "label": t.task_id,
                    "task_id": t.task_id,
                    "downstream": list(t.downstream_task_ids or []),
                }
                for t in tasks
            ]
        if what == "failed_runs":
            runs = self.client.call(
                f"listing failed runs of {dag_id}",
                self.client.runs.get_dag_runs,
                dag_id,
                state=["failed"],
                limit=50,
                order_by=["-run_after"],
            ).dag_runs
            return [
                {
                    "value": r.dag_run_id,
                    "label": f"{r.dag_run_id} (failed {r.end_date:%Y-%m-%d %H:%M})" if r.end_date else r.dag_run_id,
                    "dag_run_id": r.dag_run_id,
                    "logical_date": iso(r.logical_date),
                    "end_date": iso(r.end_date),
                }
                for r in runs
            ]
        return super().metadata(what, **filters)


def _register() -> None:
    from connectors.airflow import checks, verbs

    AirflowConnector.verbs = verbs.VERBS
    AirflowConnector.checks = checks.CHECKS


_register()
