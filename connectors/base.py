"""The connector contract: what the control plane asks of every external system.

A connector is plain Python (no Django, no controlplane import). It receives a validated, non-secret
config and the resolved secrets, and talks to exactly one external system. For every verb it supports it
offers ``plan`` (what exactly will be touched, before anything is touched), ``execute`` (do it, using the
action id as idempotency token) and ``verify`` (prove it worked). Checks are read-only and return
``Findings``. Every error leaves as :class:`ConnectorError`, flagged transient or permanent, so the runner
knows whether to retry. Every network call has a timeout.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


class ConnectorError(Exception):
    """An error talking to an external system.

    ``transient`` errors (timeouts, connection refused, 5xx, lock timeouts) may succeed if retried with
    backoff; permanent ones (bad credentials, missing object, invalid request) fail fast. The message is
    written for the on-call engineer: it says what failed and, where possible, what to do about it. It
    must never contain a secret.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


def _date_as_midnight(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value


def _as_utc(value: datetime) -> datetime:
    """A naive datetime (``2025-01-01`` parses to naive midnight) is read as UTC; an aware one is converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The one type of every date or timestamp parameter of a verb or check: made aware (UTC) at the edge, once,
# so the stored params, the preview's echo and every call to the outside system carry the same instant
# (``2025-01-01`` is stored and shown as ``2025-01-01T00:00:00Z``). External APIs refuse naive datetimes.
UtcDatetime = Annotated[datetime, BeforeValidator(_date_as_midnight), AfterValidator(_as_utc)]


class Risk(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Touch(_Model):
    """One thing a plan will touch: a view, a task instance, a partition, a table."""

    kind: str
    name: str
    detail: dict[str, Any] = Field(default_factory=dict)


class Plan(_Model):
    """The preview of a verb: exactly what will be touched, how much, what it locks and how risky it is.

    ``requires_consent`` means the engineer must explicitly accept a side effect (for example that readers
    block during a non-concurrent refresh) by passing the verb's consent parameter; the action service
    refuses the request otherwise. ``counts`` feeds approval thresholds (task instances, partitions,
    bytes).
    """

    summary: str
    touches: list[Touch] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    estimated_bytes: int | None = None
    #: what running the plan is expected to cost, in US dollars (bytes scanned at the system's on-demand price):
    #: shown on the preview, kept in the audit row, and over ``APPROVAL_COST_USD`` it needs a second person
    estimated_cost_usd: float | None = None
    locks: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    risk: Risk = Risk.LOW
    requires_consent: bool = False
    consent_reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    #: ``execute`` only reads (a review): nothing in the outside system changes, so no second person is asked
    #: to approve it, also in a protected environment
    read_only: bool = False
    #: the target is still moving (a run still going) so the same request may plan more a little later; a
    #: plan shown ahead of a press (a Slack button's count) is computed again until it settles
    settling: bool = False


class Outcome(_Model):
    """What ``execute`` did. ``details`` is what ``verify`` needs to compare before and after."""

    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    already_done: bool = False


class Verification(_Model):
    """The verdict of a verb's post-check. An action is succeeded only when ``ok`` is true."""

    ok: bool
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)


class Findings(_Model):
    """The result of a read-only check: a table of rows and a pass/fail against an expectation."""

    passed: bool
    summary: str
    expectation: str = ""
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)


class WatchAlert(_Model):
    """A problem a connector's periodic watch found (a failed task, a paused pipe), for the generic alert intake.

    ``key`` identifies the problem for deduplication (the same key while an incident is open counts on it);
    ``target`` is the key of the catalog target it concerns; ``alert_type`` routes it to runbooks (a runbook
    lists the alert types it applies to); ``details`` are shown on the incident and read by runbook templates.
    """

    key: str
    alert_type: str
    #: the incident severities (a connector cannot invent one the intake would refuse)
    severity: Literal["low", "medium", "high", "critical"]
    summary: str
    target: str
    details: dict[str, Any] = Field(default_factory=dict)


class HealthResult(_Model):
    ok: bool
    summary: str
    latency_ms: float | None = None


@dataclass(frozen=True)
class TargetRef:
    """The catalog target a verb or check acts on.

    ``locator`` identifies the object in the external system (for Postgres ``{"schema", "name"}``). It
    comes from the catalog, never from free text typed by a requester, and the connector still validates
    it and quotes every identifier it composes into SQL.
    """

    key: str
    kind: str
    locator: Mapping[str, Any]


class ExecutedHook(Protocol):
    def __call__(self, summary: str, details: Mapping[str, Any] | None = None) -> None: ...


def _no_executed(summary: str, details: Mapping[str, Any] | None = None) -> None:
    return None


@dataclass
class ExecutionContext:
    """What the runner hands to ``execute``: identity, logging, liveness and cancellation.

    ``action_id`` is the idempotency token: the connector tags its side effects with it (run ids, query
    tags, ledger rows) so that a re-delivered execution finds the effect already done instead of doing it
    twice. ``log`` streams a line to the action's log; ``heartbeat`` extends the lease during long waits;
    ``cancel_requested`` is polled by long operations; ``progress(done, total)`` reports how far a
    multi-part operation is (backfill runs finished out of runs planned). ``executed(summary, details)`` says
    the side effect is made (the clear accepted, the run triggered, the backfill created) before ``execute``
    goes on to wait for its result: the runner records that milestone then, while the outside system works,
    instead of after the wait (where it would delay the verdict); a verb that never calls it gets it recorded
    when ``execute`` returns. ``details`` names what now exists (ids, a link to it in the system's UI): from
    then on the runner owns it, and a failure of what follows ends the action ``needs_attention`` naming it
    (or retried, where the verb finds its own effect again) instead of ``failed`` with the target released.
    ``plan`` is the plan as it was shown (and approved) when the action was requested: a verb whose filter
    could match more by now (a clear) acts on what the plan lists, not on what the filter finds at execution.
    """

    action_id: str
    attempt: int = 1
    timeout_s: float = 600.0
    log: Callable[[str], None] = field(default=lambda _line: None)
    heartbeat: Callable[[], None] = field(default=lambda: None)
    cancel_requested: Callable[[], bool] = field(default=lambda: False)
    progress: Callable[[int, int], None] = field(default=lambda _done, _total: None)
    executed: ExecutedHook = field(default=_no_executed)
    plan: Plan | None = None


P = TypeVar("P", bound=BaseModel)
C = TypeVar("C", bound="Connector")


class Verb(ABC, Generic[C, P]):
    """A remediation verb offered by a connector (``refresh-mart``, ``clear``, ...).

    Subclasses declare the verb ``name``, its pydantic ``params_model`` (the schema bots and forms read),
    the ``target_kinds`` it applies to, and whether it is ``idempotent`` (safe for the reaper to re-queue
    after a lost worker, given the action id as idempotency token).
    """

    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]
    target_kinds: ClassVar[tuple[str, ...]]
    idempotent: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, connector: C) -> None:
        self.connector = connector

    @abstractmethod
    def plan(self, target: TargetRef, params: P) -> Plan:
        """Read-only: describe exactly what ``execute`` would touch. Must not change anything."""

    @abstractmethod
    def execute(self, target: TargetRef, params: P, ctx: ExecutionContext) -> Outcome:
        """Do the work once per ``ctx.action_id``; a repeat with the same id must not repeat the effect."""

    @abstractmethod
    def verify(self, target: TargetRef, params: P, outcome: Outcome) -> Verification:
        """Prove the effect: read the external system back and compare with what ``execute`` reported."""

    def recover(self, target: TargetRef, params: P, plan: Plan | None, action_id: str) -> str | None:
        """Called by the reaper when the worker running this action was lost (its lease expired), before the
        action is re-queued or marked ``needs_attention``: undo what ``execute`` changes only for its own
        duration (a warehouse scaled up for the action is scaled back). Idempotent; returns a line for the
        action's log, or None when there was nothing to undo. Most verbs have nothing to undo."""
        return None


class Check(ABC, Generic[C, P]):
    """A read-only diagnostic (freshness, blocking queries, row counts ...) returning ``Findings``."""

    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]
    target_kinds: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""

    def __init__(self, connector: C) -> None:
        self.connector = connector

    @abstractmethod
    def run(self, target: TargetRef, params: P) -> Findings:
        """Run the check; never change the external system."""


class Connector(ABC):
    """One external system kind. Subclasses set ``kind``, ``config_model``, ``secret_names``, ``verbs``
    and ``checks``; instances are cheap, built per use from a Connection's config and resolved secrets.
    """

    kind: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    secret_names: ClassVar[tuple[str, ...]] = ()
    verbs: ClassVar[tuple[type[Verb[Any, Any]], ...]] = ()
    checks: ClassVar[tuple[type[Check[Any, Any]], ...]] = ()
    target_kinds: ClassVar[tuple[str, ...]] = ()
    #: per target kind, the pydantic model of its locator (checked by ``validate_locator``)
    locator_models: ClassVar[Mapping[str, type[BaseModel]]] = {}

    def __init__(self, config: BaseModel, secrets: Mapping[str, str]) -> None:
        self.config = config
        self.secrets = dict(secrets)

    @classmethod
    def validate_config(cls, raw: Mapping[str, Any]) -> BaseModel:
        """Validate a non-secret config mapping; raises pydantic.ValidationError with field messages."""
        return cls.config_model.model_validate(dict(raw))

    @classmethod
    def validate_locator(cls, kind: str, locator: Mapping[str, Any]) -> None:
        """Raise ValueError if ``locator`` cannot identify a ``kind`` target in this system: the kind is not
        offered, or the locator does not fit ``locator_models[kind]`` (the catalog calls it before saving)."""
        if cls.target_kinds and kind not in cls.target_kinds:
            raise ValueError(f"{cls.kind} offers target kinds {list(cls.target_kinds)}, not {kind!r}")
        model = cls.locator_models.get(kind)
        if model is not None:
            try:
                model.model_validate(dict(locator))
            except ValidationError as exc:
                raise ValueError(f"invalid {kind} locator: {_problems(exc, kind)}") from None

    @classmethod
    def verb_class(cls, name: str) -> type[Verb[Any, Any]] | None:
        return next((v for v in cls.verbs if v.name == name), None)

    @classmethod
    def check_class(cls, name: str) -> type[Check[Any, Any]] | None:
        return next((c for c in cls.checks if c.name == name), None)

    def verb(self, name: str) -> Verb[Any, Any]:
        verb_cls = self.verb_class(name)
        if verb_cls is None:
            raise ConnectorError(f"{self.kind} connector has no verb {name!r}")
        return verb_cls(self)

    def check(self, name: str) -> Check[Any, Any]:
        check_cls = self.check_class(name)
        if check_cls is None:
            raise ConnectorError(f"{self.kind} connector has no check {name!r}")
        return check_cls(self)

    @abstractmethod
    def health(self) -> HealthResult:
        """Cheap round trip proving the config and secrets work (with a short timeout)."""

    def logs(self, target: TargetRef, ref: Mapping[str, Any], *, lines: int = 40) -> str:
        """The last ``lines`` lines of the log an alert points at (``ref`` is system-specific, e.g. Airflow's
        ``dag_run_id``, ``task_id``, ``try_number``). Connectors whose systems keep logs override this."""
        raise ConnectorError(f"{self.kind} connector cannot read logs")

    def alerts(self, targets: list[TargetRef]) -> list[WatchAlert]:
        """The problems on ``targets`` (this connection's catalog targets) that should open incidents: a beat
        task calls it periodically for connectors that override it and feeds each to the alert intake, which
        deduplicates by ``WatchAlert.key``. Read-only. Connectors without a watch return nothing."""
        return []

    def metadata(self, what: str, **filters: Any) -> list[dict[str, Any]]:
        """Choices for pickers (views, DAGs, tasks ...): rows with at least ``value`` and ``label``. A params
        field names the list it picks from with ``json_schema_extra={"x-choices": what}``; the filters are
        the target's locator. Connectors override for what they can list."""
        raise ConnectorError(f"{self.kind} connector cannot list {what!r}")


def _problems(exc: ValidationError, default: str) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or default}: {e['msg']}" for e in exc.errors())


def parse_locator(models: Mapping[str, type[BaseModel]], target: TargetRef, allowed_kinds: tuple[str, ...]) -> Any:
    """``target``'s locator as its kind's model, for an operation accepting ``allowed_kinds``; a permanent
    ConnectorError naming the problem otherwise."""
    if target.kind not in allowed_kinds:
        raise ConnectorError(
            f"target {target.key!r} is a {target.kind!r}; this operation needs a {' or '.join(allowed_kinds)}"
        )
    try:
        return models[target.kind].model_validate(dict(target.locator))
    except ValidationError as exc:
        problems = _problems(exc, "locator")
        raise ConnectorError(f"target {target.key!r} has an invalid {target.kind} locator: {problems}") from None
