"""Loading runbooks and running them: start, advance, and what people do on a step.

The runner owns the run's state (in the database only, so web and worker restarts lose nothing). Checks
and notifications advance by themselves in a worker (``advance_run`` task, enqueued on commit); manual
steps, approvals and actions wait for a person. An action step goes through ``action_request`` like
every other channel (policy, approval, idempotency, audit) with an idempotency key per step attempt and
a one-to-one link from the step row, so a step never launches its action twice; it completes when the
action ends verified (``step_action_finished``, subscribed to ``action_finished``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from connectors.base import ConnectorError
from controlplane import access
from controlplane.actions import notices
from controlplane.actions import services as action_services
from controlplane.actions.models import ACTIVE_STATES, TERMINAL_STATES, ActionRun, ActionState
from controlplane.audit import context
from controlplane.audit.context import Channel
from controlplane.audit.services import audit_record
from controlplane.catalog.checks import check_run
from controlplane.catalog.selectors import target_get
from controlplane.errors import Conflict, InvalidInput, NotFound, ServiceError
from controlplane.incidents.models import Incident, IncidentEvent
from controlplane.incidents.services import incident_event_record
from runbooks import templating
from runbooks.loader import Parsed
from runbooks.models import Runbook, RunbookRun, RunbookVersion, StepRun
from runbooks.schema import Runbook as RunbookSpec
from runbooks.selectors import incident_context

log = logging.getLogger(__name__)

User = Any
MAX_NOTE = 4000
STALLED_CHECK = timedelta(minutes=5)  # a check still "running" this long lost its worker

Step = StepRun.State
Run = RunbookRun.State


# ------------------------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"loaded {name}" for name in self.loaded]
        out.append(f"{len(self.loaded)} loaded, {len(self.unchanged)} unchanged")
        return out


def runbooks_load(*, parsed: list[Parsed]) -> LoadReport:
    """Store new versions of valid runbooks, all or nothing. A file whose content changed under a
    version number already loaded is refused (raise ``version`` when editing a runbook)."""
    broken = [p for p in parsed if p.runbook is None]
    if broken:
        raise InvalidInput(f"{len(broken)} runbook file(s) are invalid; nothing loaded")
    report = LoadReport()
    with transaction.atomic():
        for p in parsed:
            spec = p.runbook
            assert spec is not None
            runbook, _ = Runbook.objects.select_for_update().get_or_create(slug=spec.id, defaults={"title": spec.title})
            existing = RunbookVersion.objects.filter(runbook=runbook, version=spec.version).first()
            if existing is not None:
                if existing.digest != p.digest:
                    raise Conflict(
                        f"{p.path}: {spec.id} version {spec.version} is loaded with other content; "
                        f"raise 'version' to {spec.version + 1} when changing a runbook"
                    )
                report.unchanged.append(spec.id)
                continue
            latest = runbook.latest
            if latest is not None and latest.version > spec.version:
                raise Conflict(f"{p.path}: {spec.id} version {spec.version} is older than the loaded {latest.version}")
            version = RunbookVersion.objects.create(
                runbook=runbook,
                version=spec.version,
                digest=p.digest,
                definition=spec.model_dump(mode="json"),
                source_path=p.path[-300:],
            )
            runbook.latest, runbook.title = version, spec.title
            runbook.save(update_fields=["latest", "title", "updated_at"])
            audit_record(
                event="runbook.loaded",
                obj=version,
                after={"runbook": spec.id, "version": spec.version, "digest": p.digest, "steps": len(spec.steps)},
            )
            report.loaded.append(f"{spec.id} v{spec.version}")
    return report


# ------------------------------------------------------------------------------------------ starting


def _spec(run: RunbookRun) -> RunbookSpec:
    return version_spec(run.runbook_version)


_specs: dict[tuple[int, str], RunbookSpec] = {}


def version_spec(version: RunbookVersion) -> RunbookSpec:
    """The runbook a version holds, validated once per process (a loaded version never changes; the file's
    digest is in the key all the same)."""
    key = (version.pk, version.digest)
    spec = _specs.get(key)
    if spec is None:
        if len(_specs) >= 512:
            _specs.clear()
        spec = _specs[key] = RunbookSpec.model_validate(version.definition)
    return spec


def _typed_param(param: Any, raw: Any) -> Any:
    """A parameter's value from a form or a bot (strings are accepted for every type)."""
    name, kind = param.name, param.type
    if raw is None or raw == "":
        if param.required:
            raise InvalidInput(f"parameter {name!r} is required")
        return None
    try:
        if kind == "integer":
            return int(raw)
        if kind == "boolean":
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"true", "1", "yes", "on"}
        if kind == "date":
            return date.fromisoformat(str(raw)).isoformat()
        if kind == "datetime":
            return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).isoformat()
    except ValueError:
        raise InvalidInput(f"parameter {name!r} must be a {kind}, not {str(raw)[:50]!r}") from None
    value = str(raw)
    if len(value) > 1000:
        raise InvalidInput(f"parameter {name!r} is longer than 1000 characters")
    if kind == "choice" and value not in param.choices:
        raise InvalidInput(f"parameter {name!r} must be one of {param.choices}, not {value[:50]!r}")
    if kind == "target":
        try:
            target = target_get(value)
        except NotFound:
            raise InvalidInput(f"parameter {name!r}: no catalog target {value[:200]!r}") from None
        if param.target_kinds and target.kind not in param.target_kinds:
            wanted = " or ".join(param.target_kinds)
            raise InvalidInput(f"parameter {name!r}: {value} is a {target.kind}, not a {wanted}")
    return value


def run_defaults(*, version: RunbookVersion, incident: Incident | None) -> dict[str, Any]:
    """The parameters' defaults rendered over the incident (what the start form shows)."""
    spec = version_spec(version)
    ctx = {"incident": incident_context(incident), "params": {}, "steps": {}}
    out: dict[str, Any] = {}
    for param in spec.parameters:
        try:
            out[param.name] = templating.render(param.default, ctx)
        except templating.TemplateProblem:
            out[param.name] = None  # shown empty; the person fills it in
    return out


def run_start(*, actor: User, runbook: str, params: Mapping[str, Any], incident: Incident | None = None) -> RunbookRun:
    """Start following the latest version of a runbook; parameters are checked against their types."""
    access.require_role(actor, "responder", "starting a runbook")
    found = Runbook.objects.select_related("latest__runbook").filter(slug=runbook).first()
    version = found.latest if found is not None else None
    if version is None:
        raise NotFound(f"no runbook {runbook!r}; load the library with manage.py load_runbooks")
    spec = version_spec(version)
    if not isinstance(params, Mapping):
        raise InvalidInput("'params' must be an object")
    unknown = sorted(set(params) - {p.name for p in spec.parameters})
    if unknown:
        raise InvalidInput(f"unknown parameters {unknown}; {spec.id} takes {[p.name for p in spec.parameters]}")
    defaults = run_defaults(version=version, incident=incident)
    typed = {p.name: _typed_param(p, params.get(p.name, defaults.get(p.name))) for p in spec.parameters}
    with transaction.atomic():
        run = RunbookRun.objects.create(
            runbook_version=version,
            incident=incident,
            started_by=actor,
            channel=context.current().channel,
            params=typed,
        )
        StepRun.objects.bulk_create(
            StepRun(run=run, index=i, step_id=step.id, kind=step.kind) for i, step in enumerate(spec.steps)
        )
        audit_record(
            event="runbook_run.started",
            obj=run,
            after={
                "runbook": spec.id,
                "version": spec.version,
                "params": typed,
                "incident": getattr(incident, "pk", None),
            },
        )
        _timeline(run, f"started runbook {spec.id} v{spec.version}: {spec.title}")
        _advance_on_commit(run)
    return run


def _advance_on_commit(run: RunbookRun) -> None:
    run_id = run.pk

    def send() -> None:
        from runbooks.tasks import advance_run

        try:
            advance_run.delay(run_id)
        except Exception:  # the stalled-run sweep on beat advances it later
            log.exception("could not enqueue the advance of runbook run %s", run_id)

    transaction.on_commit(send)


def _timeline(run: RunbookRun, message: str, data: dict[str, Any] | None = None) -> None:
    if run.incident_id is None:
        return
    incident_event_record(
        incident_id=run.incident_id,
        kind=IncidentEvent.Kind.STEP,
        message=message[:4000],
        data={"run": run.pk, **(data or {})},
    )


# ------------------------------------------------------------------------------------------ context


_BLANK: dict[str, Any] = {
    "passed": None,
    "summary": "",
    "columns": [],
    "rows": [],
    "action": None,
    "action_state": "",
    "verification": None,
    "choice": "",
    "checked": [],
    "outputs": {},
}


def step_view(row: StepRun) -> dict[str, Any]:
    """What later templates see as ``steps.<id>``."""
    view = {**_BLANK, **(row.result or {}), "state": row.state}
    view.update(view.get("outputs") or {})
    return view


def template_context(run: RunbookRun, rows: list[StepRun], upto: int) -> dict[str, Any]:
    return {
        "incident": incident_context(run.incident),
        "params": dict(run.params),
        "steps": {r.step_id: step_view(r) for r in rows if r.index < upto},
    }


def _rows(run: RunbookRun) -> list[StepRun]:
    return list(StepRun.objects.filter(run=run).select_related("action").order_by("index"))


def step_rendered(*, run: RunbookRun, step_id: str, rows: list[StepRun] | None = None) -> dict[str, Any]:
    """The step's templates rendered for the page: instructions, commands, target, params, message.
    Problems come back under ``error`` instead of raising, so the page can show them. ``rows``: the run's
    step rows, when the caller has them already."""
    spec = _spec(run)
    rows = rows if rows is not None else _rows(run)
    row = next((r for r in rows if r.step_id == step_id), None)
    if row is None:
        raise NotFound(f"run {run.pk} has no step {step_id!r}")
    step = spec.step(step_id)
    ctx = template_context(run, rows, row.index)
    out: dict[str, Any] = {"errors": []}

    def render(name: str, value: Any) -> None:
        try:
            out[name] = templating.render(value, ctx)
        except templating.TemplateProblem as exc:
            out[name] = value
            out["errors"].append(str(exc))

    render("instructions", step.instructions)
    render("commands", [c.model_dump() for c in step.commands])
    for name in ("target", "params", "message", "reason"):
        if hasattr(step, name):
            render(name, getattr(step, name))
    return out


def step_next(*, run: RunbookRun, rows: list[StepRun] | None = None) -> dict[str, Any] | None:
    """What the run's current step needs next, for a bot that walks it without the web page: who acts
    (``by``: ``person`` runs one of ``commands``; ``system``: the worker runs a check or notification or
    records an action's end; ``action``: the step's action is queued or running, or awaits its approval),
    with the rendered instructions and what each command takes (checklist, choices, the action's verb,
    target and params, the approval's role). None once the run has ended."""
    if run.state in (Run.COMPLETED, Run.ABANDONED):
        return None
    rows = rows if rows is not None else _rows(run)
    if run.current >= len(rows):
        return {"step": None, "by": "system", "commands": []}
    row = rows[run.current]
    step = _spec(run).step(row.step_id)
    rendered = step_rendered(run=run, step_id=row.step_id, rows=rows)
    out: dict[str, Any] = {
        "step": row.step_id,
        "kind": step.kind,
        "title": step.title,
        "state": row.state,
        "by": "system",
        "commands": [],
        "instructions": rendered.get("instructions") or "",
    }
    skip = [] if step.kind == "approval" else ["skip"]
    action = row.action
    if row.state == Step.FAILED:
        out.update(by="person", commands=["retry", *skip], error=row.error)
    elif row.state != Step.WAITING:
        pass  # pending or running: the worker carries it
    elif step.kind == "approval":
        out.update(by="person", commands=["approve"], role=step.role)
    elif step.kind == "action" and step.waits_for is None and action is not None:
        out.update(action=str(action.id), action_state=action.state)
        if action.state == ActionState.AWAITING_APPROVAL:
            out.update(by="action", commands=["skip"])  # an approver decides on the action itself
        elif action.state in ACTIVE_STATES:
            out.update(by="action")
    elif step.kind == "action" and step.waits_for is None:
        out.update(
            by="person",
            commands=["act", *skip],
            act={
                "verb": step.verb,
                "target": rendered.get("target"),
                "params": rendered.get("params") or {},
                "approval": step.approval,
            },
        )
    else:  # manual, or a step whose connector is not there yet: done by hand
        out.update(
            by="person",
            commands=["complete", *skip],
            checklist=list(getattr(step, "checklist", [])),
            choices=list(getattr(step, "choices", [])),
        )
    if rendered["errors"]:
        out["template_errors"] = rendered["errors"]
    return out


# ------------------------------------------------------------------------------------------ advancing


def _lock(run_id: Any) -> RunbookRun:
    run = (
        RunbookRun.objects.select_for_update(of=("self",))
        .select_related("runbook_version__runbook", "incident")
        .filter(pk=run_id)
        .first()
    )
    if run is None:
        raise NotFound(f"no runbook run {run_id}")
    return run


def _announce(run_id: Any) -> None:
    """Bots waiting on the run (``?wait=``) hear of a change once it is committed, and read the run again."""
    transaction.on_commit(lambda: notices.run_changed_publish(run_id=run_id))


def _finish_step(row: StepRun, state: str, *, result: dict[str, Any] | None = None, error: str = "") -> None:
    row.state, row.finished_at, row.error = state, timezone.now(), error[:4000]
    if result is not None:
        row.result = result
    row.save(update_fields=["state", "started_at", "finished_at", "error", "result"])
    _announce(row.run_id)


def _with_outputs(step: Any, row: StepRun, result: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    if not step.outputs:
        return result
    scope = {**ctx, "result": {**_BLANK, **result}}
    result["outputs"] = {name: templating.render(text, scope) for name, text in step.outputs.items()}
    return result


def run_advance(*, run_id: Any, run_checks: bool = True) -> RunbookRun:
    """Carry the run forward as far as the system can: skip steps whose ``when`` is false, run checks,
    send notifications; stop at a step that needs a person or waits for its action. Idempotent.

    ``run_checks=False`` (the web request right after a person's move) stops before a check, which the
    worker runs: the page shows the next step at once without waiting on an external system."""
    while True:
        pending_check: tuple[StepRun, Any, dict[str, Any]] | None = None
        with transaction.atomic():
            run = _lock(run_id)
            if run.state in (Run.COMPLETED, Run.ABANDONED):
                return run
            spec = _spec(run)
            rows = _rows(run)
            if run.current >= len(rows):
                _complete(run)
                return run
            row, step = rows[run.current], spec.steps[run.current]
            if row.state in (Step.DONE, Step.SKIPPED):
                run.current += 1
                run.save(update_fields=["current", "updated_at"])
                continue
            if row.state == Step.FAILED:
                _set_state(run, Run.BLOCKED)
                return run
            if row.state == Step.WAITING and row.action is not None and row.action.state in TERMINAL_STATES:
                step_action_finished(action_id=row.action_id)  # its end was not recorded (a lost signal)
                row.refresh_from_db(fields=["state"])
                if row.state == Step.WAITING:  # could not be recorded: stop here rather than spin
                    return run
                continue
            if row.state in (Step.WAITING, Step.RUNNING):
                _set_state(run, Run.WAITING if row.state == Step.WAITING else Run.RUNNING)
                return run
            ctx = template_context(run, rows, row.index)
            row.started_at = row.started_at or timezone.now()
            if step.when:
                try:
                    go = templating.evaluate(step.when, ctx)
                except templating.TemplateProblem as exc:
                    _fail(run, row, str(exc))
                    return run
                if not go:
                    _finish_step(row, Step.SKIPPED, result={"reason": f"when: {step.when} was false"})
                    _audit_step(run, row, "skipped", {"reason": f"when: {step.when} was false"})
                    continue
            waits_for = getattr(step, "waits_for", None)
            if step.kind == "notify":
                try:
                    message = str(templating.render(step.message, ctx))
                except templating.TemplateProblem as exc:
                    _fail(run, row, str(exc))
                    return run
                where = f" ({step.channel}; Slack delivery comes with the Slack connector)" if step.channel else ""
                _timeline(run, f"{step.title}: {message}", {"step": step.id})
                sent = {"message": message, "channel": step.channel, "delivered": "timeline"}
                _finish_step(row, Step.DONE, result=sent)
                _audit_step(run, row, "notified", {"message": message, "channel": step.channel, "where": where.strip()})
                continue
            if step.kind == "check" and waits_for is None:
                if not run_checks:
                    _set_state(run, Run.RUNNING)
                    return run
                try:
                    target = str(templating.render(step.target, ctx))
                    params = templating.render(step.params, ctx)
                except templating.TemplateProblem as exc:
                    _fail(run, row, str(exc))
                    return run
                row.state, row.attempt = Step.RUNNING, row.attempt + 1
                row.save(update_fields=["state", "attempt", "started_at"])
                _set_state(run, Run.RUNNING)
                pending_check = (row, step, {"target": target, "params": params, "ctx": ctx})
            else:  # manual, approval, action, or a step waiting for its connector: a person goes on
                row.state = Step.WAITING
                row.save(update_fields=["state", "started_at"])
                _set_state(run, Run.WAITING)
                return run
        if pending_check is not None:
            _run_check(run, *pending_check)


def _run_check(run: RunbookRun, row: StepRun, step: Any, job: dict[str, Any]) -> None:
    """Run the check outside any transaction, then record it if the step is still this attempt's."""
    starter = run.started_by
    error = ""
    result: dict[str, Any] = {"target": job["target"], "check": step.check}
    try:
        findings = check_run(actor=starter, target_key=job["target"], check=step.check, params=job["params"])
        result.update(findings.model_dump(mode="json"))
        result = _with_outputs(step, row, result, job["ctx"])
    except (ServiceError, ConnectorError, templating.TemplateProblem) as exc:
        error = getattr(exc, "message", None) or str(exc)
    with transaction.atomic():
        locked = StepRun.objects.select_for_update().filter(pk=row.pk, state=Step.RUNNING, attempt=row.attempt).first()
        if locked is None:
            return  # skipped or retried meanwhile
        run = _lock(run.pk)
        if error:
            _fail(run, locked, f"check {step.check} on {job['target']} could not run: {error}", result=result)
            return
        if step.stop_on_fail and not result.get("passed"):
            _fail(run, locked, f"check failed: {result.get('summary', '')}", result=result)
            return
        _finish_step(locked, Step.DONE, result=result)
        verdict = "passed" if result.get("passed") else "did not pass"
        _timeline(run, f"{step.title}: {verdict}: {result.get('summary', '')}", {"step": step.id})
        _audit_step(run, locked, "checked", {"passed": result.get("passed"), "summary": result.get("summary", "")})


def _fail(run: RunbookRun, row: StepRun, error: str, *, result: dict[str, Any] | None = None) -> None:
    _finish_step(row, Step.FAILED, result=result, error=error)
    _set_state(run, Run.BLOCKED)
    _timeline(run, f"step {row.step_id} failed: {error}", {"step": row.step_id})
    _audit_step(run, row, "failed", {"error": error})


def _set_state(run: RunbookRun, state: str) -> None:
    if run.state != state:
        run.state = state
        run.save(update_fields=["state", "updated_at"])
        _announce(run.pk)


def _complete(run: RunbookRun) -> None:
    run.state, run.finished_at = Run.COMPLETED, timezone.now()
    run.save(update_fields=["state", "finished_at", "updated_at"])
    _announce(run.pk)
    _timeline(run, f"runbook {run.runbook_version.runbook.slug} completed")
    audit_record(event="runbook_run.completed", obj=run, after={"state": run.state})


def _audit_step(run: RunbookRun, row: StepRun, what: str, after: dict[str, Any]) -> None:
    audit_record(
        event=f"runbook_step.{what}",
        obj=run,
        object_repr=f"run {run.pk} step {row.step_id}",
        after={"step": row.step_id, "state": row.state, **after},
    )


# ------------------------------------------------------------------------------- what people do


def _current_step(run: RunbookRun, step_id: str, *states: str) -> tuple[StepRun, Any]:
    if run.state in (Run.COMPLETED, Run.ABANDONED):
        raise Conflict(f"run {run.pk} is {run.state}")
    row = StepRun.objects.select_for_update().filter(run=run, step_id=step_id).first()
    if row is None:
        raise NotFound(f"run {run.pk} has no step {step_id!r}")
    if row.index != run.current:
        raise Conflict(f"step {step_id!r} is not the current step of run {run.pk}")
    if states and row.state not in states:
        raise Conflict(f"step {step_id!r} is {row.state}; this needs it {' or '.join(states)}")
    return row, _spec(run).step(step_id)


def _by(row: StepRun, actor: User) -> None:
    row.actor = actor
    row.actor_name = context.current().actor_name or str(actor)


def step_complete(
    *, actor: User, run_id: Any, step_id: str, checked: list[str] | None = None, choice: str = "", note: str = ""
) -> RunbookRun:
    """A person says a manual step (or one waiting for its connector, done by hand) is done."""
    access.require_role(actor, "responder", "completing a runbook step")
    if len(note) > MAX_NOTE:
        raise InvalidInput(f"the note is longer than {MAX_NOTE} characters")
    with transaction.atomic():
        run = _lock(run_id)
        row, step = _current_step(run, step_id, Step.WAITING)
        by_hand = getattr(step, "waits_for", None) is not None
        if step.kind not in ("manual",) and not by_hand:
            raise Conflict(f"step {step_id!r} is a {step.kind} step; it is not completed by hand")
        checklist = list(getattr(step, "checklist", []))
        ticked = [item for item in (checked or []) if item]
        unknown = [item for item in ticked if item not in checklist]
        if unknown:
            raise InvalidInput(f"not on this step's checklist: {unknown}")
        missing = [item for item in checklist if item not in ticked]
        if missing:
            raise InvalidInput(f"tick every item of the checklist first; not ticked: {missing}")
        choices = list(getattr(step, "choices", []))
        if choices and choice not in choices:
            raise InvalidInput(f"choose one of {choices}")
        if not choices and choice:
            raise InvalidInput("this step offers no choice")
        result: dict[str, Any] = {"checked": ticked, "choice": choice, "note": note, "by_hand": by_hand}
        try:
            result = _with_outputs(step, row, result, template_context(run, _rows(run), row.index))
        except templating.TemplateProblem as exc:
            raise InvalidInput(str(exc)) from None
        _by(row, actor)
        _finish_step(row, Step.DONE, result=result)
        row.save(update_fields=["actor", "actor_name"])
        said = f" ({choice})" if choice else ""
        _timeline(run, f"{step.title}: done{said}" + (f": {note}" if note else ""), {"step": step_id})
        _audit_step(run, row, "completed", {"choice": choice, "checked": ticked, "note": note})
        _set_state(run, Run.RUNNING)
        _advance_on_commit(run)
    return run


def step_approve(*, actor: User, run_id: Any, step_id: str, comment: str = "") -> RunbookRun:
    """An approval gate: someone other than the run's starter, holding the step's role, lets it go on."""
    with transaction.atomic():
        run = _lock(run_id)
        row, step = _current_step(run, step_id, Step.WAITING)
        if step.kind != "approval":
            raise Conflict(f"step {step_id!r} is a {step.kind} step, not an approval")
        access.require_role(actor, step.role, "approving a runbook step", scope="actions:approve")
        if run.started_by_id == actor.pk:
            raise access.PolicyError("you started this run: a different person must approve this step")
        if len(comment) > MAX_NOTE:
            raise InvalidInput(f"the comment is longer than {MAX_NOTE} characters")
        _by(row, actor)
        _finish_step(row, Step.DONE, result={"approved_by": row.actor_name, "comment": comment})
        row.save(update_fields=["actor", "actor_name"])
        _timeline(run, f"{step.title}: approved by {row.actor_name}" + (f": {comment}" if comment else ""))
        _audit_step(run, row, "approved", {"comment": comment})
        _set_state(run, Run.RUNNING)
        _advance_on_commit(run)
    return run


def step_skip(*, actor: User, run_id: Any, step_id: str, reason: str) -> RunbookRun:
    """Skip the current step (not an approval gate) with a reason; a running action is not stopped."""
    access.require_role(actor, "responder", "skipping a runbook step")
    if not reason.strip():
        raise InvalidInput("say why the step is skipped (it goes into the audit trail)")
    if len(reason) > MAX_NOTE:
        raise InvalidInput(f"the reason is longer than {MAX_NOTE} characters")
    with transaction.atomic():
        run = _lock(run_id)
        row, step = _current_step(run, step_id, Step.PENDING, Step.WAITING, Step.FAILED, Step.RUNNING)
        if step.kind == "approval":
            raise Conflict("an approval gate cannot be skipped; a different approver decides")
        if row.action_id and row.action is not None and row.action.state in (ActionState.QUEUED, ActionState.RUNNING):
            raise Conflict(f"action {row.action_id} of this step is {row.action.state}; cancel it first")
        _by(row, actor)
        _finish_step(row, Step.SKIPPED, result={**(row.result or {}), "reason": reason})
        row.save(update_fields=["actor", "actor_name"])
        _timeline(run, f"{step.title}: skipped: {reason}", {"step": step_id})
        _audit_step(run, row, "skipped", {"reason": reason})
        _set_state(run, Run.RUNNING)
        _advance_on_commit(run)
    return run


def step_retry(*, actor: User, run_id: Any, step_id: str) -> RunbookRun:
    """Try a failed step again: a check runs again; an action step waits for a new request."""
    access.require_role(actor, "responder", "retrying a runbook step")
    with transaction.atomic():
        run = _lock(run_id)
        row, step = _current_step(run, step_id, Step.FAILED)
        row.state, row.error, row.finished_at = (Step.WAITING if step.kind == "action" else Step.PENDING), "", None
        # The ended action stays in the step's result and the audit trail; the step waits for a new one
        # (still linked, it would be taken for this attempt's and the step failed again at once).
        row.action = None
        row.save(update_fields=["state", "error", "finished_at", "action"])
        _audit_step(run, row, "retried", {})
        _set_state(run, Run.RUNNING)
        _advance_on_commit(run)
    return run


def step_act(*, actor: User, run_id: Any, step_id: str, params: Mapping[str, Any] | None = None) -> ActionRun:
    """Request the action of the current action step (params from the form, else the runbook's rendered
    ones). The same path as every channel: policy, plan, approval, audit. Once per step attempt."""
    access.require_role(actor, "responder", "running a runbook step's action", scope="actions:write")
    with transaction.atomic():
        run = _lock(run_id)
        row, step = _current_step(run, step_id, Step.WAITING)
        if step.kind != "action" or step.waits_for is not None:
            raise Conflict(f"step {step_id!r} has no action the control plane can run")
        if row.action is not None and (row.action.state in ACTIVE_STATES or row.action.state == ActionState.SUCCEEDED):
            return row.action  # already requested (a double click, a retried request)
        rendered = step_rendered(run=run, step_id=step_id)
        if rendered["errors"]:
            raise InvalidInput("; ".join(rendered["errors"]))
        chosen = dict(params) if params is not None else dict(rendered["params"] or {})
        reason = str(rendered.get("reason") or "") or (
            f"runbook {run.runbook_version.runbook.slug} step {step_id}"
            + (f" for INC-{run.incident_id}" if run.incident_id else "")
        )
        ctx = context.current()
        with context.change_context(channel=Channel.RUNBOOK, user=actor, request_id=ctx.request_id, scopes=ctx.scopes):
            result = action_services.action_request(
                actor=actor,
                verb=step.verb,
                target_key=str(rendered["target"]),
                params=chosen,
                reason=reason,
                idempotency_key=f"runbook-run-{run.pk}-step-{row.index}-attempt-{row.attempt + 1}",
                incident=run.incident,
                approval_asked_by=(
                    f"runbook {run.runbook_version.runbook.slug} step {step_id}" if step.approval == "always" else ""
                ),
            )
        action = result.action
        row.action, row.attempt = action, row.attempt + 1
        _by(row, actor)
        row.result = {
            "action": str(action.id),
            "action_state": action.state,
            "target": action.target.key,
            "verb": step.verb,
        }
        row.save(update_fields=["action", "attempt", "actor", "actor_name", "result"])
        _audit_step(run, row, "action_requested", {"action": str(action.id), "state": action.state})
        _set_state(run, Run.WAITING)
    return action


def step_action_finished(*, action_id: Any) -> None:
    """The action of a step ended: the step is done when it succeeded (verified), failed otherwise."""
    row = StepRun.objects.filter(action_id=action_id).select_related("action").first()
    if row is None:
        return
    with transaction.atomic():
        run = _lock(row.run_id)
        locked = StepRun.objects.select_for_update(of=("self",)).select_related("action").get(pk=row.pk)
        action = locked.action
        if action is None or locked.state != Step.WAITING or locked.action_id != action.id:
            return
        step = _spec(run).step(locked.step_id)
        result = {
            **(locked.result or {}),
            "action_state": action.state,
            "verification": action.verification,
            "summary": (action.verification or {}).get("summary") or action.error,
            "passed": action.state == ActionState.SUCCEEDED,
        }
        with context.change_context(channel=Channel.RUNBOOK, actor_name="runbook runner", request_id=action.request_id):
            if action.state == ActionState.SUCCEEDED:
                try:
                    result = _with_outputs(step, locked, result, template_context(run, _rows(run), locked.index))
                except templating.TemplateProblem as exc:
                    _fail(run, locked, str(exc), result=result)
                    return
                _finish_step(locked, Step.DONE, result=result)
                _timeline(run, f"{step.title}: {action.verb} verified: {result['summary']}", {"step": step.id})
                _audit_step(run, locked, "action_verified", {"action": str(action.id)})
                _set_state(run, Run.RUNNING)
                _advance_on_commit(run)
            else:
                _fail(run, locked, f"action {action.id} ended {action.state}: {result['summary'] or ''}", result=result)


def run_abandon(*, actor: User, run_id: Any, reason: str) -> RunbookRun:
    access.require_role(actor, "responder", "abandoning a runbook run")
    if not reason.strip():
        raise InvalidInput("say why the run is abandoned")
    with transaction.atomic():
        run = _lock(run_id)
        if run.state in (Run.COMPLETED, Run.ABANDONED):
            raise Conflict(f"run {run.pk} is {run.state}")
        run.state, run.finished_at = Run.ABANDONED, timezone.now()
        run.save(update_fields=["state", "finished_at", "updated_at"])
        _announce(run.pk)
        _timeline(run, f"runbook {run.runbook_version.runbook.slug} abandoned: {reason}")
        audit_record(event="runbook_run.abandoned", obj=run, after={"state": run.state}, reason=reason)
    return run


def runs_resume_stalled(*, now: datetime) -> list[int]:
    """Beat: checks whose worker died go back to pending, and runs left running are advanced again."""
    with transaction.atomic():
        stalled = StepRun.objects.select_for_update(skip_locked=True).filter(
            state=Step.RUNNING, started_at__lt=now - STALLED_CHECK
        )
        for row in stalled:
            row.state = Step.PENDING
            row.save(update_fields=["state"])
    ids = list(
        RunbookRun.objects.filter(state=Run.RUNNING, updated_at__lt=now - timedelta(seconds=60)).values_list(
            "pk", flat=True
        )[:200]
    )
    # Action steps whose action ended without the step hearing of it (a worker died between the action's
    # commit and its announcement): advancing the run records the end.
    ids += list(
        StepRun.objects.filter(state=Step.WAITING, action__state__in=TERMINAL_STATES)
        .exclude(run__state__in=(Run.COMPLETED, Run.ABANDONED))
        .values_list("run_id", flat=True)[:200]
    )
    from runbooks.tasks import advance_run

    for run_id in ids:
        advance_run.delay(run_id)
    return ids
