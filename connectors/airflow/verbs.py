"""Airflow verbs: clear, rerun, backfill, pause, resume-task.

Each plan is Airflow's own answer where Airflow has one (the clear dry run lists the exact task
instances; the backfill dry run lists the dates). Each execute carries the action id into Airflow (a
task-instance note, a run id, the backfill's run conf) so a re-delivered action finds its own effect
instead of repeating it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from airflow_client.client.models.backfill_post_body import BackfillPostBody
from airflow_client.client.models.clear_task_instances_body import ClearTaskInstancesBody
from airflow_client.client.models.clear_task_instances_body_task_ids_inner import ClearTaskInstancesBodyTaskIdsInner
from airflow_client.client.models.dag_patch_body import DAGPatchBody
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

from connectors.airflow.config import BackfillParams, ClearParams, PauseParams, RerunParams
from connectors.airflow.connector import TERMINAL_RUN_STATES, AirflowConnector, iso
from connectors.base import (
    ConnectorError,
    ExecutionContext,
    Outcome,
    Plan,
    Risk,
    TargetRef,
    Touch,
    Verb,
    Verification,
)

MARKER = "controlplane action"


def marker(action_id: str) -> str:
    return f"{MARKER} {action_id}"


def rerun_run_id(action_id: str) -> str:
    """The run id a rerun creates: derived from the action, so Airflow refuses a second one (409)."""
    return f"controlplane__{action_id}"


def _runs_verdict(dag_id: str, states: dict[str, str]) -> tuple[bool, str]:
    failed = sorted(r for r, s in states.items() if s != "success")
    if not states:
        return False, f"no runs of {dag_id} to check"
    if failed:
        return False, f"{len(failed)} of {len(states)} runs of {dag_id} did not succeed: " + ", ".join(
            f"{r} ({states[r]})" for r in failed
        )
    return True, f"all {len(states)} runs of {dag_id} succeeded: {', '.join(sorted(states))}"


# ------------------------------------------------------------------------------------------------ clear


class Clear(Verb[AirflowConnector, ClearParams]):
    name = "clear"
    params_model = ClearParams
    target_kinds = ("dag",)
    description = "Clear task instances so they run again (airflow tasks clear): failed ones and downstream by default."

    def _body(self, params: ClearParams, *, dry_run: bool, note: str | None = None) -> ClearTaskInstancesBody:
        return ClearTaskInstancesBody(
            dry_run=dry_run,
            dag_run_id=params.dag_run_id,
            start_date=params.start_date,
            end_date=params.end_date,
            task_ids=[ClearTaskInstancesBodyTaskIdsInner(t) for t in params.task_ids] if params.task_ids else None,
            only_failed=params.only_failed,
            only_running=params.only_running,
            include_downstream=params.include_downstream,
            include_upstream=params.include_upstream,
            include_future=params.include_future,
            include_past=params.include_past,
            reset_dag_runs=params.reset_dag_runs,
            note=note,
        )

    def _clear(self, dag_id: str, params: ClearParams, *, dry_run: bool, note: str | None = None) -> list[Any]:
        client = self.connector.client
        doing = "previewing the clear (dry run)" if dry_run else "clearing task instances"
        result = client.call(
            f"{doing} of {dag_id}",
            client.task_instances.post_clear_task_instances,
            dag_id,
            self._body(params, dry_run=dry_run, note=note),
        )
        return list(result.task_instances)

    def plan(self, target: TargetRef, params: ClearParams) -> Plan:
        dag_id = self.connector.dag_id(target)
        tis = self._clear(dag_id, params, dry_run=True)
        if not tis:
            scope = params.dag_run_id or f"{iso(params.start_date)} .. {iso(params.end_date)}"
            flags = "failed " if params.only_failed else ""
            raise ConnectorError(f"nothing to clear: no {flags}task instances of {dag_id} match in {scope}")
        runs = sorted({ti.dag_run_id for ti in tis})
        states = Counter(str(ti.state.value if ti.state else "none") for ti in tis)
        touches = [
            Touch(
                kind="task_instance",
                name=f"{ti.dag_run_id} / {ti.task_id}" + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""),
                detail={
                    "state": ti.state.value if ti.state else None,
                    "try_number": ti.try_number,
                    "dag_run_id": ti.dag_run_id,
                    "task_id": ti.task_id,
                    "map_index": ti.map_index,
                },
            )
            for ti in tis
        ]
        warnings = []
        if states.get("success"):
            warnings.append(f"{states['success']} task instances that succeeded will run again")
        if states.get("running"):
            warnings.append(f"{states['running']} running task instances will be killed and restarted")
        risky = len(tis) >= self.connector.cfg.risky_task_instances or len(runs) >= self.connector.cfg.risky_runs
        risk = Risk.HIGH if risky else (Risk.MEDIUM if warnings else Risk.LOW)
        # a failure callback fires before the scheduler marks the downstream tasks: a named run still going
        # may have more to clear in a moment
        settling = params.dag_run_id is not None and (
            str(self.connector.run(dag_id, params.dag_run_id).state.value) not in TERMINAL_RUN_STATES
        )
        if settling:
            warnings.append(f"run {params.dag_run_id} is still going: tasks that fail from now on are not in this plan")
        return Plan(
            summary=f"clear {len(tis)} task instances in {len(runs)} run(s) of {dag_id} "
            f"({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})",
            touches=touches,
            counts={"task_instances": len(tis), "dag_runs": len(runs)},
            warnings=warnings,
            risk=risk,
            details={"dag_id": dag_id, "dag_runs": runs, "states": dict(states)},
            settling=settling,
        )

    def _already_cleared(self, dag_id: str, runs: list[str], action_id: str) -> list[str]:
        """Runs whose task instances carry this action's note: a previous delivery already cleared them."""
        return [
            run
            for run in runs
            if any(marker(action_id) in (ti.note or "") for ti in self.connector.task_instances(dag_id, run))
        ]

    def _clear_exactly(
        self, dag_id: str, run: str, instances: list[tuple[str, int]], params: ClearParams, note: str
    ) -> list[Any]:
        """Clear these task instances of one run and nothing else: ``[task_id, map_index]`` pairs, no
        up/downstream or past/future widening (the plan listed those already); Airflow still applies the
        state filter, so one that stopped failing since the plan is left as it is."""
        body = ClearTaskInstancesBody(
            dry_run=False,
            dag_run_id=run,
            task_ids=[ClearTaskInstancesBodyTaskIdsInner([task_id, map_index]) for task_id, map_index in instances],
            only_failed=params.only_failed,
            only_running=params.only_running,
            include_downstream=False,
            include_upstream=False,
            include_future=False,
            include_past=False,
            reset_dag_runs=params.reset_dag_runs,
            note=note,
        )
        client = self.connector.client
        result = client.call(
            f"clearing {len(instances)} task instances of {dag_id} run {run}",
            client.task_instances.post_clear_task_instances,
            dag_id,
            body,
        )
        return list(result.task_instances)

    def execute(self, target: TargetRef, params: ClearParams, ctx: ExecutionContext) -> Outcome:
        """Clear what the plan lists (``ctx.plan``, the one approved; planned now when none is given) that
        still matches; task instances that came to match since are left alone and named in the outcome."""
        dag_id = self.connector.dag_id(target)
        plan = ctx.plan or self.plan(target, params)
        planned: dict[str, list[tuple[str, int]]] = {}
        for touch in plan.touches:
            if touch.kind == "task_instance":
                detail = touch.detail
                planned.setdefault(detail["dag_run_id"], []).append((detail["task_id"], detail.get("map_index", -1)))
        # Only a repeated attempt can find its own earlier clear; the first skips the reads (a call per run).
        done = self._already_cleared(dag_id, sorted(planned), ctx.action_id) if ctx.attempt > 1 else []
        for run in done:
            ctx.log(f"run {run} was already cleared by this action; not clearing again")
        cleared: list[dict[str, Any]] = []
        for run in sorted(set(planned) - set(done)):
            tis = self._clear_exactly(dag_id, run, planned[run], params, marker(ctx.action_id))
            cleared += [{"dag_run_id": ti.dag_run_id, "task_id": ti.task_id, "map_index": ti.map_index} for ti in tis]
        already = bool(done) and not cleared
        if not cleared and not done:
            count = sum(len(v) for v in planned.values())
            raise ConnectorError(
                f"none of the {count} planned task instances of {dag_id} still match (cleared or changed since "
                "the plan): nothing cleared; look again and request a new clear if one is needed"
            )
        runs = sorted({ti["dag_run_id"] for ti in cleared} | set(done))
        if cleared:
            ctx.log(
                f"cleared {len(cleared)} task instances in {len(runs)} run(s): "
                + ", ".join(f"{ti['dag_run_id']}/{ti['task_id']}" for ti in cleared[:20])
            )
            ctx.executed(f"cleared {len(cleared)} task instances of {dag_id}")
        left_alone = self._new_matches(dag_id, params, planned, ctx)
        states = self.connector.wait_for_runs(dag_id, runs, ctx) if params.wait_for_completion else {}
        if ctx.cancel_requested() and any(s not in TERMINAL_RUN_STATES for s in states.values()):
            raise ConnectorError("cancelled on request while the cleared runs were still running (they keep running)")
        summary = f"cleared {len(cleared)} task instances of {dag_id}" if not already else f"{dag_id}: already cleared"
        if left_alone:
            summary += f"; {len(left_alone)} task instances that came to match after the plan were left alone"
        return Outcome(
            summary=summary,
            details={
                "dag_id": dag_id,
                "dag_runs": runs,
                "cleared": cleared,
                "left_alone": left_alone,
                "run_states": states,
            },
            already_done=already,
        )

    def _new_matches(
        self, dag_id: str, params: ClearParams, planned: dict[str, list[tuple[str, int]]], ctx: ExecutionContext
    ) -> list[dict[str, Any]]:
        """What the request's filter matches now beyond the plan (another failure since): not cleared, named
        so the engineer can request a clear of those (with its own plan and approval)."""
        try:
            now = self._clear(dag_id, params, dry_run=True)
        except ConnectorError as exc:
            ctx.log(f"could not list task instances matching since the plan: {exc.message}")
            return []
        listed = {(run, t, m) for run, pairs in planned.items() for t, m in pairs}
        new = [
            {"dag_run_id": ti.dag_run_id, "task_id": ti.task_id, "map_index": ti.map_index}
            for ti in now
            if (ti.dag_run_id, ti.task_id, ti.map_index) not in listed
        ]
        if new:
            ctx.log(
                f"left alone {len(new)} task instances that match the filter but were not in the approved plan: "
                + ", ".join(f"{ti['dag_run_id']}/{ti['task_id']}" for ti in new[:20])
                + "; request a new clear for them"
            )
        return new

    def verify(self, target: TargetRef, params: ClearParams, outcome: Outcome) -> Verification:
        dag_id = outcome.details["dag_id"]
        if not params.wait_for_completion:
            return Verification(ok=True, summary=f"cleared; not waiting for the runs ({dag_id})", details={})
        runs: list[str] = outcome.details["dag_runs"]
        seen: dict[str, str] = outcome.details.get("run_states") or {}
        if runs and all(seen.get(r) in TERMINAL_RUN_STATES for r in runs):
            # The wait read these end states from Airflow an instant ago: reading them again tells nothing new.
            states = {r: seen[r] for r in runs}
        else:
            states = {r: str(self.connector.run(dag_id, r).state.value) for r in runs}
        ok, summary = _runs_verdict(dag_id, states)
        return Verification(ok=ok, summary=summary, details={"run_states": states})


# ------------------------------------------------------------------------------------------------ rerun


class Rerun(Verb[AirflowConnector, RerunParams]):
    name = "rerun"
    params_model = RerunParams
    target_kinds = ("dag",)
    description = "Trigger a new DAG run (airflow dags trigger), with a run id derived from the action."

    def plan(self, target: TargetRef, params: RerunParams) -> Plan:
        dag_id = self.connector.dag_id(target)
        dag = self.connector.dag(dag_id)
        warnings = []
        if dag.is_paused:
            warnings.append(f"{dag_id} is paused: the run is created but waits until the DAG is resumed")
        if params.conf:
            # A conf changes what the DAG does (which source, which dates, which flags): not a plain rerun.
            keys = ", ".join(sorted(params.conf))
            warnings.append(f"the run gets a conf that changes what {dag_id} does; check its keys: {keys}")
        when = iso(params.logical_date) or "now"
        return Plan(
            summary=f"trigger a new run of {dag_id} (logical date {when})",
            touches=[
                Touch(
                    kind="dag_run",
                    name=f"{dag_id} / controlplane__<action id>",
                    detail={"logical_date": iso(params.logical_date), "conf": params.conf},
                )
            ],
            counts={"dag_runs": 1},
            warnings=warnings,
            risk=Risk.MEDIUM if params.conf else Risk.LOW,
            details={"dag_id": dag_id, "is_paused": dag.is_paused},
        )

    def execute(self, target: TargetRef, params: RerunParams, ctx: ExecutionContext) -> Outcome:
        dag_id = self.connector.dag_id(target)
        run_id = rerun_run_id(ctx.action_id)
        client = self.connector.client
        body = TriggerDAGRunPostBody(
            dag_run_id=run_id,
            logical_date=params.logical_date,
            conf=params.conf,
            note=params.note or marker(ctx.action_id),
        )
        already = False
        try:
            client.call(f"triggering {dag_id}", client.runs.trigger_dag_run, dag_id, body)
            ctx.log(f"triggered run {run_id}")
            ctx.executed(f"triggered run {run_id} of {dag_id}")
        except ConnectorError as exc:
            if "HTTP 409" not in exc.message:
                raise
            already = True  # Airflow refused a second run with this id: a previous delivery made it
            ctx.log(f"run {run_id} already exists (created by an earlier delivery of this action)")
        states = self.connector.wait_for_runs(dag_id, [run_id], ctx) if params.wait_for_completion else {}
        return Outcome(
            summary=f"run {run_id} of {dag_id}: {states.get(run_id, 'triggered')}",
            details={"dag_id": dag_id, "dag_run_id": run_id, "run_states": states},
            already_done=already,
        )

    def verify(self, target: TargetRef, params: RerunParams, outcome: Outcome) -> Verification:
        dag_id, run_id = outcome.details["dag_id"], outcome.details["dag_run_id"]
        state = str(self.connector.run(dag_id, run_id).state.value)
        if not params.wait_for_completion:
            return Verification(ok=True, summary=f"run {run_id} exists ({state})", details={"state": state})
        ok, summary = _runs_verdict(dag_id, {run_id: state})
        return Verification(ok=ok, summary=summary, details={"state": state})


# --------------------------------------------------------------------------------------------- backfill


class Backfill(Verb[AirflowConnector, BackfillParams]):
    name = "backfill"
    params_model = BackfillParams
    target_kinds = ("dag",)
    description = "Reprocess a date range with Airflow's backfill; progress shows runs done out of planned."

    def _body(self, dag_id: str, params: BackfillParams, conf: dict[str, Any]) -> BackfillPostBody:
        return BackfillPostBody(
            dag_id=dag_id,
            from_date=params.from_date,
            to_date=params.to_date,
            reprocess_behavior=params.reprocess_behavior,
            max_active_runs=params.max_active_runs,
            run_backwards=params.run_backwards,
            dag_run_conf=conf,
        )

    def plan(self, target: TargetRef, params: BackfillParams) -> Plan:
        dag_id = self.connector.dag_id(target)
        client = self.connector.client
        result = client.call(
            f"previewing the backfill of {dag_id} (dry run)",
            client.backfills.create_backfill_dry_run,
            self._body(dag_id, params, dict(params.dag_run_conf)),
        )
        dates = [iso(b.logical_date) or str(b.partition_key) for b in result.backfills]
        if not dates:
            raise ConnectorError(
                f"nothing to backfill: no runs of {dag_id} between {iso(params.from_date)} and {iso(params.to_date)} "
                f"with reprocess_behavior={params.reprocess_behavior}"
            )
        warnings = []
        active = self._active_backfills(dag_id)
        if active:
            warnings.append(f"backfill {active[0].id} of {dag_id} is still running: Airflow allows one at a time")
        risky = len(dates) >= self.connector.cfg.risky_runs
        return Plan(
            summary=f"backfill {dag_id}: {len(dates)} run(s) from {dates[0]} to {dates[-1]}, "
            f"{params.max_active_runs} at a time",
            touches=[Touch(kind="dag_run", name=f"{dag_id} @ {d}") for d in dates],
            counts={"dag_runs": len(dates)},
            warnings=warnings,
            risk=Risk.HIGH if risky else Risk.MEDIUM,
            details={"dag_id": dag_id, "logical_dates": dates},
        )

    def _active_backfills(self, dag_id: str) -> list[Any]:
        client = self.connector.client
        result = client.call(f"listing backfills of {dag_id}", client.backfills.list_backfills, dag_id)
        return [b for b in result.backfills if b.completed_at is None]

    def _find_own(self, dag_id: str, action_id: str) -> Any | None:
        """The backfill an earlier delivery of this action created (tagged in its run conf), newest first."""
        client = self.connector.client
        result = client.call(
            f"listing backfills of {dag_id}", client.backfills.list_backfills, dag_id, limit=100, order_by=["-id"]
        )
        return next(
            (b for b in result.backfills if (b.dag_run_conf or {}).get("controlplane_action") == action_id), None
        )

    def _runs(self, dag_id: str, params: BackfillParams, action_id: str) -> dict[str, str]:
        client = self.connector.client
        result = client.call(
            f"listing backfill runs of {dag_id}",
            client.runs.get_dag_runs,
            dag_id,
            run_type=["backfill"],
            logical_date_gte=params.from_date,
            logical_date_lte=params.to_date,
            limit=500,
        )
        own = [r for r in result.dag_runs if (r.conf or {}).get("controlplane_action") == action_id]
        return {r.dag_run_id: str(r.state.value) for r in own}

    def execute(self, target: TargetRef, params: BackfillParams, ctx: ExecutionContext) -> Outcome:
        dag_id = self.connector.dag_id(target)
        client = self.connector.client
        backfill = self._find_own(dag_id, ctx.action_id)
        already = backfill is not None
        if backfill is None:
            conf = {**params.dag_run_conf, "controlplane_action": ctx.action_id}
            backfill = client.call(
                f"creating the backfill of {dag_id}", client.backfills.create_backfill, self._body(dag_id, params, conf)
            )
            ctx.log(f"created backfill {backfill.id} of {dag_id}")
        else:
            ctx.log(f"backfill {backfill.id} was already created by this action; following it")
        # Said on every attempt: the runner owns the backfill from here, also one an earlier attempt created.
        ctx.executed(
            f"{'created' if not already else 'following'} backfill {backfill.id} of {dag_id}",
            {
                "dag_id": dag_id,
                "backfill_id": backfill.id,
                "url": f"{self.connector.cfg.base_url}/dags/{dag_id}/backfills",
            },
        )
        planned = len(self.plan_dates(dag_id, params))
        deadline = _Deadline(self.connector.cfg.wait_timeout_s)
        while True:
            states = self._runs(dag_id, params, ctx.action_id)
            done = sum(1 for s in states.values() if s in TERMINAL_RUN_STATES)
            ctx.progress(done, max(planned, len(states)))
            current = client.call(f"reading backfill {backfill.id}", client.backfills.get_backfill, backfill.id)
            if current.completed_at is not None and done == len(states):
                break
            if ctx.cancel_requested():
                client.call(f"cancelling backfill {backfill.id}", client.backfills.cancel_backfill, backfill.id)
                ctx.log(f"cancelled backfill {backfill.id} on request ({done} of {planned} runs finished)")
                raise ConnectorError(f"cancelled on request: backfill {backfill.id} stopped after {done} runs")
            deadline.check(f"backfill {backfill.id} of {dag_id} ({done} of {planned} runs finished)")
            ctx.heartbeat()
            time.sleep(self.connector.cfg.poll_interval_s)
        ctx.log(f"backfill {backfill.id} completed: {done} runs")
        return Outcome(
            summary=f"backfill {backfill.id} of {dag_id}: {done} runs finished",
            details={
                "dag_id": dag_id,
                "backfill_id": backfill.id,
                "run_states": states,
                "planned": planned,
                "action_id": ctx.action_id,
            },
            already_done=already,
        )

    def plan_dates(self, dag_id: str, params: BackfillParams) -> list[Any]:
        client = self.connector.client
        result = client.call(
            f"previewing the backfill of {dag_id}",
            client.backfills.create_backfill_dry_run,
            self._body(dag_id, params, dict(params.dag_run_conf)),
        )
        return list(result.backfills)

    def verify(self, target: TargetRef, params: BackfillParams, outcome: Outcome) -> Verification:
        dag_id = outcome.details["dag_id"]
        states = self._runs(dag_id, params, str(outcome.details["action_id"]))
        ok, summary = _runs_verdict(dag_id, states)
        return Verification(ok=ok, summary=summary, details={"run_states": states})


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = time.monotonic() + seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.until:
            raise ConnectorError(f"{what} did not finish within {self.seconds:.0f} s")


# ----------------------------------------------------------------------------------------- pause/resume


class _SetPaused(Verb[AirflowConnector, PauseParams]):
    params_model = PauseParams
    target_kinds = ("dag",)
    paused: bool

    def plan(self, target: TargetRef, params: PauseParams) -> Plan:
        dag_id = self.connector.dag_id(target)
        dag = self.connector.dag(dag_id)
        verb = "pause" if self.paused else "resume"
        warnings = []
        if dag.is_paused == self.paused:
            warnings.append(f"{dag_id} is already {'paused' if self.paused else 'active'}: nothing changes")
        if self.paused:
            running = self.connector.client.call(
                f"listing running runs of {dag_id}",
                self.connector.client.runs.get_dag_runs,
                dag_id,
                state=["running", "queued"],
                limit=100,
            )
            if running.dag_runs:
                warnings.append(
                    f"{len(running.dag_runs)} run(s) already running keep running; pausing stops new ones only"
                )
        return Plan(
            summary=f"{verb} {dag_id} (now {'paused' if dag.is_paused else 'active'})",
            touches=[Touch(kind="dag", name=dag_id, detail={"is_paused": dag.is_paused})],
            counts={"dags": 1},
            warnings=warnings,
            risk=Risk.LOW,
            details={"dag_id": dag_id, "was_paused": dag.is_paused},
        )

    def execute(self, target: TargetRef, params: PauseParams, ctx: ExecutionContext) -> Outcome:
        dag_id = self.connector.dag_id(target)
        client = self.connector.client
        before = self.connector.dag(dag_id).is_paused
        client.call(
            f"setting is_paused={self.paused} on {dag_id}",
            client.dags.patch_dag,
            dag_id,
            DAGPatchBody(is_paused=self.paused),
        )
        ctx.log(f"{dag_id}: is_paused {before} -> {self.paused}")
        return Outcome(
            summary=f"{dag_id} {'paused' if self.paused else 'resumed'}",
            details={"dag_id": dag_id, "was_paused": before},
            already_done=before == self.paused,
        )

    def verify(self, target: TargetRef, params: PauseParams, outcome: Outcome) -> Verification:
        dag_id = outcome.details["dag_id"]
        paused = self.connector.dag(dag_id).is_paused
        ok = paused == self.paused
        return Verification(
            ok=ok, summary=f"{dag_id} reads back as {'paused' if paused else 'active'}", details={"is_paused": paused}
        )


class Pause(_SetPaused):
    name = "pause"
    paused = True
    description = "Pause a DAG (emergency stop: no new runs are scheduled)."


class ResumeTask(_SetPaused):
    name = "resume-task"
    paused = False
    description = "Resume (unpause) a DAG so the scheduler starts its runs again."


VERBS: tuple[type[Verb[Any, Any]], ...] = (Clear, Rerun, Backfill, Pause, ResumeTask)
