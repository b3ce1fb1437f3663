"""Runbook files: every library file loads; a broken one is named by path, line and reason, and nothing loads."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from runbooks.loader import LIBRARY, library_files, parse_file, parse_text
from runbooks.models import Runbook, RunbookVersion

REHYDRATE = LIBRARY / "004-rehydrate-mart.yaml"

MINIMAL = """\
id: 000-demo
title: Demo
version: 1
steps:
  - id: first
    kind: manual
    title: Do the thing
"""


def test_every_library_file_is_valid_and_named_by_its_id() -> None:
    files = library_files()
    problems = [str(problem) for path in files for problem in parse_file(path).problems]
    assert problems == []
    ids = {parse_file(path).runbook.id for path in files}  # type: ignore[union-attr]
    assert {path.stem for path in files} == ids


# The procedures of the seed runbooks, as the inventory (shared/RUNBOOKS.md) lists them.
INVENTORY = [
    "000-onboard-source",
    "000-ingestion-dag-failure",
    "000-transformation-dag-failure",
    "000-dq-test-failure",
    "000-backfill-dbt-models",
    "000-backfill-ingestion",
    "000-deploy-and-rollback",
    "000-pipeline-not-running",
    "000-dq-investigation",
    "000-production-incident",
    "001-new-environment",
    "001-start-stop-pipeline",
    "001-pipeline-status",
    "001-snowpipe-failure",
    "001-transformation-task-failure",
    "001-dq-check-failure",
    "001-scd2-dimension-failure",
    "001-rerun-failed-airflow-tasks",
    "001-backfill-raw",
    "001-backfill-facts",
    "001-scale-warehouse",
    "001-freshness-alert",
    "002-morning-checklist",
    "002-weekly-maintenance",
    "002-rerun-failed-dag",
    "002-backfill",
    "002-dag-stuck-running",
    "002-data-not-loading",
    "002-dq-nulls-duplicates-orphans",
    "002-disaster-recovery",
    "003-bronze-ingestion-failure",
    "003-dimension-snapshot-failure",
    "003-base-silver-failure",
    "003-enriched-validation-failure",
    "003-quarantine-high-rate",
    "003-quarantine-weekly-review",
    "003-airflow-dag-failure",
    "003-staging-publish-check",
    "004-rerun-failed-flow",
    "004-http-timeout",
    "004-malformed-json",
    "004-lock-contention",
    "004-dq-checkpoint-failure",
    "004-rerun-window",
    "004-rehydrate-mart",
    "004-add-location",
]


def test_the_library_has_one_runbook_per_procedure_of_the_inventory() -> None:
    have = {path.stem for path in library_files()}
    assert sorted(set(INVENTORY) - have) == []
    assert sorted(have - set(INVENTORY)) == []


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (MINIMAL.replace("kind: manual", "kind: magic"), 5, "steps.0: Input tag 'magic'"),
        (MINIMAL + "  - id: first\n    kind: manual\n    title: again\n", 5, "two steps have the id 'first'"),
        (MINIMAL.replace("version: 1", "version: zero"), 3, "version"),
        (MINIMAL + '    when: "steps.later.done"\n', 8, "steps.later is not an earlier step"),
        (MINIMAL + '    instructions: "{{ params.nope }}"\n', 8, "params.nope is not a declared parameter"),
        (MINIMAL + '    instructions: "{{ broken"\n', 8, "does not compile"),
        ("id: 000-demo\ntitle: [unclosed\n", 3, "not valid YAML"),
    ],
)
def test_a_broken_runbook_is_reported_with_its_line_and_reason(text: str, line: int, reason: str) -> None:
    parsed = parse_text(text, "runbooks/library/000-demo.yaml")
    assert parsed.runbook is None
    assert any(p.line == line and reason in p.reason for p in parsed.problems), [str(p) for p in parsed.problems]


def test_an_unknown_verb_needs_waits_for_and_waits_for_cannot_name_a_built_connector() -> None:
    action = MINIMAL + "  - id: fix\n    kind: action\n    title: Fix\n    target: t\n    verb: launch-rockets\n"
    problems = [p.reason for p in parse_text(action, "000-demo.yaml").problems]
    assert any("no connector offers the verb 'launch-rockets'" in p for p in problems)
    assert parse_text(action + "    waits_for: rockets\n", "000-demo.yaml").problems == []
    built = parse_text(action.replace("launch-rockets", "clear") + "    waits_for: airflow\n", "000-demo.yaml")
    assert any("the airflow connector exists" in p.reason for p in built.problems)


@pytest.mark.django_db
def test_load_command_loads_nothing_when_one_file_is_broken(tmp_path: Path) -> None:
    (tmp_path / "000-demo.yaml").write_text(MINIMAL)
    broken = MINIMAL.replace("000-demo", "000-broken").replace("kind: manual", "kind: x")
    (tmp_path / "000-broken.yaml").write_text(broken)
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing loaded"):
        call_command("load_runbooks", str(tmp_path), stderr=err)
    assert "000-broken.yaml:5: steps.0: Input tag 'x'" in err.getvalue()
    assert Runbook.objects.count() == 0


@pytest.mark.django_db
def test_versions_are_kept_and_a_changed_file_must_raise_its_version(tmp_path: Path) -> None:
    path = tmp_path / "000-demo.yaml"
    path.write_text(MINIMAL)
    call_command("load_runbooks", str(path), stdout=io.StringIO())
    call_command("load_runbooks", str(path), stdout=io.StringIO())  # unchanged: nothing new
    assert RunbookVersion.objects.filter(runbook__slug="000-demo").count() == 1
    path.write_text(MINIMAL.replace("Do the thing", "Do the other thing"))
    with pytest.raises(Exception, match="raise 'version' to 2"):
        call_command("load_runbooks", str(path), stdout=io.StringIO())
    path.write_text(MINIMAL.replace("Do the thing", "Do the other thing").replace("version: 1", "version: 2"))
    out = io.StringIO()
    call_command("load_runbooks", str(path), stdout=out)
    assert "loaded 000-demo v2" in out.getvalue()
    runbook = Runbook.objects.get(slug="000-demo")
    assert runbook.latest is not None and runbook.latest.version == 2
    assert sorted(runbook.versions.values_list("version", flat=True)) == [1, 2]


def test_check_mode_needs_no_database(capsys: Any) -> None:
    call_command("load_runbooks", str(REHYDRATE), "--check")
    assert "1 runbook file(s) valid" in capsys.readouterr().out
