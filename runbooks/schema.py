"""The runbook format: what a file in ``runbooks/library/`` may say, as pydantic models.

A runbook is an ordered list of steps an on-call engineer (or a bot) walks through for one kind of
incident. The shape, by example (docs/runbooks.md has the whole reference)::

    id: 004-rehydrate-mart
    title: Rehydrate a mart by refreshing materialized views
    version: 1
    source: "seed 004: Rehydrate a mart"
    applies_to: {alert_types: [postgres.mart_stale], layers: [mart]}
    parameters:
      - {name: mart, type: target, target_kinds: [matview], default: "{{ incident.targets[0] }}"}
    steps:
      - id: blocking
        kind: check
        title: Nothing blocks the refresh
        target: "{{ params.mart }}"
        check: blocking_queries
      - id: refresh
        kind: action
        verb: refresh-mart
        target: "{{ params.mart }}"
        when: "steps.blocking.passed"

Strings in ``target``, ``params``, ``instructions``, ``message`` and ``outputs`` are templates rendered by a
sandboxed Jinja environment over ``incident``, ``params`` and ``steps`` (earlier steps' results); ``when``
is a Jinja expression. Checks and actions on systems whose connector does not exist yet carry
``waits_for: <connector>``: they are shown with their commands and done by hand until it lands.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RUNBOOK_ID = r"^[0-9]{3}-[a-z0-9]+(-[a-z0-9]+)*$"
STEP_ID = r"^[a-z][a-z0-9_]{0,62}$"
PARAM_NAME = r"^[a-z][a-z0-9_]{0,62}$"
LAYERS = ("bronze", "silver", "gold", "mart", "ingestion", "transformation", "warehouse", "other")
LEVELS = ("L1", "L2", "L3")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppliesTo(_Strict):
    """Which incidents the runbook is suggested for: any listed alert type, and (if given) a layer and a
    pipeline name matching one of the glob patterns."""

    alert_types: list[str] = Field(default_factory=list)
    layers: list[Literal[LAYERS]] = Field(default_factory=list)  # type: ignore[valid-type]
    pipelines: list[str] = Field(default_factory=list, description="glob patterns, e.g. data_ingestion_*")


class Parameter(_Strict):
    """A typed input of the run, asked when it starts; ``default`` may be a template over ``incident``."""

    name: str = Field(pattern=PARAM_NAME)
    type: Literal["string", "integer", "boolean", "date", "datetime", "target", "choice"] = "string"
    description: str = ""
    required: bool = True
    default: Any = None
    choices: list[str] = Field(default_factory=list, description="for type: choice")
    target_kinds: list[str] = Field(default_factory=list, description="for type: target, e.g. [dag]")

    @model_validator(mode="after")
    def _choices_fit(self) -> Parameter:
        if self.type == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r} is a choice: list its 'choices'")
        if self.type != "choice" and self.choices:
            raise ValueError(f"parameter {self.name!r}: 'choices' only go with type: choice")
        if self.type != "target" and self.target_kinds:
            raise ValueError(f"parameter {self.name!r}: 'target_kinds' only go with type: target")
        return self


class Command(_Strict):
    """A command or query shown to the engineer (copyable), as the seed runbook gives it."""

    lang: Literal["shell", "sql", "python", "yaml", "text"] = "shell"
    code: str = Field(min_length=1)
    description: str = ""


class _Step(_Strict):
    id: str = Field(pattern=STEP_ID)
    title: str = Field(min_length=1, max_length=200)
    instructions: str = Field(default="", description="markdown, shown with the step")
    commands: list[Command] = Field(default_factory=list)
    when: str = Field(default="", description="a Jinja expression; the step is skipped when it is false")
    outputs: dict[str, str] = Field(
        default_factory=dict, description="name -> template over the step's result, kept for later steps"
    )
    escalate: Literal[LEVELS] | None = None  # type: ignore[valid-type]


class ManualStep(_Step):
    """Done by a person: instructions, commands to run elsewhere, a checklist to tick or a choice to make."""

    kind: Literal["manual"]
    checklist: list[str] = Field(default_factory=list)
    choices: list[str] = Field(default_factory=list, description="the person picks one; kept as the step's choice")


class CheckStep(_Step):
    """A read-only connector check; its findings (rows, passed) are the step's result."""

    kind: Literal["check"]
    target: str = Field(min_length=1)
    check: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    waits_for: str | None = Field(default=None, description="the connector this check waits for, e.g. snowflake")
    stop_on_fail: bool = Field(default=False, description="a failed check stops the run for a person to decide")


class ActionStep(_Step):
    """A remediation verb, through the same action path as every channel (preview, policy, approval,
    audit); the step is done when the action is verified."""

    kind: Literal["action"]
    target: str = Field(min_length=1)
    verb: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str = Field(default="", description="template; defaults to the runbook, step and incident")
    waits_for: str | None = Field(default=None, description="the connector this action waits for, e.g. dbt")
    approval: Literal["policy", "always"] = Field(
        default="policy",
        description="always: a second person approves the action (its plan) even where the policy would not "
        "ask; the procedure's own two-person rule, decided once, on what will run",
    )


class ApprovalStep(_Step):
    """A gate: a person holding ``role`` (other than the one who started the run) lets the run go on."""

    kind: Literal["approval"]
    role: Literal["approver", "admin"] = "approver"


class NotifyStep(_Step):
    """A message for people: on the incident timeline, and to a Slack channel once Slack is connected."""

    kind: Literal["notify"]
    channel: str = Field(default="", description="e.g. #data-incidents")
    message: str = Field(min_length=1)


Step = Annotated[ManualStep | CheckStep | ActionStep | ApprovalStep | NotifyStep, Field(discriminator="kind")]


class Runbook(_Strict):
    """One procedure. ``version`` must grow whenever the file changes (the loader refuses otherwise)."""

    id: str = Field(pattern=RUNBOOK_ID)
    title: str = Field(min_length=1, max_length=200)
    version: int = Field(ge=1)
    source: str = Field(default="", description="where it comes from, e.g. 'seed 004: Rehydrate a mart'")
    summary: str = Field(default="", description="markdown: when to use it")
    severity: Literal["low", "medium", "high", "critical"] | None = None
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    parameters: list[Parameter] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for step in steps:
            if step.id in seen:
                raise ValueError(f"two steps have the id {step.id!r}")
            seen.add(step.id)
        return steps

    @model_validator(mode="after")
    def _unique_params(self) -> Runbook:
        names = [p.name for p in self.parameters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"parameters declared twice: {dupes}")
        return self

    def step(self, step_id: str) -> Any:
        return next(s for s in self.steps if s.id == step_id)


STEP_REFERENCE = re.compile(r"\bsteps\.([a-z][a-z0-9_]*)|\bsteps\[['\"]([a-z][a-z0-9_]*)['\"]\]")
PARAM_REFERENCE = re.compile(r"\bparams\.([a-z][a-z0-9_]*)")
