"""The Snowflake connector's task, procedure and warehouse checks and verbs against the emulator, with
re-delivery: the second execute with the same action id must not repeat the effect (with a real kill of the
first worker: test_snowflake_redelivery.py)."""
# ruff: noqa: F811  (the fixtures are imported from sf_support, then requested by name)

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from connectors.base import ConnectorError, TargetRef
from connectors.registry import connector_classes
from connectors.snowflake import SnowflakeConnector
from tests.connectors.sf_support import (  # noqa: F401 (fixtures)
    Sql,
    connector,
    ctx,
    db,
    hook,
    make_connector,
    run_verb,
    sf_url,
    sql,
    tagged,
)


class _Ids(dict[str, str]):
    """A fresh action id per name and test run: ids are never reused across runs (the emulator keeps history)."""

    def __missing__(self, key: str) -> str:
        self[key] = f"{key}-{uuid.uuid4().hex[:12]}"
        return self[key]


AID = _Ids()


def _graph(sql: Sql, db: str) -> tuple[TargetRef, TargetRef]:
    """A two-task graph ROOT -> CHILD logging into a table; both suspended (as created)."""
    sql(f"CREATE SCHEMA {db}.TASKS")
    sql(f"CREATE TABLE {db}.TASKS.LOG (WHO VARCHAR)")
    sql(f"CREATE TASK {db}.TASKS.ROOT SCHEDULE = '60 MINUTE' AS INSERT INTO {db}.TASKS.LOG VALUES ('root')")
    sql(f"CREATE TASK {db}.TASKS.CHILD AFTER {db}.TASKS.ROOT AS INSERT INTO {db}.TASKS.LOG VALUES ('child')")
    root = TargetRef("sf.root", "task", {"database": db, "schema": "TASKS", "name": "ROOT"})
    child = TargetRef("sf.child", "task", {"database": db, "schema": "tasks", "name": "child"})
    return root, child


def _log(sql: Sql, db: str) -> dict[str, int]:
    return {r["who"]: int(r["n"]) for r in sql(f"SELECT WHO, COUNT(*) AS N FROM {db}.TASKS.LOG GROUP BY 1")}


# ------------------------------------------------------------------------------------------ plumbing


def test_registered_by_entry_point_with_the_contract_names() -> None:
    cls = connector_classes()["snowflake"]
    assert cls is SnowflakeConnector
    assert {c.name for c in cls.checks} == {
        "pipe_status", "pipe_usage_history", "copy_history", "task_history", "task_status", "stream_has_data",
        "warehouse_status", "hours_since_last_load", "row_counts_by_day", "scd2_overlaps", "invalid_records",
        "databases_exist",
    }  # fmt: skip
    assert {v.name for v in cls.verbs} == {
        "resume-task", "pause", "rerun", "backfill", "scale-warehouse", "clone-environment"
    }  # fmt: skip


@pytest.mark.parametrize(
    "kind,locator",
    [
        ("task", {"database": "DB", "schema": "S", "name": "T; DROP TABLE X"}),
        ("table", {"database": "DB", "schema": "S", "name": "T", "stage": "ONLY_ONE_PART"}),
        ("table", {"database": "DB", "schema": "S", "name": "T", "timestamp_column": "a b"}),
        ("environment", {"databases": ["DEV_RAW", "QA_DW"]}),
        ("warehouse", {"name": "1WH"}),
    ],
)
def test_invalid_locators_are_refused(kind: str, locator: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SnowflakeConnector.validate_locator(kind, locator)


def test_health_is_a_version_round_trip(connector: SnowflakeConnector) -> None:
    result = connector.health()
    assert result.ok, result.summary
    assert result.latency_ms is not None


def test_unreachable_snowflake_is_a_transient_error_within_the_login_timeout(
    make_connector: Callable[..., SnowflakeConnector],
) -> None:
    broken = make_connector(port=1, login_timeout_s=2, network_timeout_s=2, socket_timeout_s=2)
    assert not broken.health().ok
    with pytest.raises(ConnectorError) as err, broken.session("probing"):
        pass
    assert err.value.transient


def test_missing_object_is_a_permanent_error_naming_the_locator(
    connector: SnowflakeConnector, sql: Sql, db: str
) -> None:
    sql(f"CREATE SCHEMA {db}.TASKS")
    target = TargetRef("sf.none", "task", {"database": db, "schema": "TASKS", "name": "NOPE"})
    with pytest.raises(ConnectorError) as err:
        connector.check("task_status").run(target, connector.check("task_status").params_model())
    assert not err.value.transient
    assert f"{db}.TASKS.NOPE does not exist" in err.value.message


# --------------------------------------------------------------------------------------- task checks


def test_task_status_fails_while_the_graph_is_suspended(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    _, child = _graph(sql, db)
    check = connector.check("task_status")
    found = check.run(child, check.params_model())
    assert not found.passed
    assert [r[0] for r in found.rows] == ["ROOT", "CHILD"]
    assert "2 suspended" in found.summary


def test_resume_task_resumes_children_before_root_once(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    _, child = _graph(sql, db)
    plan, first, again = run_verb(connector, "resume-task", child, AID["act-resume-1"])
    assert [s["params"][0] for s in plan.details["steps"]] == [f"{db}.TASKS.CHILD", f"{db}.TASKS.ROOT"]
    assert plan.details["mode"] == "resume"
    assert not first.already_done and again.already_done
    assert len(tagged(sql, db, AID["act-resume-1"], "ALTER TASK%RESUME")) == 2  # one per task, not four
    verify = connector.verb("resume-task").verify(child, connector.verb("resume-task").params_model(), first)
    assert verify.ok, verify.summary
    check = connector.check("task_status")
    assert check.run(child, check.params_model()).passed


def test_rerun_executes_the_graph_once_and_waits_for_it(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    root, _ = _graph(sql, db)
    plan, first, again = run_verb(connector, "rerun", root, AID["act-rerun-1"])
    assert first.details["run_states"] == {"ROOT": "SUCCEEDED"}  # the suspended child does not run
    assert any("do not run: CHILD" in w for w in plan.warnings)
    assert again.already_done
    assert _log(sql, db) == {"root": 1}  # one run, not two
    verb = connector.verb("rerun")
    assert verb.verify(root, verb.params_model(), first).ok


def test_failed_graph_history_alert_and_retry_last(
    connector: SnowflakeConnector, sql: Sql, db: str, hook: Callable[[str, dict[str, Any]], Any]
) -> None:
    root, child = _graph(sql, db)
    run_verb(connector, "resume-task", root, AID["act-resume-3"])
    hook("tasks/fail-next", {"task": f"{db}.TASKS.CHILD", "times": 1, "error": "Numeric value 'x' is not recognized"})
    run_verb(connector, "rerun", root, AID["act-rerun-fail"])
    history = connector.check("task_history").run(child, connector.check("task_history").params_model(hours=1))
    assert not history.passed
    assert "Numeric value 'x' is not recognized" in history.summary
    alerts = connector.alerts([child, root])
    assert [a.alert_type for a in alerts] == ["snowflake.task_failed"]
    assert alerts[0].details["task"] == f"{db}.TASKS.CHILD"
    assert "not recognized" in alerts[0].details["error"]
    assert connector.alerts([child])[0].key == alerts[0].key  # stable while nothing changes

    plan, first, again = run_verb(connector, "resume-task", root, AID["act-retry-1"])
    assert plan.details["mode"] == "retry_last"
    assert first.details["run_states"] == {"CHILD": "SUCCEEDED"}  # only the failed task ran again
    assert again.already_done
    assert _log(sql, db) == {"root": 1, "child": 1}
    assert len(tagged(sql, db, AID["act-retry-1"], "%RETRY LAST%")) == 1
    verb = connector.verb("resume-task")
    assert verb.verify(root, verb.params_model(), first).ok
    assert connector.alerts([child]) == []


def test_auto_suspended_graph_says_so_in_the_plan(
    connector: SnowflakeConnector, sql: Sql, db: str, hook: Callable[[str, dict[str, Any]], Any]
) -> None:
    root, _ = _graph(sql, db)
    sql(f"ALTER TASK {db}.TASKS.ROOT SET SUSPEND_TASK_AFTER_NUM_FAILURES = 1")
    run_verb(connector, "resume-task", root, AID["act-resume-start"])
    hook("tasks/fail-next", {"task": f"{db}.TASKS.ROOT", "times": 1, "error": "boom"})
    hook("scheduler/run", {})
    connector.verb("rerun")  # nothing else: the scheduled run failed once and auto-suspended the root
    plan = connector.verb("resume-task").plan(root, connector.verb("resume-task").params_model())
    assert "FAILED_AND_AUTO_SUSPENDED" in plan.summary
    assert any("FAILED_AND_AUTO_SUSPENDED" in w for w in plan.warnings)
    alerts = connector.alerts([root])
    assert alerts and alerts[0].details["state"] == "FAILED_AND_AUTO_SUSPENDED"


def test_pause_suspends_the_root_first_once(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    root, child = _graph(sql, db)
    run_verb(connector, "resume-task", root, AID["act-resume-2"])
    plan, first, again = run_verb(connector, "pause", child, AID["act-pause-1"])
    assert [s["params"][0] for s in plan.details["steps"]] == [f"{db}.TASKS.ROOT", f"{db}.TASKS.CHILD"]
    assert not first.already_done and again.already_done
    assert len(tagged(sql, db, AID["act-pause-1"], "ALTER TASK%SUSPEND")) == 2
    verb = connector.verb("pause")
    assert verb.verify(child, verb.params_model(), first).ok
    # the first attempt cannot find anything of its own in the history, so it does not read it; the re-delivery
    # (attempt 2) does, once
    assert len(tagged(sql, db, AID["act-pause-1"], "%INFORMATION_SCHEMA.QUERY_HISTORY%")) == 1


# ------------------------------------------------------------------------------ procedures, warehouses


def _procedure(sql: Sql, db: str) -> TargetRef:
    sql(f"CREATE SCHEMA {db}.P")
    sql(f"CREATE TABLE {db}.P.CALLS (N INTEGER)")
    sql(
        f"CREATE PROCEDURE {db}.P.SP_LOAD() RETURNS VARCHAR LANGUAGE SQL AS $$ BEGIN "
        f"INSERT INTO {db}.P.CALLS VALUES (1); RETURN 'loaded'; END $$"
    )
    return TargetRef("sf.proc", "procedure", {"database": db, "schema": "P", "name": "SP_LOAD"})


def test_rerun_calls_a_procedure_once_on_a_scaled_warehouse_restored_after(
    make_connector: Callable[..., SnowflakeConnector], sql: Sql, db: str
) -> None:
    wh = f"WH_{db}"
    sql(f"CREATE WAREHOUSE {wh} WITH WAREHOUSE_SIZE = 'XSMALL'")
    try:
        connector = make_connector(warehouse=wh)
        proc = _procedure(sql, db)
        plan, first, again = run_verb(connector, "rerun", proc, AID["act-call-1"], warehouse_size="LARGE")
        assert plan.details["warehouse"] == {"name": wh, "size": "XSMALL", "scale_to": "LARGE"}
        assert first.details["returned"] == "loaded" and again.already_done
        assert sql(f"SELECT COUNT(*) AS N FROM {db}.P.CALLS")[0]["n"] == 1
        assert sql("SHOW WAREHOUSES LIKE %s", (wh,))[0]["size"] in ("X-Small", "XSMALL")
        # the worker died while scaled: recover restores the plan's size
        sql(f"ALTER WAREHOUSE {wh} SET WAREHOUSE_SIZE = 'LARGE'")
        params = connector.verb("rerun").params_model(warehouse_size="LARGE")
        line = connector.verb("rerun").recover(proc, params, plan, AID["act-call-1"])
        assert line is not None and "restored to XSMALL" in line
        assert sql("SHOW WAREHOUSES LIKE %s", (wh,))[0]["size"] in ("X-Small", "XSMALL")
        assert connector.verb("rerun").recover(proc, params, plan, AID["act-call-1"]) is None
    finally:
        sql(f"DROP WAREHOUSE IF EXISTS {wh}")


def test_scale_warehouse_and_status(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    wh = f"WH_{db}"
    sql(f"CREATE WAREHOUSE {wh} WITH WAREHOUSE_SIZE = 'XSMALL'")
    try:
        target = TargetRef("sf.wh", "warehouse", {"name": wh})
        plan, first, again = run_verb(
            connector, "scale-warehouse", target, AID["act-scale-1"], warehouse_size="X-Large"
        )
        assert plan.summary.endswith("XSMALL -> XLARGE")
        assert not first.already_done and again.already_done
        assert len(tagged(sql, db, AID["act-scale-1"], "ALTER WAREHOUSE%")) == 1
        verb = connector.verb("scale-warehouse")
        assert verb.verify(target, verb.params_model(warehouse_size="XLARGE"), first).ok
        check = connector.check("warehouse_status")
        assert check.run(target, check.params_model(expect_size="XLARGE")).passed
        assert not check.run(target, check.params_model(expect_size="SMALL")).passed
        picked = {w["value"]: w["size"] for w in connector.metadata("warehouses")}
        assert picked[wh] in ("X-Large", "XLARGE")
    finally:
        sql(f"DROP WAREHOUSE IF EXISTS {wh}")


def test_warehouse_is_restored_when_the_procedure_fails(
    make_connector: Callable[..., SnowflakeConnector], sql: Sql, db: str
) -> None:
    wh = f"WH_{db}"
    sql(f"CREATE WAREHOUSE {wh} WITH WAREHOUSE_SIZE = 'SMALL'")
    try:
        connector = make_connector(warehouse=wh)
        sql(f"CREATE SCHEMA {db}.P")
        sql(
            f"CREATE PROCEDURE {db}.P.SP_BROKEN() RETURNS VARCHAR LANGUAGE SQL AS $$ BEGIN "
            f"INSERT INTO {db}.P.NO_SUCH_TABLE VALUES (1); RETURN 'never'; END $$"
        )
        proc = TargetRef("sf.broken", "procedure", {"database": db, "schema": "P", "name": "SP_BROKEN"})
        verb = connector.verb("rerun")
        params = verb.params_model(warehouse_size="XLARGE")
        plan = verb.plan(proc, params)
        lines: list[str] = []
        with pytest.raises(ConnectorError) as err:
            verb.execute(proc, params, ctx(AID["act-broken"], plan, lines))
        assert not err.value.transient
        assert sql("SHOW WAREHOUSES LIKE %s", (wh,))[0]["size"] in ("Small", "SMALL")
        assert f"warehouse {wh} restored to SMALL" in lines
    finally:
        sql(f"DROP WAREHOUSE IF EXISTS {wh}")


def test_executed_hook_fires_once_the_run_is_started(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    root, _ = _graph(sql, db)
    seen: list[str] = []
    verb = connector.verb("rerun")
    params = verb.params_model()
    context = ctx(AID["act-executed"], verb.plan(root, params))
    context.executed = lambda summary, details=None: seen.append(summary)
    verb.execute(root, params, context)
    assert seen == [f"started a run of {db}.TASKS.ROOT"]


def test_alerts_skip_a_missing_target_and_pickers_list_tasks(
    connector: SnowflakeConnector, sql: Sql, db: str, hook: Callable[[str, dict[str, Any]], Any]
) -> None:
    root, _ = _graph(sql, db)
    run_verb(connector, "resume-task", root, AID["act-resume-4"])
    hook("tasks/fail-next", {"task": f"{db}.TASKS.ROOT", "times": 1, "error": "boom"})
    run_verb(connector, "rerun", root, AID["act-rerun-4"])
    gone = TargetRef("sf.gone", "task", {"database": db, "schema": "TASKS", "name": "GONE"})
    alerts = connector.alerts([gone, root])
    assert [a.target for a in alerts] == ["sf.root"]
    assert alerts[0].key.startswith(f"snowflake.task_failed:{db}.TASKS.ROOT:")
    tasks = connector.metadata("tasks", database=db, schema="TASKS")
    assert {t["value"]: t["predecessors"] for t in tasks} == {"ROOT": [], "CHILD": ["ROOT"]}
