"""The 003 runbooks' quarantine steps are executable: the loader accepts them against the registered quarantine
connector (check and verb names and their parameters), and a loaded runbook's check steps run against
demo-shaped data on local disk and show what they found."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.quarantine import QuarantineConnector
from controlplane.audit.context import Channel, change_context
from controlplane.catalog import services as catalog
from controlplane.catalog.models import Environment, Target
from controlplane.quarantine import services as quarantine_services
from runbooks import services
from runbooks.loader import LIBRARY, parse_file, parse_text
from runbooks.models import StepRun
from runbooks.schema import ActionStep, CheckStep
from sandbox.quarantine import TABLES, review_week_end, spike_days
from sandbox.quarantine import main as generate

QUARANTINE_RUNBOOKS = ("003-base-silver-failure", "003-quarantine-high-rate", "003-quarantine-weekly-review")
# the steps that waited for the quarantine connector before it existed (and the seed's names they used)
WAITED = {
    "003-base-silver-failure": {"quarantine_table", "silver_report", "quarantine_reasons", "after_report"},
    "003-quarantine-high-rate": {"quarantine_size", "quarantine_rate", "inspect_records", "identify_pattern"}
    | {"verify_reduced"},
    "003-quarantine-weekly-review": {"report", "top_reasons", "metrics", "inspect_records", "release_manual_fix"}
    | {"release_verify"},
}
NEW_REASON = "Cannot cast amount from VARCHAR to DECIMAL"


def test_the_quarantine_steps_are_executable_on_quarantine_targets() -> None:
    assert sum(len(ids) for ids in WAITED.values()) == 15
    for name in QUARANTINE_RUNBOOKS:
        parsed = parse_file(LIBRARY / f"{name}.yaml")
        assert parsed.problems == [], [str(p) for p in parsed.problems]
        runbook = parsed.runbook
        assert runbook is not None
        kinds = {p.name: p.target_kinds for p in runbook.parameters if p.type == "target"}
        for step in runbook.steps:
            if step.id not in WAITED[name]:
                continue
            assert isinstance(step, CheckStep | ActionStep) and step.waits_for is None, f"{name} {step.id}"
            spec: Any = (
                QuarantineConnector.check_class(step.check)
                if isinstance(step, CheckStep)
                else QuarantineConnector.verb_class(step.verb)
            )
            assert spec is not None, f"{name} {step.id}: not a quarantine check or verb"
            param = step.target.strip("{} ").removeprefix("params.")
            assert set(kinds[param]) <= set(spec.target_kinds), f"{name} {step.id}: {kinds[param]}"
            assert set(step.params) <= set(spec.params_model.model_fields), f"{name} {step.id}: {step.params}"


def test_the_loader_refuses_a_parameter_the_check_or_verb_does_not_take() -> None:
    text = """\
id: 000-demo
title: Demo
version: 1
parameters:
  - {name: table, type: target, target_kinds: [quarantine_table]}
steps:
  - id: rate
    kind: check
    title: Rate
    target: "{{ params.table }}"
    check: quarantine_rate
    params:
      days: 7
      env: prod
  - id: release
    kind: action
    title: Release
    target: "{{ params.table }}"
    verb: quarantine-release
    params:
      ingest_dt: "2025-01-15"
"""
    problems = [str(p) for p in parse_text(text, "000-demo.yaml").problems]
    assert len(problems) == 2, problems
    assert "000-demo.yaml:14: the check 'quarantine_rate' takes no parameter 'env'" in problems[0]
    assert "000-demo.yaml:21: the verb 'quarantine-release' takes no parameter 'ingest_dt'" in problems[1]


@pytest.fixture
def demo_source(db: Any, tmp_path: Path) -> dict[str, str]:
    """The demo's development dataset (35 days ending yesterday) on local disk, as a catalog source with a
    target per table, and the 003 runbooks loaded."""
    root = tmp_path / "silver" / "base"
    assert generate(["demo", "--root", str(root)]) == 0
    with change_context(channel=Channel.SYSTEM, actor_name="test"):
        services.runbooks_load(parsed=[parse_file(LIBRARY / f"{name}.yaml") for name in QUARANTINE_RUNBOOKS])
        env = Environment.objects.filter(name="prod").first() or catalog.environment_create(name="prod", protected=True)
        conn = catalog.connection_create(
            name="quarantine-prod", kind="quarantine", environment=env, config={"root": str(root), "threshold_pct": 5}
        )
        catalog.target_create(key="prod.quarantine.silver_base", kind="quarantine", connection=conn, locator={})
        for table in TABLES:
            catalog.target_create(
                key=f"prod.quarantine.{table}", kind="quarantine_table", connection=conn, locator={"table": table}
            )
    return {"source": "prod.quarantine.silver_base", "orders": "prod.quarantine.orders"}


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]


def test_weekly_review_checks_find_the_new_reason_and_the_days_over_ten_percent(
    demo_source: dict[str, str], actors: dict[str, Any]
) -> None:
    rita = actors["responder"]
    end = datetime.now(UTC).date() - timedelta(days=1)
    week_end = review_week_end(end)
    with change_context(channel=Channel.WEB, user=rita):
        run = services.run_start(
            actor=rita,
            runbook="003-quarantine-weekly-review",
            params={"source": demo_source["source"], "table": demo_source["orders"], "week_end": week_end.isoformat()},
        )
        services.run_advance(run_id=run.pk)
        assert StepRun.objects.get(run=run, step_id="report").state == "waiting"  # the review action: a person
        services.step_skip(actor=rita, run_id=run.pk, step_id="report", reason="the review exists already")
    services.run_advance(run_id=run.pk)
    done = {r.step_id: r for r in StepRun.objects.filter(run=run, step_id__in=["top_reasons", "metrics", "storage"])}
    assert {r.state for r in done.values()} == {"done"}, {k: (r.state, r.error) for k, r in done.items()}

    reasons = done["top_reasons"].result
    assert reasons["check"] == "quarantine_reasons" and reasons["passed"] is False  # a new reason
    new = [r for r in rows_of(reasons) if r.get("new")]
    assert [r["reason"] for r in new] == [NEW_REASON]

    metrics = done["metrics"].result
    assert metrics["passed"] is False
    over = {(r["table"], str(r["date"])) for r in rows_of(metrics) if r["over"]}
    assert {("orders", d.isoformat()) for d in spike_days(end)} <= over
    assert all(r["rate"] > 5 for r in rows_of(metrics) if r["over"])

    assert done["storage"].result["passed"] is True  # far below 1 TB
    records = StepRun.objects.get(run=run, step_id="inspect_records")
    assert records.state == "done" and records.result["passed"] is True and records.result["rows"]
    run.refresh_from_db()
    assert run.state == "waiting" and StepRun.objects.get(run=run, step_id="decision").state == "waiting"


def test_high_rate_runbook_takes_source_table_and_day_from_a_quarantine_incident(
    demo_source: dict[str, str], actors: dict[str, Any]
) -> None:
    """The incident is one the breach rule opens (the generic intake keeps the sender's fields under
    ``details.details``): the runbook started on it takes the source, table and day from there."""
    rita = actors["responder"]
    source = Target.objects.get(key=demo_source["source"])
    opened = quarantine_services.breaches_open_incidents(target=source)
    incident = next(
        i
        for i in opened
        if i.details["details"].get("kind") == "breach" and i.details["details"].get("table") == "orders"
    )
    day = date.fromisoformat(incident.details["details"]["date"])
    with change_context(channel=Channel.WEB, user=rita):
        run = services.run_start(actor=rita, runbook="003-quarantine-high-rate", params={}, incident=incident)
    assert (run.params["source"], run.params["table"], run.params["ingest_dt"]) == (
        demo_source["source"],
        demo_source["orders"],
        day.isoformat(),
    )
    services.run_advance(run_id=run.pk)
    rows = {r.step_id: r for r in StepRun.objects.filter(run=run)}
    assert rows["silver_dag_failure"].state == "skipped"  # no DAG
    for step_id, check in (
        ("quarantine_size", "quarantine_storage"),
        ("quarantine_rate", "quarantine_rate"),
        ("inspect_records", "quarantine_records"),
        ("identify_pattern", "quarantine_reasons"),
    ):
        assert rows[step_id].state == "done", (step_id, rows[step_id].error)
        assert rows[step_id].result["check"] == check
    rates = rows_of(rows["quarantine_rate"].result)
    assert {r["table"] for r in rates} == {"orders"} and len(rates) == 7
    records = rows["inspect_records"].result
    assert f"{day.isoformat()} to {day.isoformat()}" in records["summary"]  # the incident's day only
    sample = rows_of(records)
    assert sample and records["columns"][0] == "order_id"  # key columns first
    # quarantined early the next morning (sandbox/quarantine.py), so from that day's partition
    assert {str(r["timestamp"])[:10] for r in sample} == {(day + timedelta(days=1)).isoformat()}
    assert rows["pattern"].state == "waiting"  # a person reads the reasons and picks the pattern
