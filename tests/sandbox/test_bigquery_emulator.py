"""The sandbox BigQuery: local-bigquery behind the byte-estimate proxy, spoken to by the real client over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core.exceptions import BadRequest
from google.cloud import bigquery

from sandbox.bigquery.proxy import Sizes, estimate_bytes, partition_id, query_dates
from sandbox.bigquery.seed import PARTITION_BYTES, SeedObjects, client_for, declare_bytes, seed
from sandbox.bigquery.server import bigquery_ping, bigquery_running, start_bigquery, stop_bigquery
from sandbox.bigquery.venv import BIGQUERY_VENV, EXTENSIONS, duckdb_home
from tests.bigquery_sandbox import SandboxBigQuery, sandbox_bigquery, seeded


@pytest.fixture(scope="module")
def bq() -> SandboxBigQuery:
    return sandbox_bigquery()


@pytest.fixture
def objects(bq: SandboxBigQuery) -> Iterator[SeedObjects]:
    with seeded(bq) as objects:
        yield objects


def rows(client: bigquery.Client, sql: str, params: list | None = None) -> list[tuple]:
    config = bigquery.QueryJobConfig(query_parameters=params or [])
    return [tuple(row) for row in client.query(sql, job_config=config).result(timeout=60)]


def test_duckdb_extensions_are_installed_offline_in_the_venv_home() -> None:
    installed = list(duckdb_home(BIGQUERY_VENV.path).glob(".duckdb/extensions/*/*/*.duckdb_extension"))
    assert sorted(path.name.split(".")[0] for path in installed) == sorted(EXTENSIONS)
    assert BIGQUERY_VENV.is_ready()


def test_seed_creates_the_002_objects_once(bq: SandboxBigQuery, objects: SeedObjects) -> None:
    client = client_for(bq.url, bq.project)
    again = seed(bq.url, bq.project, prefix=objects.raw.removesuffix("raw"))
    assert again.raw == objects.raw
    assert rows(client, f"SELECT COUNT(*) FROM `{objects.raw}.packages` WHERE package_id IS NULL") == [(2,)]
    duplicates = rows(
        client,
        f"SELECT package_id, COUNT(*) AS cnt FROM `{objects.raw}.packages` GROUP BY package_id "
        "HAVING cnt > 1 AND package_id IS NOT NULL ORDER BY 1",
    )
    assert [pid for pid, _ in duplicates] == objects.duplicate_package_ids
    orphans = rows(
        client,
        f"SELECT p.package_id FROM `{objects.raw}.packages` p LEFT JOIN `{objects.raw}.customers` c "
        "ON p.sender_customer_id = c.customer_id WHERE c.customer_id IS NULL ORDER BY 1",
    )
    assert [pid for (pid,) in orphans] == objects.orphan_packages
    partitions = rows(
        client,
        f"SELECT partition_id, total_rows FROM `{objects.raw}.INFORMATION_SCHEMA.PARTITIONS` "
        "WHERE table_name = 'tracking_events' ORDER BY 1",
    )
    assert partitions == [(f"{day:%Y%m%d}", objects.events_on(day)) for day in objects.days]
    facts = rows(client, f"SELECT delivery_date FROM `{objects.marts}.fact_deliveries` ORDER BY 1")
    assert [day for (day,) in facts] == [day for day in objects.days if day != objects.missing_day]
    assert client.get_table(f"{objects.marts}.mv_daily_volume").table_type == "MATERIALIZED_VIEW"
    refreshed = rows(
        client, f"SELECT table_name, last_refresh_time FROM `{objects.marts}.INFORMATION_SCHEMA.MATERIALIZED_VIEWS`"
    )
    assert [name for name, _ in refreshed] == ["mv_daily_volume"]


def test_dry_run_reports_the_declared_bytes_of_the_partition_it_reads(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    client = client_for(bq.url, bq.project)
    day = objects.days[0]
    one_day = client.query(
        objects.load_query,
        job_config=bigquery.QueryJobConfig(
            dry_run=True, query_parameters=[bigquery.ScalarQueryParameter("partition_date", "DATE", day)]
        ),
    )
    assert one_day.total_bytes_processed == PARTITION_BYTES
    whole = client.query(
        f"SELECT COUNT(*) FROM `{objects.raw}.tracking_events`", job_config=bigquery.QueryJobConfig(dry_run=True)
    )
    assert whole.total_bytes_processed == PARTITION_BYTES * len(objects.days)
    undeclared = client.query("SELECT 1", job_config=bigquery.QueryJobConfig(dry_run=True))
    assert undeclared.total_bytes_processed == 0


def test_a_job_over_its_maximum_bytes_billed_is_refused_and_changes_nothing(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    client = client_for(bq.url, bq.project)
    table = f"{objects.raw}.tracking_events"
    before = rows(client, f"SELECT COUNT(*) FROM `{table}`")
    config = bigquery.QueryJobConfig(maximum_bytes_billed=PARTITION_BYTES - 1)
    with pytest.raises(BadRequest) as refused:
        client.query(f"DELETE FROM `{table}` WHERE TRUE", job_config=config).result(timeout=60)
    assert refused.value.errors[0]["reason"] == "bytesBilledLimitExceeded"
    assert rows(client, f"SELECT COUNT(*) FROM `{table}`") == before
    allowed = bigquery.QueryJobConfig(
        maximum_bytes_billed=PARTITION_BYTES,
        query_parameters=[bigquery.ScalarQueryParameter("d", "DATE", objects.days[0])],
    )
    client.query(f"DELETE FROM `{table}` WHERE event_date = @d", job_config=allowed).result(timeout=60)
    assert rows(client, f"SELECT COUNT(*) FROM `{table}`") == [(before[0][0] - objects.events_on(objects.days[0]),)]


def test_the_hook_validates_and_lists_declared_sizes(bq: SandboxBigQuery) -> None:
    declare_bytes(bq.url, "hookcheck", "t", 123, dt.date(2026, 1, 2))
    with urllib.request.urlopen(f"{bq.url}/_emulator/bytes", timeout=10) as response:
        sizes = json.loads(response.read())
    assert sizes["hookcheck.t"]["partitions"]["20260102"] == 123
    bad = urllib.request.Request(
        f"{bq.url}/_emulator/bytes", data=json.dumps({"dataset": "a;b", "table": "t", "bytes": 1}).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=10)
    assert refused.value.code == 400


def test_time_travel_materialized_view_refresh_and_labels_work_over_the_wire(
    bq: SandboxBigQuery, objects: SeedObjects
) -> None:
    client = client_for(bq.url, bq.project)
    table = f"{objects.raw}.customers"
    before = dt.datetime.now(dt.UTC)
    client.query(f"DELETE FROM `{table}` WHERE TRUE").result(timeout=60)
    at = [bigquery.ScalarQueryParameter("ts", "TIMESTAMP", before)]
    assert rows(client, f"SELECT COUNT(*) FROM `{table}` FOR SYSTEM_TIME AS OF @ts", at) == [(5,)]
    view = f"{objects.marts}.mv_daily_volume"
    last_refresh = f"SELECT last_refresh_time FROM `{objects.marts}.INFORMATION_SCHEMA.MATERIALIZED_VIEWS`"
    assert rows(client, last_refresh) == [(None,)]  # the seed's view was never refreshed: stale
    job = client.query(
        f"CALL BQ.REFRESH_MATERIALIZED_VIEW('{view}')", job_config=bigquery.QueryJobConfig(labels={"cp_action": "x1"})
    )
    job.result(timeout=60)
    assert client.get_job(job.job_id).labels == {"cp_action": "x1"}
    assert rows(client, last_refresh)[0][0] >= before


def test_estimate_prunes_to_the_dates_a_query_names() -> None:
    sizes: Sizes = {
        "raw.events": {"bytes": None, "partitions": {"20261201": 10, "20261202": 20}},
        "raw.c": {"bytes": 5},
    }
    param = [{"parameterType": {"type": "DATE"}, "parameterValue": {"value": "2026-12-02"}}]
    assert estimate_bytes(sizes, "SELECT * FROM `proj.raw.events` WHERE d = @d", param) == 20
    assert estimate_bytes(sizes, "SELECT * FROM raw.events WHERE d = '2026-12-01'") == 10
    assert estimate_bytes(sizes, "SELECT * FROM raw.events JOIN raw.c USING (x)") == 35
    assert estimate_bytes(sizes, "SELECT * FROM raw.events_v2") == 0
    assert query_dates("x", [{"parameterValue": {"arrayValues": [{"value": "2026-01-01"}]}}]) == {"20260101"}
    assert partition_id("2026-12-01") == "20261201"
    with pytest.raises(ValueError):
        partition_id("yesterday")


def test_start_on_a_root_of_its_own_answers_keeps_declared_sizes_across_a_restart_and_stops(tmp_path: Path) -> None:
    from sandbox.services import free_port

    port = free_port()
    server = start_bigquery(tmp_path, port)
    try:
        assert bigquery_running(tmp_path)
        assert start_bigquery(tmp_path, port) == server  # reused, not started twice
        declare_bytes(server.url, "kept", "t", 7)
        assert stop_bigquery(tmp_path)
        assert not bigquery_ping(server.host, port)
        start_bigquery(tmp_path, port)
        with urllib.request.urlopen(f"{server.url}/_emulator/bytes", timeout=10) as response:
            assert json.loads(response.read())["kept.t"]["bytes"] == 7
    finally:
        stop_bigquery(tmp_path)
    assert not bigquery_running(tmp_path)
    assert not stop_bigquery(tmp_path)
