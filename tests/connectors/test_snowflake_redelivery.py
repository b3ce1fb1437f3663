"""Re-delivery of every Snowflake verb and target kind with a real kill: the first worker (a forked process) is
SIGKILLed right after the verb's side-effect statement; a second execute with the same action id (attempt 2)
finds the statement in the query history by its QUERY_TAG, does only what is left, and verify passes.

The objects are seeded once for the module, in a database of its own, one schema (or warehouse, or environment)
per case, so the cases never see each other's statements or rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from connectors.base import ExecutionContext, TargetRef
from connectors.snowflake import SnowflakeConnector
from connectors.snowflake.client import fetch
from tests.connectors.killed_worker import execute_killed, redelivery
from tests.connectors.sf_support import Sql, emulator_hook, sf_connector, tagged
from tests.connectors.sf_support import sf_url as sf_url  # the fixture, requested by name

SMALL = ("XSMALL", "X-Small")


@dataclass
class World:
    """The module's seeded objects: its database, a connector on it, and ``sql`` in a setup session."""

    db: str
    env: str  # the prefix of the environment to clone; clones take ``env`` with S replaced by C
    connect: Callable[..., SnowflakeConnector]
    sql: Sql
    targets: dict[str, TargetRef] = field(default_factory=dict)

    def count(self, table: str) -> int:
        return int(self.sql(f"SELECT COUNT(*) AS N FROM {self.db}.{table}")[0]["n"])

    def size(self, warehouse: str) -> str:
        return str(self.sql("SHOW WAREHOUSES LIKE %s", (warehouse,))[0]["size"])


def _graph(w: World, schema: str, *, started: bool) -> None:
    """ROOT -> CHILD logging into ``<schema>.LOG``; resumed (children first) when ``started``."""
    db = w.db
    w.sql(f"CREATE SCHEMA {db}.{schema}")
    w.sql(f"CREATE TABLE {db}.{schema}.LOG (WHO VARCHAR)")
    w.sql(f"CREATE TASK {db}.{schema}.ROOT SCHEDULE = '60 MINUTE' AS INSERT INTO {db}.{schema}.LOG VALUES ('root')")
    w.sql(f"CREATE TASK {db}.{schema}.CHILD AFTER {db}.{schema}.ROOT AS INSERT INTO {db}.{schema}.LOG VALUES ('c')")
    if started:
        w.sql(f"ALTER TASK {db}.{schema}.CHILD RESUME")
        w.sql(f"ALTER TASK {db}.{schema}.ROOT RESUME")


def _pipe(w: World, hook: Callable[..., Any], schema: str, *, paused: bool) -> None:
    """A raw table fed by a pipe from an internal stage; when ``paused``, one 2-row file waits in the stage."""
    db = w.db
    w.sql(f"CREATE SCHEMA {db}.{schema}")
    w.sql(f"CREATE TABLE {db}.{schema}.RAW_POS (ID INTEGER, CUSTOMER_ID INTEGER)")
    w.sql(f"CREATE STAGE {db}.{schema}.STAGE_POS")
    w.sql(
        f"CREATE PIPE {db}.{schema}.PIPE_POS AS COPY INTO {db}.{schema}.RAW_POS FROM @{db}.{schema}.STAGE_POS "
        "FILE_FORMAT = (TYPE = CSV)"
    )
    if paused:
        w.sql(f"ALTER PIPE {db}.{schema}.PIPE_POS SET PIPE_EXECUTION_PAUSED = TRUE")
        file = {"stage": f"{db}.{schema}.STAGE_POS", "name": "pos_2024-01-01.csv", "content": "1,10\n2,11\n"}
        hook("stages/put", file)


def _seed(w: World, hook: Callable[..., Any]) -> None:
    db, sql = w.db, w.sql
    _graph(w, "RESUME_T", started=False)
    _graph(w, "PAUSE_T", started=True)
    _graph(w, "RERUN_T", started=False)
    # a started graph whose last run failed at the child: resume-task retries it (RETRY LAST)
    _graph(w, "RETRY_T", started=True)
    hook("tasks/fail-next", {"task": f"{db}.RETRY_T.CHILD", "times": 1, "error": "boom"})
    root = TargetRef("sf.retry_setup", "task", {"database": db, "schema": "RETRY_T", "name": "ROOT"})
    rerun = w.connect().verb("rerun")
    rerun.execute(root, rerun.params_model(), ExecutionContext(action_id=f"setup-{db}-retry"))
    _pipe(w, hook, "RESUME_P", paused=True)
    _pipe(w, hook, "PAUSE_P", paused=False)
    # a procedure counting its calls, run on the connection's warehouse scaled for the action
    sql(f"CREATE SCHEMA {db}.PROC")
    sql(f"CREATE TABLE {db}.PROC.CALLS (N INTEGER)")
    sql(
        f"CREATE PROCEDURE {db}.PROC.SP_LOAD() RETURNS VARCHAR LANGUAGE SQL AS $$ BEGIN "
        f"INSERT INTO {db}.PROC.CALLS VALUES (1); RETURN 'loaded'; END $$"
    )
    # raw: a stage with two files, loaded with force (only the query-history guard stops a second load)
    sql(f"CREATE SCHEMA {db}.RAW")
    sql(f"CREATE TABLE {db}.RAW.RAW_POS (ID INTEGER, CUSTOMER_ID INTEGER)")
    sql(f"CREATE FILE FORMAT {db}.RAW.CSV_FORMAT TYPE = CSV")
    sql(f"CREATE STAGE {db}.RAW.STAGE_POS")
    for day, rows in (("2024-01-01", "1,10\n2,11\n"), ("2024-01-02", "3,12\n")):
        hook("stages/put", {"stage": f"{db}.RAW.STAGE_POS", "name": f"pos_{day}.csv", "content": rows})
    # facts: a period deleted and reloaded by a procedure in one transaction
    sql(f"CREATE SCHEMA {db}.FACTS")
    sql(f"CREATE TABLE {db}.FACTS.SOURCE (SALE_DATE DATE, AMOUNT INTEGER)")
    sql(f"CREATE TABLE {db}.FACTS.FACT_SALES (SALE_DATE DATE, AMOUNT INTEGER)")
    sql(f"INSERT INTO {db}.FACTS.SOURCE VALUES ('2024-01-01', 5), ('2024-01-02', 7)")
    sql(f"INSERT INTO {db}.FACTS.FACT_SALES VALUES ('2024-01-01', 999)")
    sql(
        f"CREATE PROCEDURE {db}.FACTS.SP_LOAD_FACT() RETURNS VARCHAR LANGUAGE SQL AS $$ BEGIN "
        f"INSERT INTO {db}.FACTS.FACT_SALES SELECT S.SALE_DATE, S.AMOUNT FROM {db}.FACTS.SOURCE S WHERE NOT EXISTS "
        f"(SELECT 1 FROM {db}.FACTS.FACT_SALES F WHERE F.SALE_DATE = S.SALE_DATE); RETURN 'ok'; END $$"
    )
    # an environment of two databases to clone
    env = w.env
    for layer, n in (("RAW", 3), ("DW", 2)):
        sql(f"CREATE DATABASE IF NOT EXISTS {env}_{layer}")
        sql(f"CREATE SCHEMA IF NOT EXISTS {env}_{layer}.CORE")
        sql(f"CREATE TABLE {env}_{layer}.CORE.T (ID INTEGER)")
        sql(f"INSERT INTO {env}_{layer}.CORE.T VALUES " + ", ".join(f"({i})" for i in range(n)))

    def obj(schema: str, name: str) -> dict[str, str]:
        return {"database": db, "schema": schema, "name": name}

    w.targets.update(
        {
            "resume-task/task": TargetRef("sf.resume", "task", obj("RESUME_T", "CHILD")),
            "resume-task/task-retry": TargetRef("sf.retry", "task", obj("RETRY_T", "ROOT")),
            "resume-task/pipe": TargetRef("sf.resume_pipe", "pipe", obj("RESUME_P", "PIPE_POS")),
            "pause/task": TargetRef("sf.pause", "task", obj("PAUSE_T", "CHILD")),
            "pause/pipe": TargetRef("sf.pause_pipe", "pipe", obj("PAUSE_P", "PIPE_POS")),
            "rerun/task": TargetRef("sf.rerun", "task", obj("RERUN_T", "ROOT")),
            "rerun/procedure": TargetRef("sf.proc", "procedure", obj("PROC", "SP_LOAD")),
            "backfill/raw": TargetRef(
                "sf.raw",
                "table",
                {**obj("RAW", "RAW_POS"), "stage": f"{db}.RAW.STAGE_POS", "file_format": f"{db}.RAW.CSV_FORMAT"},
            ),
            "backfill/facts": TargetRef(
                "sf.facts",
                "table",
                {**obj("FACTS", "FACT_SALES"), "date_column": "SALE_DATE", "procedure": f"{db}.FACTS.SP_LOAD_FACT"},
            ),
            "scale-warehouse": TargetRef("sf.wh", "warehouse", {"name": f"WH_SCALE_{db}"}),
            "clone-environment": TargetRef("sf.env", "environment", {"databases": [f"{env}_RAW", f"{env}_DW"]}),
        }
    )


@pytest.fixture(scope="module")
def world(sf_url: str) -> Iterator[World]:
    short = uuid.uuid4().hex[:8].upper()
    db = f"CP_K_{short}"

    def connect(**config: Any) -> SnowflakeConnector:
        return sf_connector(sf_url, db, **config)

    def sql(statement: str, params: tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
        with connect().session("test setup", tag="test-setup") as conn:
            return fetch(conn, statement, params)

    def hook(name: str, payload: dict[str, Any]) -> Any:
        return emulator_hook(sf_url, name, payload)

    sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    w = World(db=db, env=f"KS{short}", connect=connect, sql=sql)
    warehouses = (f"WH_SCALE_{db}", f"WH_WORK_{db}")
    for wh in warehouses:
        sql(f"CREATE WAREHOUSE {wh} WITH WAREHOUSE_SIZE = 'XSMALL'")
    try:
        _seed(w, hook)
        yield w
    finally:
        for wh in warehouses:
            sql(f"DROP WAREHOUSE IF EXISTS {wh}")


# ------------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    """One verb on one target kind: its params, the log line the first worker dies at (printed right after
    the statement it names), the statement's text in the history (ILIKE) and how often it ran once killed
    (``before``) and in the end (``after``: once per object, never twice), and a check of the effect."""

    verb: str
    params: dict[str, Any]
    at: Callable[[World], str]
    like: str
    before: int
    after: int
    effect: Callable[[World], None]
    config: dict[str, Any] = field(default_factory=dict)


def _logged(schema: str, runs: dict[str, int]) -> Callable[[World], None]:
    """The graph's tasks ran ``runs`` times each: once, not once per delivery."""

    def check(w: World) -> None:
        rows = w.sql(f"SELECT WHO, COUNT(*) AS N FROM {w.db}.{schema}.LOG GROUP BY 1")
        assert {r["who"]: int(r["n"]) for r in rows} == runs

    return check


def _started(schema: str, state: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        rows = w.sql(f"SHOW TASKS IN SCHEMA {w.db}.{schema}")
        assert {r["name"]: r["state"] for r in rows} == {"ROOT": state, "CHILD": state}

    return check


def _rows(table: str, n: int) -> Callable[[World], None]:
    return lambda w: _eq(w.count(table), n)


def _eq(have: Any, want: Any) -> None:
    assert have == want


def _called_on_restored_warehouse(w: World) -> None:
    assert w.count("PROC.CALLS") == 1
    assert w.size(f"WH_WORK_{w.db}") in SMALL  # scaled for the action and back, though the first worker died


def _facts(w: World) -> None:
    got = w.sql(f"SELECT SALE_DATE, AMOUNT FROM {w.db}.FACTS.FACT_SALES ORDER BY 1")
    assert [int(r["amount"]) for r in got] == [5, 7]


def _clone_prefix(w: World) -> str:
    return "KC" + w.env[2:]


def _scaled(w: World) -> None:
    assert w.size(f"WH_SCALE_{w.db}") in ("XLARGE", "X-Large")


def _clones(w: World) -> None:
    for layer, n in (("RAW", 3), ("DW", 2)):
        assert int(w.sql(f"SELECT COUNT(*) AS N FROM {_clone_prefix(w)}_{layer}.CORE.T")[0]["n"]) == n


CASES: dict[str, Case] = {
    # children are resumed before the root: killed after the child, the re-delivery resumes only the root
    "resume-task/task": Case(
        "resume-task", {}, lambda w: f"resumed {w.db}.RESUME_T.CHILD", "ALTER TASK%RESUME", 1, 2,
        _started("RESUME_T", "started"),
    ),
    # a failed run retried: the re-delivery follows the retried run instead of retrying again
    "resume-task/task-retry": Case(
        "resume-task", {"mode": "retry_last"}, lambda w: "retried the failed run", "%RETRY LAST%", 1, 1,
        _logged("RETRY_T", {"root": 1, "c": 1}),
    ),
    "resume-task/pipe": Case(
        "resume-task", {}, lambda w: "refreshed pipe", "ALTER PIPE%REFRESH", 1, 1, _rows("RESUME_P.RAW_POS", 2)
    ),
    # the root is suspended first: killed after it, the re-delivery suspends only the child
    "pause/task": Case(
        "pause", {}, lambda w: f"suspended {w.db}.PAUSE_T.ROOT", "ALTER TASK%SUSPEND", 1, 2,
        _started("PAUSE_T", "suspended"),
    ),
    "pause/pipe": Case(
        "pause", {}, lambda w: "paused pipe", "ALTER PIPE%PAUSED = TRUE", 1, 1, _rows("PAUSE_P.RAW_POS", 0)
    ),
    "rerun/task": Case(
        "rerun", {}, lambda w: "started a run of", "EXECUTE TASK%", 1, 1, _logged("RERUN_T", {"root": 1})
    ),
    "rerun/procedure": Case(
        "rerun", {"warehouse_size": "LARGE"}, lambda w: "called ", "CALL %SP_LOAD%", 1, 1,
        _called_on_restored_warehouse, config={"warehouse": "WH_WORK"},
    ),
    "backfill/raw": Case(
        "backfill", {"files": ["pos_2024-01-01.csv"], "force": True}, lambda w: "copied files into", "COPY INTO%",
        1, 1, _rows("RAW.RAW_POS", 2),
    ),
    "backfill/facts": Case(
        "backfill", {"from_date": "2024-01-01", "to_date": "2024-01-31"}, lambda w: "called ", "DELETE FROM%",
        1, 1, _facts,
    ),
    "scale-warehouse": Case(
        "scale-warehouse", {"warehouse_size": "XLARGE"}, lambda w: "set to XLARGE", "ALTER WAREHOUSE%", 1, 1, _scaled
    ),
    # two databases: killed after the first clone, the re-delivery clones only the second
    "clone-environment": Case(
        "clone-environment", {"prefix": "PREFIX"}, lambda w: "cloned 1 database", "CREATE DATABASE%CLONE%", 1, 2,
        _clones,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_worker_killed_after_the_statement_redelivery_completes_once(world: World, name: str) -> None:
    case = CASES[name]
    config = {k: f"{v}_{world.db}" for k, v in case.config.items()}
    connector = world.connect(**config)
    target = world.targets[name]
    params_in = dict(case.params)
    if case.verb == "clone-environment":
        params_in["prefix"] = _clone_prefix(world)
    verb = connector.verb(case.verb)
    params = verb.params_model.model_validate(params_in)
    plan = verb.plan(target, params)
    action = f"kill-{name.replace('/', '-')}-{uuid.uuid4().hex[:10]}"

    execute_killed(action, plan, lambda context: verb.execute(target, params, context), at=case.at(world))
    sent = tagged(world.sql, world.db, action, case.like)
    assert [r["execution_status"] for r in sent] == ["SUCCESS"] * case.before  # sent and done before the kill

    outcome = verb.execute(target, params, redelivery(action, plan))
    assert outcome.already_done is (case.before == case.after)
    assert len(tagged(world.sql, world.db, action, case.like)) == case.after  # once per object, never again
    case.effect(world)
    verification = verb.verify(target, params, outcome)
    assert verification.ok, verification.summary
