"""``cptest``: a small connector plugin of the tests' own, for the control plane's side of the connector contract.

It is not a stand-in for an outside system: its "system" is a folder (``config.state_dir``) that the test
writes and reads, so the worker processes and the test share it. What it does:

- verb ``rerun`` on a ``job`` target: its plan carries the ``estimated_bytes`` / ``estimated_cost_usd`` the params
  ask for (the approval threshold on cost is tested on them); ``execute`` writes ``started`` and, with
  ``hold_s``, keeps running that long (a worker is killed under it); ``recover`` appends its call to
  ``recovered.jsonl`` and answers a log line, or raises ``recover_error`` (``{token}`` in it replaced by the
  connection's secret ``token``, as a careless connector might) when the params carry one;
- ``alerts``: records the targets it was asked about in ``watched.jsonl`` and reports the problems listed in
  ``alerts.json`` (a list of ``WatchAlert`` fields, as written: also one on a target it was not asked about);
  a file ``down`` makes it fail with the ConnectorError written in it.

``register`` puts it in the ``controlplane.connectors`` entry-point group the way an installed package would
(a ``.dist-info`` folder on ``sys.path``; worker processes get the folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from connectors.base import (
    Connector,
    ConnectorError,
    ExecutionContext,
    HealthResult,
    Outcome,
    Plan,
    TargetRef,
    Verb,
    Verification,
    WatchAlert,
)

KIND = "cptest"


class CpTestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state_dir: str


class JobLocator(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class RerunParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    estimated_bytes: int | None = Field(default=None, ge=0)
    estimated_cost_usd: float | None = Field(default=None, ge=0)
    hold_s: float = Field(default=0.0, ge=0, le=120)
    recover_error: str = ""


class Rerun(Verb["CpTestConnector", RerunParams]):
    name = "rerun"
    params_model = RerunParams
    target_kinds = ("job",)
    description = "Run the job again (test plugin)."

    def plan(self, target: TargetRef, params: RerunParams) -> Plan:
        return Plan(
            summary=f"rerun job {target.locator['name']}",
            estimated_bytes=params.estimated_bytes,
            estimated_cost_usd=params.estimated_cost_usd,
            details={"warehouse": {"name": "TEST_WH", "size": "XSMALL"}},
        )

    def execute(self, target: TargetRef, params: RerunParams, ctx: ExecutionContext) -> Outcome:
        self.connector.record("started.jsonl", {"action_id": ctx.action_id, "attempt": ctx.attempt})
        ctx.log(f"running job {target.locator['name']}")
        deadline = time.monotonic() + params.hold_s
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return Outcome(summary=f"job {target.locator['name']} ran")

    def verify(self, target: TargetRef, params: RerunParams, outcome: Outcome) -> Verification:
        return Verification(ok=True, summary=outcome.summary)

    def recover(self, target: TargetRef, params: RerunParams, plan: Plan | None, action_id: str) -> str | None:
        if params.recover_error:
            token = self.connector.secrets.get("token", "")
            raise ConnectorError(params.recover_error.replace("{token}", token), transient=True)
        warehouse = (plan.details.get("warehouse") if plan else None) or {}
        self.connector.record(
            "recovered.jsonl",
            {
                "action_id": action_id,
                "target": target.key,
                "kind": target.kind,
                "locator": dict(target.locator),
                "params": params.model_dump(mode="json"),
                "plan_warehouse": warehouse,
            },
        )
        return f"restored warehouse {warehouse.get('name')} to {warehouse.get('size')}"


class CpTestConnector(Connector):
    kind = KIND
    config_model = CpTestConfig
    secret_names = ("token",)
    verbs = (Rerun,)
    target_kinds = ("job",)
    locator_models: ClassVar[Mapping[str, type[BaseModel]]] = {"job": JobLocator}

    @property
    def state_dir(self) -> Path:
        return Path(self.config.state_dir)  # type: ignore[attr-defined]

    def record(self, name: str, row: dict[str, Any]) -> None:
        with (self.state_dir / name).open("a") as out:
            out.write(json.dumps(row) + "\n")

    def health(self) -> HealthResult:
        return HealthResult(ok=True, summary="test plugin")

    def alerts(self, targets: list[TargetRef]) -> list[WatchAlert]:
        down = self.state_dir / "down"
        if down.exists():
            raise ConnectorError(down.read_text().strip() or "cptest is down", transient=True)
        listed = self.state_dir / "alerts.json"
        keys = {t.key for t in targets}
        self.record("watched.jsonl", {"targets": sorted(keys)})
        rows = json.loads(listed.read_text()) if listed.exists() else []
        return [WatchAlert.model_validate(row) for row in rows]


def records(state_dir: Path, name: str) -> list[dict[str, Any]]:
    """The rows the plugin appended to ``name`` in ``state_dir`` (none yet: an empty list)."""
    path = state_dir / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@contextmanager
def register(root: Path) -> Iterator[Path]:
    """Install the plugin's entry point for this process (and, through ``PYTHONPATH=root``, for workers):
    the registry finds it as it finds any installed connector package."""
    from connectors.registry import connector_classes

    info = root / "cp_test_plugin-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cp-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[controlplane.connectors]\n{KIND} = {__name__}:CpTestConnector\n")
    sys.path.insert(0, str(root))
    connector_classes.cache_clear()
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        connector_classes.cache_clear()
