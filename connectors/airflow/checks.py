"""Read-only Airflow checks for diagnostics and verification steps."""

from __future__ import annotations

import statistics
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.airflow.connector import AirflowConnector, iso
from connectors.base import Check, ConnectorError, Findings, TargetRef


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FailedTaskInstancesParams(_Params):
    dag_run_id: str | None = Field(default=None, max_length=250, description="one run; all recent runs if empty")
    limit: int = Field(default=20, ge=1, le=200)
    include_log: bool = Field(default=True, description="add the last lines of each failed try's log")


class FailedTaskInstances(Check[AirflowConnector, FailedTaskInstancesParams]):
    name = "failed_task_instances"
    params_model = FailedTaskInstancesParams
    target_kinds = ("dag",)
    description = "Failed task instances with try number, duration and the end of their log."

    def run(self, target: TargetRef, params: FailedTaskInstancesParams) -> Findings:
        dag_id = self.connector.dag_id(target)
        tis = self.connector.task_instances(dag_id, params.dag_run_id or "~", state=["failed"], limit=params.limit)
        rows = []
        for ti in tis:
            excerpt = ""
            if params.include_log and ti.try_number:
                try:
                    excerpt = self.connector.task_log(dag_id, ti.dag_run_id, ti.task_id, ti.try_number)
                except ConnectorError as exc:
                    excerpt = f"(log unavailable: {exc.message})"
            duration = round(ti.duration, 1) if ti.duration is not None else None
            rows.append([ti.dag_run_id, ti.task_id, ti.try_number, duration, iso(ti.end_date), excerpt])
        where = f"run {params.dag_run_id}" if params.dag_run_id else "recent runs"
        return Findings(
            passed=not rows,
            summary=f"{len(rows)} failed task instance(s) of {dag_id} in {where}",
            expectation="no failed task instances",
            columns=["dag_run_id", "task_id", "try_number", "duration_s", "end_date", "log_excerpt"],
            rows=rows,
        )


class DagRunStateParams(_Params):
    dag_run_id: str | None = Field(default=None, max_length=250, description="one run; the latest runs if empty")
    limit: int = Field(default=10, ge=1, le=100)


class DagRunState(Check[AirflowConnector, DagRunStateParams]):
    name = "dag_run_state"
    params_model = DagRunStateParams
    target_kinds = ("dag",)
    description = "State of a DAG run, or of the latest runs; passes when the newest is not failed."

    def run(self, target: TargetRef, params: DagRunStateParams) -> Findings:
        dag_id = self.connector.dag_id(target)
        client = self.connector.client
        if params.dag_run_id:
            runs = [self.connector.run(dag_id, params.dag_run_id)]
        else:
            result = client.call(
                f"listing runs of {dag_id}",
                client.runs.get_dag_runs,
                dag_id,
                limit=params.limit,
                order_by=["-run_after"],
            )
            runs = list(result.dag_runs)
        rows = [
            [
                r.dag_run_id,
                str(r.state.value),
                str(r.run_type.value),
                iso(r.logical_date),
                iso(r.start_date),
                iso(r.end_date),
                round(r.duration, 1) if r.duration is not None else None,
            ]
            for r in runs
        ]
        newest = rows[0][1] if rows else None
        return Findings(
            passed=newest not in (None, "failed"),
            summary=f"{dag_id}: latest run {rows[0][0]} is {newest}" if rows else f"{dag_id} has no runs",
            expectation="the latest run did not fail",
            columns=["dag_run_id", "state", "run_type", "logical_date", "start_date", "end_date", "duration_s"],
            rows=rows,
        )


class PausedStateParams(_Params):
    expect_paused: bool = False


class PausedState(Check[AirflowConnector, PausedStateParams]):
    name = "paused_state"
    params_model = PausedStateParams
    target_kinds = ("dag",)
    description = "Whether the DAG is paused, against what is expected."

    def run(self, target: TargetRef, params: PausedStateParams) -> Findings:
        dag_id = self.connector.dag_id(target)
        dag = self.connector.dag(dag_id)
        return Findings(
            passed=dag.is_paused == params.expect_paused,
            summary=f"{dag_id} is {'paused' if dag.is_paused else 'active'}",
            expectation=f"{'paused' if params.expect_paused else 'active'}",
            columns=["dag_id", "is_paused", "has_import_errors", "next_dagrun_run_after"],
            rows=[[dag_id, dag.is_paused, dag.has_import_errors, iso(getattr(dag, "next_dagrun_run_after", None))]],
        )


class ImportErrorsParams(_Params):
    limit: int = Field(default=50, ge=1, le=500)


class ImportErrors(Check[AirflowConnector, ImportErrorsParams]):
    name = "import_errors"
    params_model = ImportErrorsParams
    target_kinds = ("instance", "dag")
    description = "DAG files Airflow cannot import (a broken deploy: a DAG that silently disappeared)."

    def run(self, target: TargetRef, params: ImportErrorsParams) -> Findings:
        client = self.connector.client
        result = client.call("listing import errors", client.import_errors.get_import_errors, limit=params.limit)
        rows: list[list[Any]] = [
            [e.filename, iso(e.timestamp), ((e.stack_trace or "").strip().splitlines() or [""])[-1]]
            for e in result.import_errors
        ]
        return Findings(
            passed=not rows,
            summary=f"{len(rows)} DAG file(s) fail to import",
            expectation="no import errors",
            columns=["filename", "timestamp", "error"],
            rows=rows,
        )


class RecentRunDurationsParams(_Params):
    limit: int = Field(default=20, ge=2, le=200)
    max_duration_s: float | None = Field(default=None, gt=0, description="fail if the latest run took longer")


class RecentRunDurations(Check[AirflowConnector, RecentRunDurationsParams]):
    name = "recent_run_durations"
    params_model = RecentRunDurationsParams
    target_kinds = ("dag",)
    description = "Durations of recent finished runs with their median (pipeline performance review)."

    def run(self, target: TargetRef, params: RecentRunDurationsParams) -> Findings:
        dag_id = self.connector.dag_id(target)
        client = self.connector.client
        result = client.call(
            f"listing runs of {dag_id}",
            client.runs.get_dag_runs,
            dag_id,
            limit=params.limit,
            state=["success", "failed"],
            order_by=["-run_after"],
        )
        rows: list[list[Any]] = [
            [r.dag_run_id, str(r.state.value), round(r.duration, 1) if r.duration is not None else None]
            for r in result.dag_runs
        ]
        durations = [row[2] for row in rows if row[2] is not None]
        median = statistics.median(durations) if durations else None
        latest = durations[0] if durations else None
        passed = params.max_duration_s is None or latest is None or latest <= params.max_duration_s
        return Findings(
            passed=passed,
            summary=f"{dag_id}: {len(durations)} finished runs, median {median} s, latest {latest} s",
            expectation=f"latest run <= {params.max_duration_s} s" if params.max_duration_s else "",
            columns=["dag_run_id", "state", "duration_s"],
            rows=rows,
        )


CHECKS: tuple[type[Check[Any, Any]], ...] = (
    FailedTaskInstances,
    DagRunState,
    PausedState,
    ImportErrors,
    RecentRunDurations,
)
