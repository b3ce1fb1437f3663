"""The Snowflake emulator (sandbox/snowflake) through the real snowflake-connector-python over HTTP.

The emulator is the sandbox's (``SANDBOX_SNOWFLAKE_URL``, written by ``python -m sandbox.services start``); a
missing URL or an emulator that does not answer fails the tests. Each test works in databases of its own
(``T<hex>_...``) so tests do not see each other's objects.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import snowflake.connector
from snowflake.connector import SnowflakeConnection
from snowflake.connector.errors import ProgrammingError

Connect = Callable[..., SnowflakeConnection]


@pytest.fixture(scope="module")
def url() -> str:
    value = os.environ.get("SANDBOX_SNOWFLAKE_URL")
    if not value:
        pytest.fail("SANDBOX_SNOWFLAKE_URL is not set: start the sandbox (python -m sandbox.services start)")
    try:
        with urllib.request.urlopen(f"{value}/_emulator/health", timeout=5) as response:
            assert json.load(response) == {"ok": True}
    except OSError as exc:
        pytest.fail(f"the Snowflake emulator at {value} does not answer: {exc}")
    return value


def hook(url: str, path: str, **args: Any) -> Any:
    request = urllib.request.Request(
        f"{url}/_emulator/{path}",
        data=json.dumps(args).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture
def connect(url: str) -> Iterator[Connect]:
    opened: list[SnowflakeConnection] = []
    parts = urlsplit(url)

    def _connect(**kwargs: Any) -> SnowflakeConnection:
        conn = snowflake.connector.connect(
            host=parts.hostname,
            port=parts.port,
            protocol="http",
            account="sandbox",
            user="tester",
            password="secret",
            login_timeout=10,
            network_timeout=30,
            **kwargs,
        )
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def db() -> str:
    """A fresh database name prefix for one test."""
    return f"T{uuid.uuid4().hex[:8].upper()}"


def rows(conn: SnowflakeConnection, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    cur.execute(sql, params)
    return list(cur.fetchall())


def dicts(conn: SnowflakeConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = conn.cursor(snowflake.connector.DictCursor)
    cur.execute(sql, params)
    return list(cur.fetchall())


def run_all(conn: SnowflakeConnection, *statements: str) -> None:
    cur = conn.cursor()
    for statement in statements:
        cur.execute(statement)


# ------------------------------------------------------------------------------------------------ sessions


def test_plain_sql_is_forwarded_to_fakesnow(connect: Connect, db: str) -> None:
    conn = connect()
    run_all(
        conn,
        f"CREATE DATABASE {db}",
        f"CREATE SCHEMA {db}.S",
        f"CREATE TABLE {db}.S.T (id INT, v VARCHAR)",
        f"INSERT INTO {db}.S.T VALUES (1, 'a'), (2, 'b')",
    )
    assert rows(conn, "SELECT id, v FROM IDENTIFIER(%s) ORDER BY id", (f"{db}.S.T",)) == [(1, "a"), (2, "b")]
    with pytest.raises(ProgrammingError):
        rows(conn, f"SELECT nope FROM {db}.S.T")


def test_query_tag_is_in_the_query_history_across_sessions(connect: Connect, db: str) -> None:
    tag = f"action-{db}"
    first = connect(session_parameters={"QUERY_TAG": tag})
    cur = first.cursor()
    cur.execute("SELECT 1")
    first_id = cur.sfqid
    with pytest.raises(ProgrammingError):
        rows(first, "SELECT * FROM NO_SUCH_DB.S.T")
    second = connect()
    run_all(second, f"ALTER SESSION SET QUERY_TAG = '{tag}-2'")
    rows(second, "SELECT 2")
    run_all(second, "ALTER SESSION UNSET QUERY_TAG")
    rows(second, "SELECT 3")

    reader = connect()
    found = dicts(
        reader,
        "SELECT query_text, execution_status, error_message, session_id FROM "
        "TABLE(DEV_RAW.INFORMATION_SCHEMA.QUERY_HISTORY(RESULT_LIMIT => 1000)) WHERE query_tag = %s "
        "ORDER BY start_time",
        (tag,),
    )
    assert [(r["QUERY_TEXT"], r["EXECUTION_STATUS"]) for r in found] == [
        ("SELECT 1", "SUCCESS"),
        ("SELECT * FROM NO_SUCH_DB.S.T", "FAIL"),
    ]
    assert found[1]["ERROR_MESSAGE"]
    assert rows(
        reader, "SELECT query_tag FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY()) WHERE query_id = %s", (first_id,)
    ) == [(tag,)]  # the cursor's sfqid is the history's QUERY_ID
    tagged_2 = rows(
        reader,
        "SELECT query_text FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY()) WHERE query_tag = %s "
        "AND query_text LIKE 'SELECT%%'",
        (f"{tag}-2",),
    )
    assert tagged_2 == [("SELECT 2",)]
    own = rows(
        second,
        "SELECT query_text, query_tag, execution_status FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY_BY_SESSION()) "
        "ORDER BY start_time",
    )
    assert own[-2] == ("SELECT 3", "", "SUCCESS")
    assert own[-1][2] == "RUNNING"  # the reading statement itself
    assert ("SELECT 1", tag, "SUCCESS") not in own


def test_the_emulator_restarts_with_its_databases_and_objects(tmp_path: Any) -> None:
    from sandbox.snowflake import snowflake_running, start_snowflake, stop_snowflake

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    own = start_snowflake(tmp_path, port)
    try:
        assert snowflake_running(tmp_path)
        assert start_snowflake(tmp_path, port) == own  # reused
        conn = snowflake.connector.connect(
            host="127.0.0.1",
            port=port,
            protocol="http",
            account="a",
            user="u",
            password="p",
            login_timeout=10,
            network_timeout=30,
        )
        run_all(
            conn,
            "CREATE DATABASE KEEP",
            "CREATE SCHEMA KEEP.S",
            "CREATE TABLE KEEP.S.T (id INT)",
            "INSERT INTO KEEP.S.T VALUES (7)",
            "CREATE TASK KEEP.S.TASK_A AS SELECT 1",
            "CREATE WAREHOUSE WH_KEEP WITH WAREHOUSE_SIZE = 'SMALL'",
        )
        conn.close()
        assert stop_snowflake(tmp_path)
        assert not snowflake_running(tmp_path)
        assert not stop_snowflake(tmp_path)
        start_snowflake(tmp_path, port)
        conn = snowflake.connector.connect(
            host="127.0.0.1",
            port=port,
            protocol="http",
            account="a",
            user="u",
            password="p",
            login_timeout=10,
            network_timeout=30,
        )
        assert rows(conn, "SELECT id FROM KEEP.S.T") == [(7,)]
        assert [t["name"] for t in dicts(conn, "SHOW TASKS IN DATABASE KEEP")] == ["TASK_A"]
        assert [w["size"] for w in dicts(conn, "SHOW WAREHOUSES LIKE 'WH_KEEP'")] == ["Small"]
        conn.close()
    finally:
        stop_snowflake(tmp_path)


# ---------------------------------------------------------------------------------------------- warehouses


def test_warehouse_size_changes_show_in_show_warehouses(connect: Connect, db: str) -> None:
    conn = connect()
    name = f"WH_{db}"
    run_all(conn, f"CREATE WAREHOUSE {name} WITH WAREHOUSE_SIZE = 'MEDIUM'")

    def show() -> dict[str, Any]:
        (found,) = dicts(conn, f"SHOW WAREHOUSES LIKE '{name.lower()}'")
        return found

    assert (show()["size"], show()["state"]) == ("Medium", "STARTED")
    run_all(conn, f"ALTER WAREHOUSE IDENTIFIER('{name}') SET WAREHOUSE_SIZE = 'LARGE'")
    assert show()["size"] == "Large"
    run_all(conn, f"ALTER WAREHOUSE {name} SET WAREHOUSE_SIZE = XLARGE", f"ALTER WAREHOUSE {name} SUSPEND")
    assert (show()["size"], show()["state"]) == ("X-Large", "SUSPENDED")
    with pytest.raises(ProgrammingError, match="WAREHOUSE_SIZE"):
        run_all(conn, f"ALTER WAREHOUSE {name} SET WAREHOUSE_SIZE = 'HUGE'")
    assert show()["size"] == "X-Large"
    with pytest.raises(ProgrammingError, match="does not exist"):
        run_all(conn, "USE WAREHOUSE NO_SUCH_WH")
    other = connect(warehouse=name, session_parameters={"QUERY_TAG": f"wh-{db}"})
    rows(other, "SELECT 1")
    assert rows(
        conn,
        "SELECT warehouse_name, warehouse_size FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY()) WHERE query_tag = %s",
        (f"wh-{db}",),
    ) == [(name, "X-Large")]


# ------------------------------------------------------------------------------------------------- tasks


def make_graph(conn: SnowflakeConnection, db: str) -> tuple[str, str]:
    """A source table, a target table and a two-task graph (root copies, child counts); (root, child)."""
    root, child = f"{db}.TASKS.ROOT_TASK", f"{db}.TASKS.CHILD_TASK"
    run_all(
        conn,
        f"CREATE DATABASE {db}",
        f"CREATE SCHEMA {db}.TASKS",
        f"CREATE TABLE {db}.TASKS.SRC (id INT)",
        f"CREATE TABLE {db}.TASKS.DST (id INT)",
        f"CREATE TABLE {db}.TASKS.COUNTS (n INT)",
        f"INSERT INTO {db}.TASKS.SRC VALUES (1), (2), (3)",
        f"CREATE TASK {root} WAREHOUSE = WH_TRANS SCHEDULE = '60 MINUTE' AS "
        f"INSERT INTO {db}.TASKS.DST SELECT id FROM {db}.TASKS.SRC",
        f"CREATE TASK {child} WAREHOUSE = WH_TRANS AFTER {root} AS "
        f"INSERT INTO {db}.TASKS.COUNTS SELECT COUNT(*) FROM {db}.TASKS.DST",
    )
    return root, child


def history(conn: SnowflakeConnection, db: str) -> list[dict[str, Any]]:
    return dicts(
        conn,
        f"SELECT * FROM TABLE({db}.INFORMATION_SCHEMA.TASK_HISTORY(RESULT_LIMIT => 100)) "
        "ORDER BY query_start_time, name",
    )


def test_task_graph_runs_children_after_the_root_and_shows_in_show_tasks(connect: Connect, db: str) -> None:
    conn = connect()
    root, child = make_graph(conn, db)
    tasks = {t["name"]: t for t in dicts(conn, f"SHOW TASKS IN SCHEMA {db}.TASKS")}
    assert tasks["ROOT_TASK"]["state"] == "suspended"
    assert json.loads(tasks["CHILD_TASK"]["predecessors"]) == [root]
    assert tasks["ROOT_TASK"]["schedule"] == "60 MINUTE"
    with pytest.raises(ProgrammingError):
        run_all(conn, "EXECUTE TASK NO_SUCH_DB.TASKS.NOPE")

    run_all(conn, f"ALTER TASK {child} RESUME", f"EXECUTE TASK IDENTIFIER('{root}')")
    assert rows(conn, f"SELECT n FROM {db}.TASKS.COUNTS") == [(3,)]
    runs = history(conn, db)
    assert [(r["NAME"], r["STATE"], r["SCHEDULED_FROM"]) for r in runs] == [
        ("ROOT_TASK", "SUCCEEDED", "EXECUTE TASK"),
        ("CHILD_TASK", "SUCCEEDED", "EXECUTE TASK"),
    ]
    assert runs[0]["RUN_ID"] == runs[1]["RUN_ID"]
    assert runs[0]["ROOT_TASK_ID"] == tasks["ROOT_TASK"]["id"]
    by_name = dicts(conn, "SELECT name FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY(TASK_NAME => %s))", ("child_task",))
    assert by_name and {r["NAME"] for r in by_name} == {"CHILD_TASK"}

    # a started root refuses changes to its graph; the scheduler runs started roots only
    run_all(conn, f"ALTER TASK {root} RESUME")
    with pytest.raises(ProgrammingError, match="not suspended"):
        run_all(conn, f"ALTER TASK {child} SUSPEND")
    assert root in hook(conn_url(conn), "scheduler/run")["ran"]
    run_all(conn, f"ALTER TASK {root} SUSPEND")
    assert dicts(conn, f"SHOW TASKS LIKE 'root_task' IN DATABASE {db}")[0]["last_suspended_reason"] == "USER_SUSPENDED"
    assert root not in hook(conn_url(conn), "scheduler/run")["ran"]


def conn_url(conn: SnowflakeConnection) -> str:
    return f"http://{conn.host}:{conn.port}"


def test_failing_task_stops_the_graph_and_auto_suspends_the_root(connect: Connect, db: str) -> None:
    conn = connect()
    root, child = make_graph(conn, db)
    url = conn_url(conn)
    run_all(conn, f"ALTER TASK {child} RESUME", f"ALTER TASK {root} RESUME")
    hook(url, "tasks/fail-next", task=root, times=3, error="Numeric value 'x' is not recognized")
    for _ in range(2):
        hook(url, "scheduler/run")
    (shown,) = dicts(conn, f"SHOW TASKS LIKE 'ROOT_TASK' IN SCHEMA {db}.TASKS")
    assert shown["state"] == "started"  # two failures: not yet
    hook(url, "scheduler/run")
    (shown,) = dicts(conn, f"SHOW TASKS LIKE 'ROOT_TASK' IN SCHEMA {db}.TASKS")
    assert (shown["state"], shown["last_suspended_reason"]) == ("suspended", "FAILED_AND_AUTO_SUSPENDED")
    runs = history(conn, db)
    assert [(r["NAME"], r["STATE"], r["SCHEDULED_FROM"]) for r in runs] == [("ROOT_TASK", "FAILED", "SCHEDULE")] * 3
    assert runs[0]["ERROR_MESSAGE"] == "Numeric value 'x' is not recognized"
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.TASKS.COUNTS") == [(0,)]  # the child never ran
    hook(url, "scheduler/run")
    assert len(history(conn, db)) == 3  # a suspended root is not scheduled


def test_retry_last_reruns_the_failed_task_and_later_ones_only(connect: Connect, db: str) -> None:
    conn = connect()
    root, child = make_graph(conn, db)
    url = conn_url(conn)
    run_all(conn, f"ALTER TASK {child} RESUME")
    with pytest.raises(ProgrammingError, match="did not fail"):
        run_all(conn, f"EXECUTE TASK {root} RETRY LAST")  # no run at all yet
    run_all(conn, f"EXECUTE TASK {root}")
    with pytest.raises(ProgrammingError, match="did not fail"):
        run_all(conn, f"EXECUTE TASK {root} RETRY LAST")

    hook(url, "tasks/fail-next", task=child, times=1, error="boom")
    run_all(conn, f"EXECUTE TASK {root}")
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.TASKS.DST") == [(6,)]
    run_all(conn, f"EXECUTE TASK {root} RETRY LAST")
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.TASKS.DST") == [(6,)]  # the root did not run again
    assert rows(conn, f"SELECT n FROM {db}.TASKS.COUNTS ORDER BY n") == [(3,), (6,)]
    last = history(conn, db)[-2:]
    assert [(r["NAME"], r["STATE"], r["SCHEDULED_FROM"], r["ATTEMPT_NUMBER"]) for r in last] == [
        ("CHILD_TASK", "FAILED", "EXECUTE TASK", 1),
        ("CHILD_TASK", "SUCCEEDED", "RETRY", 2),
    ]
    assert last[0]["RUN_ID"] == last[1]["RUN_ID"]

    # a graph changed since its failed run is not retried
    hook(url, "tasks/fail-next", task=child, times=1, error="boom")
    run_all(conn, f"EXECUTE TASK {root}")
    run_all(conn, f"CREATE OR REPLACE TASK {child} AFTER {root} AS SELECT 1")
    with pytest.raises(ProgrammingError, match="changed"):
        run_all(conn, f"EXECUTE TASK {root} RETRY LAST")


def test_a_false_when_condition_skips_the_run_and_its_children(connect: Connect, db: str) -> None:
    conn = connect()
    root, child = make_graph(conn, db)
    run_all(
        conn,
        f"CREATE STREAM {db}.TASKS.SRC_CHANGES ON TABLE {db}.TASKS.SRC",
        f"CREATE OR REPLACE TASK {root} WHEN SYSTEM$STREAM_HAS_DATA('{db}.TASKS.SRC_CHANGES') AS "
        f"INSERT INTO {db}.TASKS.DST SELECT id FROM {db}.TASKS.SRC_CHANGES",
        f"ALTER TASK {child} RESUME",
        f"EXECUTE TASK {root}",
    )
    assert [(r["NAME"], r["STATE"]) for r in history(conn, db)] == [("ROOT_TASK", "SKIPPED")]
    run_all(conn, f"INSERT INTO {db}.TASKS.SRC VALUES (9)", f"EXECUTE TASK {root}")
    assert [(r["NAME"], r["STATE"]) for r in history(conn, db)][1:] == [
        ("ROOT_TASK", "SUCCEEDED"),
        ("CHILD_TASK", "SUCCEEDED"),
    ]
    assert rows(conn, f"SELECT id FROM {db}.TASKS.DST") == [(9,)]


def test_a_task_body_error_fails_the_run_with_fakesnows_message(connect: Connect, db: str) -> None:
    conn = connect()
    root, _child = make_graph(conn, db)
    run_all(
        conn,
        f"CREATE OR REPLACE TASK {root} AS INSERT INTO {db}.TASKS.NO_SUCH_TABLE VALUES (1)",
        f"EXECUTE TASK {root}",
    )
    (run,) = history(conn, db)
    assert run["STATE"] == "FAILED"
    assert "NO_SUCH_TABLE" in run["ERROR_MESSAGE"].upper()


# ----------------------------------------------------------------------------------- stages, COPY and pipes

CSV_HEADER = "id,amount,sold_on\n"


def make_raw(conn: SnowflakeConnection, db: str) -> str:
    """A raw table with a load timestamp, an internal stage and a CSV file format; the stage's full name."""
    run_all(
        conn,
        f"CREATE DATABASE {db}",
        f"CREATE SCHEMA {db}.BRONZE",
        f"CREATE TABLE {db}.BRONZE.RAW (id INT, amount NUMBER(10, 2), sold_on DATE, "
        "load_timestamp TIMESTAMP_LTZ DEFAULT CURRENT_TIMESTAMP())",
        f"CREATE STAGE {db}.BRONZE.STAGE_RAW",
        f"CREATE FILE FORMAT {db}.BRONZE.CSV_FORMAT TYPE = CSV SKIP_HEADER = 1 FIELD_OPTIONALLY_ENCLOSED_BY = '\"'",
    )
    return f"{db}.BRONZE.STAGE_RAW"


def test_copy_into_loads_each_file_once_unless_forced(connect: Connect, url: str, db: str) -> None:
    stage = make_raw(connect(), db)
    conn = connect(database=db, schema="BRONZE")
    hook(
        url,
        "stages/put",
        stage=stage,
        name="sales_2024-01-01.csv",
        content=CSV_HEADER + "1,10.50,2024-01-01\n2,20.00,2024-01-01\n",
    )
    hook(url, "stages/put", stage=stage, name="sales_2024-01-02.csv", content=CSV_HEADER + "3,5,2024-01-02\n")
    hook(url, "stages/put", stage=stage, name="bad_2024-01-03.csv", content=CSV_HEADER + "4,5\n")
    listed = rows(conn, f"LIST @{stage}")
    assert [r[0] for r in listed] == [
        "stage_raw/bad_2024-01-03.csv",
        "stage_raw/sales_2024-01-01.csv",
        "stage_raw/sales_2024-01-02.csv",
    ]

    copy = (
        f"COPY INTO {db}.BRONZE.RAW (id, amount, sold_on) FROM @{stage} "
        "FILES = ('sales_2024-01-01.csv') FILE_FORMAT = (FORMAT_NAME = 'csv_format')"
    )
    (first,) = dicts(conn, copy)
    assert (first["file"], first["status"], first["rows_parsed"], first["rows_loaded"]) == (
        "sales_2024-01-01.csv",
        "LOADED",
        2,
        2,
    )
    assert dicts(conn, copy) == [{"status": "Copy executed with 0 files processed."}]  # loaded once
    forced = dicts(conn, copy + " FORCE = TRUE")
    assert forced[0]["rows_loaded"] == 2
    assert rows(conn, "SELECT COUNT(*), COUNT(load_timestamp) FROM RAW") == [(4, 4)]

    # a PATTERN over the stage; a bad file aborts the statement and loads nothing
    with pytest.raises(ProgrammingError, match="Number of columns"):
        run_all(
            conn,
            f"COPY INTO RAW (id, amount, sold_on) FROM @{stage} PATTERN = '.*2024-01-0[23][.]csv' "
            "FILE_FORMAT = (FORMAT_NAME = 'csv_format')",
        )
    assert rows(conn, "SELECT COUNT(*) FROM RAW") == [(4,)]
    skipped = dicts(
        conn,
        f"COPY INTO RAW (id, amount, sold_on) FROM @{stage} PATTERN = '.*2024-01-0[23][.]csv' "
        "FILE_FORMAT = (FORMAT_NAME = 'csv_format') ON_ERROR = 'SKIP_FILE'",
    )
    assert sorted((r["file"], r["status"]) for r in skipped) == [
        ("bad_2024-01-03.csv", "LOAD_FAILED"),
        ("sales_2024-01-02.csv", "LOADED"),
    ]
    history = dicts(
        conn,
        "SELECT file_name, status, row_count, first_error_message FROM "
        "TABLE(INFORMATION_SCHEMA.COPY_HISTORY(TABLE_NAME => 'RAW', "
        "START_TIME => DATEADD('hours', -1, CURRENT_TIMESTAMP()))) ORDER BY last_load_time, file_name",
    )
    assert [(h["FILE_NAME"], h["STATUS"], h["ROW_COUNT"]) for h in history] == [
        ("sales_2024-01-01.csv", "Loaded", 2),
        ("sales_2024-01-01.csv", "Loaded", 2),
        ("bad_2024-01-03.csv", "Load failed", 0),
        ("sales_2024-01-02.csv", "Loaded", 1),
    ]
    assert "Number of columns" in history[2]["FIRST_ERROR_MESSAGE"]
    with pytest.raises(ProgrammingError, match="not found"):
        run_all(conn, f"COPY INTO RAW FROM @{stage} FILES = ('nope.csv')")


def test_copy_into_inside_a_rolled_back_transaction_leaves_the_file_unloaded(
    connect: Connect, url: str, db: str
) -> None:
    conn = connect()
    stage = make_raw(conn, db)
    hook(url, "stages/put", stage=stage, name="a.csv", content=CSV_HEADER + "1,1,2024-01-01\n")
    copy = (
        f"COPY INTO {db}.BRONZE.RAW (id, amount, sold_on) FROM @{stage} "
        f"FILE_FORMAT = (FORMAT_NAME = '{db}.BRONZE.CSV_FORMAT')"
    )
    run_all(conn, "BEGIN", copy, "ROLLBACK")
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.BRONZE.RAW") == [(0,)]
    run_all(conn, "BEGIN", copy, "COMMIT")
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.BRONZE.RAW") == [(1,)]


def pipe_status(conn: SnowflakeConnection, name: str) -> dict[str, Any]:
    ((raw,),) = rows(conn, "SELECT SYSTEM$PIPE_STATUS(%s)", (name,))
    return json.loads(raw)


def test_pipe_pause_resume_refresh_status_and_usage_history(connect: Connect, url: str, db: str) -> None:
    conn = connect()
    stage = make_raw(conn, db)
    pipe = f"{db}.BRONZE.PIPE_RAW"
    run_all(
        conn,
        f"CREATE PIPE {pipe} AUTO_INGEST = TRUE AS COPY INTO {db}.BRONZE.RAW (id, amount, sold_on) "
        f"FROM @{stage} FILE_FORMAT = (FORMAT_NAME = '{db}.BRONZE.CSV_FORMAT')",
    )
    assert pipe_status(conn, pipe)["executionState"] == "RUNNING"

    # a running pipe ingests an arriving file
    assert hook(url, "stages/put", stage=stage, name="d1.csv", content=CSV_HEADER + "1,1,2024-01-01\n")[
        "ingested_by"
    ] == [pipe]
    status = pipe_status(conn, pipe)
    assert (status["lastIngestedFilePath"], status["pendingFileCount"]) == ("d1.csv", 0)
    assert "error" not in status

    # paused: files queue; REFRESH is refused; resuming ingests the queue
    run_all(conn, f"ALTER PIPE {pipe} SET PIPE_EXECUTION_PAUSED = TRUE")
    hook(url, "stages/put", stage=stage, name="d2.csv", content=CSV_HEADER + "2,2,2024-01-02\n")
    status = pipe_status(conn, pipe)
    assert (status["executionState"], status["pendingFileCount"]) == ("PAUSED", 1)
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.BRONZE.RAW") == [(1,)]
    with pytest.raises(ProgrammingError, match="paused"):
        run_all(conn, f"ALTER PIPE {pipe} REFRESH")
    run_all(conn, f"ALTER PIPE IDENTIFIER('{pipe}') SET PIPE_EXECUTION_PAUSED = FALSE")
    assert pipe_status(conn, pipe)["pendingFileCount"] == 0
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.BRONZE.RAW") == [(2,)]

    # files staged without a notification: REFRESH loads them once
    hook(url, "stages/put", stage=stage, name="d3.csv", content=CSV_HEADER + "3,3,2024-01-03\n", notify=False)
    hook(url, "stages/put", stage=stage, name="d4.csv", content=CSV_HEADER + "4,x,2024-01-04\n", notify=False)
    assert rows(conn, f"ALTER PIPE {pipe} REFRESH") == [("d3.csv", "SENT"), ("d4.csv", "SENT")]
    assert rows(conn, f"ALTER PIPE {pipe} REFRESH") == [("d4.csv", "SENT")]  # the failed file is tried again
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.BRONZE.RAW") == [(3,)]
    status = pipe_status(conn, pipe)
    assert "d4.csv" in status["error"]

    usage = dicts(
        conn,
        "SELECT pipe_name, files_inserted FROM TABLE(INFORMATION_SCHEMA.PIPE_USAGE_HISTORY("
        "DATE_RANGE_START => DATEADD('hours', -1, CURRENT_TIMESTAMP()), PIPE_NAME => %s)) "
        "ORDER BY start_time",
        (pipe,),
    )
    assert [u["FILES_INSERTED"] for u in usage] == [1, 1, 1]
    assert {u["PIPE_NAME"] for u in usage} == {"PIPE_RAW"}
    copied = rows(
        conn,
        f"SELECT file_name, pipe_name FROM TABLE({db}.INFORMATION_SCHEMA.COPY_HISTORY("
        "TABLE_NAME => 'BRONZE.RAW', START_TIME => DATEADD('hours', -1, CURRENT_TIMESTAMP()))) "
        "WHERE status = 'Loaded' ORDER BY file_name",
    )
    assert copied == [("d1.csv", "PIPE_RAW"), ("d2.csv", "PIPE_RAW"), ("d3.csv", "PIPE_RAW")]
    (shown,) = dicts(conn, f"SHOW PIPES LIKE 'pipe_raw' IN DATABASE {db}")
    assert shown["definition"].upper().startswith("COPY INTO")


# ---------------------------------------------------------------------------------- streams and procedures


def has_data(conn: SnowflakeConnection, stream: str) -> bool:
    ((value,),) = rows(conn, "SELECT SYSTEM$STREAM_HAS_DATA(%s)", (stream,))
    return bool(value)


def test_stream_has_data_until_a_committed_dml_reads_it(connect: Connect, db: str) -> None:
    conn = connect()
    stream = f"{db}.STREAMS.S_CHANGES"
    run_all(
        conn,
        f"CREATE DATABASE {db}",
        f"CREATE SCHEMA {db}.BRONZE",
        f"CREATE SCHEMA {db}.STREAMS",
        f"CREATE TABLE {db}.BRONZE.SRC (id INT, v VARCHAR)",
        f"CREATE TABLE {db}.BRONZE.DST (id INT, v VARCHAR, action VARCHAR)",
        f"INSERT INTO {db}.BRONZE.SRC VALUES (1, 'old')",
        f"CREATE STREAM {stream} ON TABLE {db}.BRONZE.SRC",
    )
    assert not has_data(conn, stream)  # a new stream starts at the table's current version
    run_all(conn, f"INSERT INTO {db}.BRONZE.SRC VALUES (2, 'new')")
    assert has_data(conn, stream)
    assert rows(conn, f"SELECT id, METADATA$ACTION FROM {stream}") == [(2, "INSERT")]
    assert has_data(conn, stream)  # a plain SELECT does not advance it

    consume = f"INSERT INTO {db}.BRONZE.DST SELECT id, v, METADATA$ACTION FROM {stream}"
    run_all(conn, "BEGIN", consume, "ROLLBACK")
    assert has_data(conn, stream)  # rolled back: the offset stays
    run_all(conn, "BEGIN", consume)
    assert has_data(connect(), stream)  # not committed yet
    run_all(conn, "COMMIT")
    assert not has_data(conn, stream)
    assert rows(conn, f"SELECT id, action FROM {db}.BRONZE.DST") == [(2, "INSERT")]

    run_all(conn, f"DELETE FROM {db}.BRONZE.SRC WHERE id = 1")
    assert rows(conn, f"SELECT id, METADATA$ACTION FROM {stream}") == [(1, "DELETE")]
    (shown,) = dicts(conn, f"SHOW STREAMS LIKE 's_changes' IN SCHEMA {db}.STREAMS")
    assert (shown["table_name"], shown["mode"]) == (f"{db}.BRONZE.SRC", "DEFAULT")
    with pytest.raises(ProgrammingError, match="does not exist"):
        rows(conn, "SELECT SYSTEM$STREAM_HAS_DATA('NO_DB.NO_SCHEMA.NO_STREAM')")


PROC = """CREATE OR REPLACE PROCEDURE {db}.FACTS.SP_LOAD(p_from DATE)
RETURNS VARCHAR LANGUAGE SQL AS
$$
BEGIN
  INSERT INTO {db}.FACTS.FACT (day, amount)
    SELECT day, SUM(amount) FROM {db}.FACTS.SALES WHERE day >= :p_from GROUP BY day;
  LET n := (SELECT COUNT(*) FROM {db}.FACTS.FACT);
  RETURN 'loaded ' || n;
END;
$$"""


def test_call_runs_the_body_inside_the_callers_transaction(connect: Connect, db: str) -> None:
    conn = connect()
    run_all(
        conn,
        f"CREATE DATABASE {db}",
        f"CREATE SCHEMA {db}.FACTS",
        f"CREATE TABLE {db}.FACTS.SALES (day DATE, amount INT)",
        f"CREATE TABLE {db}.FACTS.FACT (day DATE, amount INT)",
        f"INSERT INTO {db}.FACTS.SALES VALUES ('2024-01-01', 1), ('2024-01-01', 2), ('2024-01-02', 5)",
        f"INSERT INTO {db}.FACTS.FACT VALUES ('2024-01-02', 99)",
        PROC.format(db=db),
    )
    # the facts backfill: delete the period and reload it in one transaction
    run_all(conn, "BEGIN", f"DELETE FROM {db}.FACTS.FACT WHERE day >= '2024-01-02'")
    assert rows(conn, f"CALL {db}.FACTS.SP_LOAD('2024-01-02'::DATE)") == [("loaded 1",)]
    assert rows(connect(), f"SELECT day, amount FROM {db}.FACTS.FACT") == [(dt.date(2024, 1, 2), 99)]  # isolated
    run_all(conn, "COMMIT")
    assert rows(conn, f"SELECT day, amount FROM {db}.FACTS.FACT") == [(dt.date(2024, 1, 2), 5)]

    # a failing body fails the CALL; ROLLBACK undoes the delete before it
    run_all(
        conn,
        f"CREATE OR REPLACE PROCEDURE {db}.FACTS.SP_BAD() RETURNS VARCHAR LANGUAGE SQL AS $$ BEGIN "
        f"INSERT INTO {db}.FACTS.NO_SUCH_TABLE VALUES (1); RETURN 'never'; END; $$",
    )
    run_all(conn, "BEGIN", f"DELETE FROM {db}.FACTS.FACT")
    with pytest.raises(ProgrammingError, match="SP_BAD"):
        run_all(conn, f"CALL {db}.FACTS.SP_BAD()")
    run_all(conn, "ROLLBACK")
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.FACTS.FACT") == [(1,)]
    with pytest.raises(ProgrammingError, match="argument"):
        run_all(conn, f"CALL {db}.FACTS.SP_LOAD()")


def test_a_task_body_can_call_a_procedure_and_consume_a_stream(connect: Connect, db: str) -> None:
    conn = connect()
    run_all(
        conn,
        f"CREATE DATABASE {db}",
        f"CREATE SCHEMA {db}.S",
        f"CREATE TABLE {db}.S.SRC (id INT)",
        f"CREATE TABLE {db}.S.DST (id INT)",
        f"CREATE STREAM {db}.S.CHANGES ON TABLE {db}.S.SRC",
        f"CREATE PROCEDURE {db}.S.MOVE() RETURNS VARCHAR LANGUAGE SQL AS $$ BEGIN "
        f"INSERT INTO {db}.S.DST SELECT id FROM {db}.S.CHANGES WHERE METADATA$ACTION = 'INSERT'; RETURN 'ok'; END; $$",
        f"CREATE TASK {db}.S.T AS CALL {db}.S.MOVE()",
        f"INSERT INTO {db}.S.SRC VALUES (1), (2)",
        f"EXECUTE TASK {db}.S.T",
    )
    assert rows(conn, f"SELECT id FROM {db}.S.DST ORDER BY id") == [(1,), (2,)]
    assert not has_data(conn, f"{db}.S.CHANGES")
    run_all(conn, f"EXECUTE TASK {db}.S.T")
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.S.DST") == [(2,)]


# ------------------------------------------------------------------------------------------------- clone


def test_clone_copies_tables_with_data_and_the_layers_objects(connect: Connect, url: str, db: str) -> None:
    conn = connect()
    root, child = make_graph(conn, db)
    stage = f"{db}.TASKS.STAGE_X"
    run_all(
        conn,
        f"CREATE VIEW {db}.TASKS.V_SRC AS SELECT id FROM {db}.TASKS.SRC WHERE id > 1",
        f"CREATE STAGE {stage}",
        f"CREATE FILE FORMAT {db}.TASKS.CSV_FORMAT TYPE = CSV",
        f"CREATE PIPE {db}.TASKS.PIPE_X AUTO_INGEST = TRUE AS COPY INTO {db}.TASKS.SRC FROM @{stage} "
        f"FILE_FORMAT = (FORMAT_NAME = '{db}.TASKS.CSV_FORMAT')",
        f"CREATE STREAM {db}.TASKS.CHANGES ON TABLE {db}.TASKS.SRC",
        f"CREATE PROCEDURE {db}.TASKS.P() RETURNS VARCHAR LANGUAGE SQL AS $$ BEGIN RETURN 'p'; END; $$",
        f"ALTER TASK {child} RESUME",
        f"ALTER TASK {root} RESUME",
    )
    hook(url, "stages/put", stage=stage, name="f1.csv", content="10\n")
    clone = f"{db}_CLONE"
    assert rows(conn, f"CREATE DATABASE {clone} CLONE {db}") == [(f"Database {clone} successfully created.",)]

    assert rows(conn, f"SELECT id FROM {clone}.TASKS.SRC ORDER BY id") == [(1,), (2,), (3,), (10,)]
    assert rows(conn, f"SELECT COUNT(*) FROM {clone}.TASKS.V_SRC") == [(3,)]
    run_all(conn, f"INSERT INTO {clone}.TASKS.SRC VALUES (4)")
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.TASKS.SRC") == [(4,)]  # the source is untouched

    tasks = {t["name"]: t for t in dicts(conn, f"SHOW TASKS IN DATABASE {clone}")}
    assert {name: t["state"] for name, t in tasks.items()} == {"CHILD_TASK": "suspended", "ROOT_TASK": "suspended"}
    assert json.loads(tasks["CHILD_TASK"]["predecessors"]) == [f"{clone}.TASKS.ROOT_TASK"]
    assert pipe_status(conn, f"{clone}.TASKS.PIPE_X")["executionState"] == "PAUSED"
    assert [r[0] for r in rows(conn, f"LIST @{clone}.TASKS.STAGE_X")] == ["stage_x/f1.csv"]
    assert has_data(conn, f"{clone}.TASKS.CHANGES")  # the insert of 4 above
    assert rows(conn, f"CALL {clone}.TASKS.P()") == [("p",)]
    # the cloned table keeps its load metadata: the file is not loaded twice
    assert dicts(conn, f"COPY INTO {clone}.TASKS.SRC FROM @{clone}.TASKS.STAGE_X") == [
        {"status": "Copy executed with 0 files processed."}
    ]

    with pytest.raises(ProgrammingError, match="already exists"):
        run_all(conn, f"CREATE DATABASE {clone} CLONE {db}")
    run_all(conn, f"CREATE OR REPLACE DATABASE {clone} CLONE {db}")
    assert rows(conn, f"SELECT COUNT(*) FROM {clone}.TASKS.SRC") == [(4,)]
    with pytest.raises(ProgrammingError, match="does not exist"):
        run_all(conn, f"CREATE DATABASE {db}_OTHER CLONE NO_SUCH_DATABASE")


# -------------------------------------------------------------------------------------------------- seed


def test_seed_builds_the_001_objects_idempotently(connect: Connect, url: str) -> None:
    from sandbox.snowflake.seed import ROOT, seed

    seed(url)
    seed(url)  # a second run rebuilds the same state
    conn = connect()
    (root,) = dicts(conn, "SHOW TASKS LIKE 'TASK_BRONZE_TO_SILVER_POS' IN SCHEMA DEV_STAGING.TASKS")
    assert (root["state"], root["last_suspended_reason"]) == ("suspended", "FAILED_AND_AUTO_SUSPENDED")
    graph = {t["name"]: t["state"] for t in dicts(conn, "SHOW TASKS IN SCHEMA DEV_STAGING.TASKS")}
    assert graph == {
        "TASK_BRONZE_TO_SILVER_POS": "suspended",
        "TASK_LOAD_DIM_CUSTOMER": "started",
        "TASK_LOAD_FACT_SALES": "started",
    }
    last = dicts(
        conn,
        "SELECT state, error_message FROM TABLE(DEV_STAGING.INFORMATION_SCHEMA.TASK_HISTORY("
        "TASK_NAME => 'TASK_BRONZE_TO_SILVER_POS', RESULT_LIMIT => 3)) ORDER BY scheduled_time DESC",
    )
    assert [r["STATE"] for r in last] == ["FAILED"] * 3

    assert rows(
        conn,
        "SELECT COUNT(*), COUNT(DISTINCT DATE(transaction_ts)), MAX(load_timestamp) IS NOT NULL "
        "FROM DEV_RAW.BRONZE.raw_pos",
    ) == [(37, 5, True)]
    assert has_data(conn, "DEV_STAGING.STREAMS.stream_pos_changes")  # the 5th's rows wait for the graph
    assert pipe_status(conn, "DEV_RAW.BRONZE.pipe_pos_data")["executionState"] == "RUNNING"
    paused = pipe_status(conn, "DEV_RAW.BRONZE.pipe_inventory_data")
    assert (paused["executionState"], paused["pendingFileCount"]) == ("PAUSED", 1)
    assert [r[0] for r in rows(conn, "LIST @DEV_RAW.BRONZE.stage_pos_data")] == [
        f"stage_pos_data/pos_2024-01-0{d}.csv" for d in range(1, 6)
    ]
    (wh,) = dicts(conn, "SHOW WAREHOUSES LIKE 'WH_TRANS'")
    assert wh["size"] == "Medium"

    assert rows(conn, "SELECT COUNT(*), SUM(IFF(is_valid, 0, 1)) FROM DEV_STAGING.SILVER.stg_pos") == [(30, 1)]
    assert rows(conn, "SELECT COUNT(*) FROM DEV_DW.FACTS.fact_sales") == [(29,)]
    assert rows(
        conn, "SELECT COUNT(*), SUM(IFF(is_current, 1, 0)) FROM DEV_DW.DIMENSIONS.dim_customer WHERE customer_id = 3"
    ) == [(2, 1)]
    overlaps = (
        "SELECT customer_id FROM DEV_DW.DIMENSIONS.dim_customer GROUP BY customer_id "
        "HAVING COUNT(*) > 1 AND SUM(CASE WHEN is_current = TRUE THEN 1 ELSE 0 END) != 1"
    )
    assert rows(conn, overlaps) == []

    # the auto-suspended graph is retried: the root and the later tasks load the 5th
    run_all(conn, f"EXECUTE TASK {ROOT} RETRY LAST")
    assert rows(conn, "SELECT COUNT(*) FROM DEV_STAGING.SILVER.stg_pos") == [(37,)]
    assert rows(conn, "SELECT COUNT(*) FROM DEV_DW.FACTS.fact_sales") == [(36,)]
    assert not has_data(conn, "DEV_STAGING.STREAMS.stream_pos_changes")
    seed(url)  # leave the seed's state for whoever runs next


def test_reset_forgets_the_layers_objects_and_histories(connect: Connect, url: str, db: str) -> None:
    from sandbox.snowflake.seed import seed

    conn = connect(warehouse="WH_TRANS")
    root, _child = make_graph(conn, db)
    run_all(conn, f"EXECUTE TASK {root}")
    assert rows(conn, "SELECT CURRENT_WAREHOUSE()") == [("WH_TRANS",)]
    assert hook(url, "reset") == {"ok": True}
    assert dicts(conn, f"SHOW TASKS IN DATABASE {db}") == []
    assert history(conn, db) == []
    assert rows(conn, f"SELECT COUNT(*) FROM {db}.TASKS.DST") == [(3,)]  # fakesnow's tables stay
    with pytest.raises(urllib.error.HTTPError) as refused:
        hook(url, "tasks/fail-next", task=root)
    assert refused.value.code == 400
    seed(url)  # leave the seed's state for whoever runs next
