"""The 002 runbooks' BigQuery steps are executable: the loader accepts them against the registered BigQuery
connector (check and verb names, parameters, target kinds; the two the connector cannot do, IAM bindings and a
load from a GCS backup file, are manual steps now), and 002-dq-nulls-duplicates-orphans run on the demo's
catalog finds the seed-002 packages with a null id, the duplicated ids and the orphaned senders on the BigQuery
emulator."""

from __future__ import annotations

import os
from typing import Any

import pytest

from connectors.bigquery import BigQueryConnector
from controlplane.audit.context import Channel, change_context
from controlplane.catalog.management.commands.seed_demo import SeedReport, seed_bigquery
from runbooks import services
from runbooks.loader import LIBRARY, library_files, parse_file
from runbooks.models import StepRun
from runbooks.schema import ActionStep, CheckStep, ManualStep
from sandbox.bigquery.seed import seed as seed_002

RUNBOOKS_002 = sorted(p.stem for p in library_files() if p.name.startswith("002-"))
# the nine steps that waited for the BigQuery connector (version 1) and what they are now
EXECUTABLE = {
    "002-data-not-loading": {"stale"},
    "002-disaster-recovery": {"time_travel"},
    "002-dq-nulls-duplicates-orphans": {"find_nulls", "find_duplicates", "find_orphans"},
    "002-morning-checklist": {"freshness"},
    "002-weekly-maintenance": {"slot_usage"},
}
BY_HAND = {"002-data-not-loading": {"permissions"}, "002-disaster-recovery": {"restore"}}
PACKAGES = "dev.bigquery.raw_packages"


def test_the_002_bigquery_steps_run_the_connectors_checks_and_verbs() -> None:
    assert sum(map(len, EXECUTABLE.values())) + sum(map(len, BY_HAND.values())) == 9
    for name in RUNBOOKS_002:
        parsed = parse_file(LIBRARY / f"{name}.yaml")
        assert parsed.problems == [], [str(p) for p in parsed.problems]
        runbook = parsed.runbook
        assert runbook is not None
        assert not [s.id for s in runbook.steps if getattr(s, "waits_for", None) == "bigquery"], name
        kinds = {p.name: p.target_kinds for p in runbook.parameters if p.type == "target"}
        steps = {s.id: s for s in runbook.steps}
        for step_id in EXECUTABLE.get(name, set()):
            step = steps[step_id]
            assert isinstance(step, CheckStep | ActionStep) and step.waits_for is None, f"{name} {step_id}"
            spec: Any = (
                BigQueryConnector.check_class(step.check)
                if isinstance(step, CheckStep)
                else BigQueryConnector.verb_class(step.verb)
            )
            assert spec is not None, f"{name} {step_id}: not a BigQuery check or verb"
            param = step.target.strip("{} ").removeprefix("params.")
            assert kinds[param] and set(kinds[param]) <= set(spec.target_kinds), f"{name} {step_id}: {kinds[param]}"
            assert set(step.params) <= set(spec.params_model.model_fields), f"{name} {step_id}: {step.params}"
        for step_id in BY_HAND.get(name, set()):
            assert isinstance(steps[step_id], ManualStep), f"{name} {step_id}"


@pytest.fixture
def seeded(db: Any) -> None:
    """The seed-002 datasets on the emulator (created where missing), the demo's BigQuery catalog, the 002
    runbooks loaded."""
    url = os.environ.get("SANDBOX_BIGQUERY_URL")
    project = os.environ.get("SANDBOX_BIGQUERY_PROJECT")
    if not url or not project:
        pytest.fail("SANDBOX_BIGQUERY_URL/PROJECT are not set: start the sandbox (python -m sandbox.services start)")
    seed_002(url, project)
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        seed_bigquery(SeedReport(), url=url, project=project)
        services.runbooks_load(parsed=[parse_file(LIBRARY / f"{name}.yaml") for name in RUNBOOKS_002])


def _first_column(result: dict[str, Any]) -> list[Any]:
    return [row[0] for row in result["rows"]]


@pytest.mark.parametrize(
    ("issue", "step_id", "check", "found"),
    [
        ("unexpected nulls", "find_nulls", "nulls", None),
        ("duplicate records", "find_duplicates", "duplicates", ["P003", "P005"]),
        ("referential integrity violations", "find_orphans", "orphans", ["P007", "P008"]),
    ],
)
def test_dq_runbook_finds_the_seeds_bad_packages(
    seeded: None, actors: dict[str, Any], issue: str, step_id: str, check: str, found: list[str] | None
) -> None:
    rita = actors["responder"]
    with change_context(channel=Channel.WEB, user=rita):
        run = services.run_start(
            actor=rita, runbook="002-dq-nulls-duplicates-orphans", params={"issue": issue, "table": PACKAGES}
        )
    services.run_advance(run_id=run.pk)
    rows = {r.step_id: r for r in StepRun.objects.filter(run=run)}
    done = rows[step_id]
    assert done.state == "done", done.error
    result = done.result
    assert result["check"] == check and result["passed"] is False, result
    if found is None:  # the rows with a null package_id
        assert len(result["rows"]) == 2, result
    elif check == "duplicates":
        assert sorted(_first_column(result)) == found
    else:  # orphans: the packages (the key column first) whose sender is not a customer
        assert result["columns"] == ["package_id", "sender_customer_id"]
        assert sorted(_first_column(result)) == found
    earlier = ["find_nulls", "find_duplicates", "find_orphans"][: ["nulls", "duplicates", "orphans"].index(check)]
    assert {rows[o].state for o in earlier} <= {"skipped"}  # the other issues' checks do not run
