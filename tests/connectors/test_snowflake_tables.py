"""The Snowflake connector's table, pipe, stream and environment checks and verbs against the emulator."""
# ruff: noqa: F811  (the fixtures are imported from sf_support, then requested by name)

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ConnectorError, TargetRef
from connectors.snowflake import SnowflakeConnector
from tests.connectors.sf_support import (  # noqa: F401 (fixtures)
    Sql,
    connector,
    db,
    hook,
    make_connector,
    run_verb,
    sf_url,
    sql,
    tagged,
)


def _aid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


def _pos(sql: Sql, db: str) -> TargetRef:
    """A raw table with two loads today and one three days ago, one invalid row and an SCD2 key overlap."""
    sql(f"CREATE SCHEMA {db}.BRONZE")
    sql(
        f"CREATE TABLE {db}.BRONZE.RAW_POS (ID INTEGER, CUSTOMER_ID INTEGER, LOAD_TIMESTAMP TIMESTAMP_NTZ, "
        "IS_VALID BOOLEAN, IS_CURRENT BOOLEAN)"
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(1, 10, now, True, True), (2, 10, now, False, True), (3, 11, now - timedelta(days=3), True, True)]
    for row in rows:
        sql(f"INSERT INTO {db}.BRONZE.RAW_POS VALUES (%s, %s, %s, %s, %s)", row)
    return TargetRef(
        "sf.raw_pos", "table",
        {"database": db, "schema": "BRONZE", "name": "RAW_POS", "timestamp_column": "LOAD_TIMESTAMP",
         "key_column": "CUSTOMER_ID"},
    )  # fmt: skip


def test_hours_since_last_load(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    table = _pos(sql, db)
    check = connector.check("hours_since_last_load")
    assert check.run(table, check.params_model()).passed
    sql(f"DELETE FROM {db}.BRONZE.RAW_POS WHERE ID IN (1, 2)")
    stale = check.run(table, check.params_model(max_hours=2))
    assert not stale.passed and "stale" in stale.summary


def test_row_counts_by_day_shows_gaps(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    table = _pos(sql, db)
    today = datetime.now(UTC).date()
    check = connector.check("row_counts_by_day")
    found = check.run(table, check.params_model(start_date=today - timedelta(days=3)))
    assert found.rows == [
        [(today - timedelta(days=3)).isoformat(), 1],
        [(today - timedelta(days=2)).isoformat(), 0],
        [(today - timedelta(days=1)).isoformat(), 0],
        [today.isoformat(), 2],
    ]
    assert "2 day(s) without rows" in found.summary


def test_scd2_overlaps_and_invalid_records(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    table = _pos(sql, db)
    scd2 = connector.check("scd2_overlaps").run(table, connector.check("scd2_overlaps").params_model())
    assert not scd2.passed and scd2.rows == [[10, 2, 2]]
    invalid = connector.check("invalid_records").run(table, connector.check("invalid_records").params_model())
    assert not invalid.passed and len(invalid.rows) == 1
    assert invalid.rows[0][invalid.columns.index("id")] == 2


def test_databases_exist(connector: SnowflakeConnector, sql: Sql, db: str) -> None:
    _pos(sql, db)
    env = TargetRef("sf.env", "environment", {"databases": [db]})
    check = connector.check("databases_exist")
    assert check.run(env, check.params_model()).passed
    missing = check.run(env, check.params_model(databases=[db, "CP_NOPE_DB"]))
    assert not missing.passed and "CP_NOPE_DB" in missing.summary


def test_backfill_facts_deletes_and_reloads_in_one_transaction_once(
    connector: SnowflakeConnector, sql: Sql, db: str
) -> None:
    sql(f"CREATE SCHEMA {db}.FACTS")
    sql(f"CREATE TABLE {db}.FACTS.SOURCE (SALE_DATE DATE, AMOUNT INTEGER)")
    sql(f"CREATE TABLE {db}.FACTS.FACT_SALES (SALE_DATE DATE, AMOUNT INTEGER)")
    sql(f"INSERT INTO {db}.FACTS.SOURCE VALUES ('2024-01-01', 5), ('2024-01-02', 7)")
    sql(f"INSERT INTO {db}.FACTS.FACT_SALES VALUES ('2024-01-01', 999)")
    sql(
        f"CREATE PROCEDURE {db}.FACTS.SP_LOAD_FACT_SALES() RETURNS VARCHAR LANGUAGE SQL AS $$ BEGIN "
        f"INSERT INTO {db}.FACTS.FACT_SALES SELECT S.SALE_DATE, S.AMOUNT FROM {db}.FACTS.SOURCE S WHERE NOT EXISTS "
        f"(SELECT 1 FROM {db}.FACTS.FACT_SALES F WHERE F.SALE_DATE = S.SALE_DATE); RETURN 'ok'; END $$"
    )
    table = TargetRef(
        "sf.fact", "table",
        {"database": db, "schema": "FACTS", "name": "FACT_SALES", "date_column": "SALE_DATE",
         "procedure": f"{db}.FACTS.SP_LOAD_FACT_SALES"},
    )  # fmt: skip
    aid = _aid("act-facts")
    plan, first, again = run_verb(connector, "backfill", table, aid, from_date="2024-01-01", to_date="2024-01-31")
    assert plan.counts == {"rows": 1}
    assert not first.already_done and again.already_done
    got = sql(f"SELECT SALE_DATE, AMOUNT FROM {db}.FACTS.FACT_SALES ORDER BY 1")
    assert [int(r["amount"]) for r in got] == [5, 7]
    assert len(tagged(sql, db, aid, "DELETE FROM%")) == 1
    verb = connector.verb("backfill")
    assert verb.verify(table, verb.params_model(from_date="2024-01-01", to_date="2024-01-31"), first).ok


def test_pipe_status_resume_and_pause(connector: SnowflakeConnector, sql: Sql, db: str, tmp_path: Path) -> None:
    (tmp_path / "pos_2024-01-01.csv").write_text("1,10\n2,11\n")
    sql(f"CREATE SCHEMA {db}.BRONZE")
    sql(f"CREATE TABLE {db}.BRONZE.RAW_POS (ID INTEGER, CUSTOMER_ID INTEGER)")
    sql(f"CREATE STAGE {db}.BRONZE.STAGE_POS URL = 'file://{tmp_path}/'")
    sql(f"CREATE PIPE {db}.BRONZE.PIPE_POS AS COPY INTO {db}.BRONZE.RAW_POS FROM @{db}.BRONZE.STAGE_POS")
    pipe = TargetRef("sf.pipe", "pipe", {"database": db, "schema": "BRONZE", "name": "PIPE_POS"})
    plan, first, again = run_verb(connector, "pause", pipe, _aid("act-pipe-pause"))
    assert again.already_done
    status = connector.check("pipe_status").run(pipe, connector.check("pipe_status").params_model())
    assert not status.passed and "PAUSED" in status.summary
    assert [a.alert_type for a in connector.alerts([pipe])] == ["snowflake.pipe_paused"]
    plan, first, again = run_verb(connector, "resume-task", pipe, _aid("act-pipe-resume"))
    assert plan.details["files"] and plan.details["files"][0].endswith("pos_2024-01-01.csv")
    assert again.already_done
    assert sql(f"SELECT COUNT(*) AS N FROM {db}.BRONZE.RAW_POS")[0]["n"] == 2
    verb = connector.verb("resume-task")
    assert verb.verify(pipe, verb.params_model(), first).ok
    assert connector.alerts([pipe]) == []


def _raw_stage(sql: Sql, db: str, hook: Callable[[str, dict[str, Any]], Any]) -> TargetRef:
    sql(f"CREATE SCHEMA {db}.BRONZE")
    sql(f"CREATE TABLE {db}.BRONZE.RAW_POS (ID INTEGER, CUSTOMER_ID INTEGER)")
    sql(f"CREATE FILE FORMAT {db}.BRONZE.CSV_FORMAT TYPE = CSV")
    sql(f"CREATE STAGE {db}.BRONZE.STAGE_POS")
    for day, rows in (("2024-01-01", "1,10\n2,11\n"), ("2024-01-02", "3,12\n"), ("2024-02-01", "4,13\n")):
        hook("stages/put", {"stage": f"{db}.BRONZE.STAGE_POS", "name": f"pos_{day}.csv", "content": rows})
    return TargetRef(
        "sf.raw", "table",
        {"database": db, "schema": "BRONZE", "name": "RAW_POS", "stage": f"{db}.BRONZE.STAGE_POS",
         "file_format": f"{db}.BRONZE.CSV_FORMAT"},
    )  # fmt: skip


def test_backfill_raw_copies_named_files_once_and_plans_what_is_loaded(
    connector: SnowflakeConnector, sql: Sql, db: str, hook: Callable[[str, dict[str, Any]], Any]
) -> None:
    table = _raw_stage(sql, db, hook)
    aid = _aid("act-raw")
    plan, first, again = run_verb(connector, "backfill", table, aid, files=["pos_2024-01-01.csv"])
    assert [t.detail["already_loaded"] for t in plan.touches] == [False]
    assert [f["status"] for f in first.details["files"]] == ["LOADED"]
    assert again.already_done
    assert sql(f"SELECT COUNT(*) AS N FROM {db}.BRONZE.RAW_POS")[0]["n"] == 2
    assert len(tagged(sql, db, aid, "COPY INTO%")) == 1
    verb = connector.verb("backfill")
    assert verb.verify(table, verb.params_model(files=["pos_2024-01-01.csv"]), first).ok
    # a pattern over January: the plan marks the file loaded above, and loads only the other one
    january = verb.plan(table, verb.params_model(pattern=".*2024-01-.*"))
    assert {t.name.split("/")[-1]: t.detail["already_loaded"] for t in january.touches} == {
        "pos_2024-01-01.csv": True, "pos_2024-01-02.csv": False
    }  # fmt: skip
    history = connector.check("copy_history").run(table, connector.check("copy_history").params_model(hours=1))
    assert history.passed and len(history.rows) == 1


def test_backfill_refuses_files_missing_from_the_stage(
    connector: SnowflakeConnector, sql: Sql, db: str, hook: Callable[[str, dict[str, Any]], Any]
) -> None:
    table = _raw_stage(sql, db, hook)
    verb = connector.verb("backfill")
    with pytest.raises(ConnectorError, match="not in stage"):
        verb.plan(table, verb.params_model(files=["pos_1999-01-01.csv"]))


def test_clone_environment_clones_with_data_and_verifies_counts(
    connector: SnowflakeConnector, sql: Sql, db: str
) -> None:
    prefix = db.replace("_", "")[:12]
    source = f"{prefix}_RAW"
    sql(f"CREATE DATABASE IF NOT EXISTS {source}")
    sql(f"CREATE SCHEMA IF NOT EXISTS {source}.BRONZE")
    sql(f"CREATE TABLE {source}.BRONZE.RAW_POS (ID INTEGER)")
    sql(f"INSERT INTO {source}.BRONZE.RAW_POS VALUES (1), (2), (3)")
    env = TargetRef("sf.env", "environment", {"databases": [source]})
    new = f"Q{uuid.uuid4().hex[:8].upper()}"
    plan, first, again = run_verb(connector, "clone-environment", env, _aid("act-clone"), prefix=new)
    assert plan.risk == "high"
    assert plan.touches[0].name == f"{new}_RAW" and plan.touches[0].detail["rows"] == 3
    assert again.already_done
    assert sql(f"SELECT COUNT(*) AS N FROM {new}_RAW.BRONZE.RAW_POS")[0]["n"] == 3
    verb = connector.verb("clone-environment")
    assert verb.verify(env, verb.params_model(prefix=new), first).ok
    check = connector.check("databases_exist")
    assert check.run(env, check.params_model(databases=[f"{new}_RAW"])).passed
    with pytest.raises(ConnectorError, match="already exist"):
        verb.plan(env, verb.params_model(prefix=new))


def test_stream_has_data_and_pipe_usage_and_pickers(
    connector: SnowflakeConnector, sql: Sql, db: str, hook: Callable[[str, dict[str, Any]], Any]
) -> None:
    sql(f"CREATE SCHEMA {db}.BRONZE")
    sql(f"CREATE TABLE {db}.BRONZE.RAW_POS (ID INTEGER, CUSTOMER_ID INTEGER)")
    sql(f"CREATE STAGE {db}.BRONZE.STAGE_POS")
    sql(f"CREATE STREAM {db}.BRONZE.POS_CHANGES ON TABLE {db}.BRONZE.RAW_POS")
    sql(
        f"CREATE PIPE {db}.BRONZE.PIPE_POS AUTO_INGEST = TRUE AS COPY INTO {db}.BRONZE.RAW_POS "
        f"FROM @{db}.BRONZE.STAGE_POS FILE_FORMAT = (TYPE = CSV)"
    )
    stream = TargetRef("sf.stream", "stream", {"database": db, "schema": "BRONZE", "name": "POS_CHANGES"})
    check = connector.check("stream_has_data")
    assert check.run(stream, check.params_model()).rows == [[f"{db}.BRONZE.POS_CHANGES", False]]
    hook("stages/put", {"stage": f"{db}.BRONZE.STAGE_POS", "name": "pos_1.csv", "content": "1,10\n"})
    assert check.run(stream, check.params_model()).rows == [[f"{db}.BRONZE.POS_CHANGES", True]]
    pipe = TargetRef("sf.pipe", "pipe", {"database": db, "schema": "BRONZE", "name": "PIPE_POS"})
    usage = connector.check("pipe_usage_history").run(pipe, connector.check("pipe_usage_history").params_model(hours=1))
    assert usage.passed, usage.summary
    assert [r["value"] for r in connector.metadata("pipes", database=db, schema="BRONZE")] == ["PIPE_POS"]
    assert [r["value"] for r in connector.metadata("streams", database=db, schema="BRONZE")] == ["POS_CHANGES"]
    with pytest.raises(ConnectorError):
        connector.metadata("tasks", database=db, schema="x; drop")
