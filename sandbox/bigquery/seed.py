"""The seed-002 logistics objects in the sandbox BigQuery, created idempotently (what exists is left as it is).

    <prefix>raw.customers        5 customers
    <prefix>raw.packages         packages with 2 NULL package_ids, 2 duplicated ids and 2 orphan senders
                                 (the runbook's null, duplicate and referential-integrity queries find them)
    <prefix>raw.tracking_events  partitioned by event_date over the last 7 days (yesterday back)
    <prefix>marts.fact_deliveries  partitioned by delivery_date, loaded from tracking_events for those days
                                 except one (``missing_day``): the gap a backfill fills (``load_query``)
    <prefix>marts.mv_daily_volume  a materialized view over raw.packages, stale: packages arrived after it was
                                 built

and byte sizes declared to the byte-estimate hook (sandbox/bigquery/proxy.py) so dry runs cost something:
``PARTITION_BYTES`` per tracking_events partition. ``prefix`` gives a test datasets of its own.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

DAYS = 7
PARTITION_BYTES = 100 * 2**30  # one day of tracking events (the whole seed stays under the 1 TiB default cap)
FACT_PARTITION_BYTES = 2**20
PACKAGES_BYTES = 40 * 2**30
CUSTOMERS_BYTES = 2 * 2**30
TIMEOUT_S = 60.0
CUSTOMERS = ("C001", "C002", "C003", "C004", "C005")


@dataclass(frozen=True)
class SeedObjects:
    """What ``seed`` created: the datasets' names and the facts tests compare with."""

    raw: str
    marts: str
    days: list[date]
    missing_day: date
    load_query: str
    null_package_ids: int = 2
    duplicate_package_ids: list[str] = field(default_factory=lambda: ["P003", "P005"])
    orphan_packages: list[str] = field(default_factory=lambda: ["P007", "P008"])

    def events_on(self, day: date) -> int:
        """How many tracking events the seed put in ``day``'s partition."""
        return 2 + self.days.index(day)


def client_for(url: str, project: str) -> bigquery.Client:
    """The real client pointed at the emulator, anonymously (what the connector does for an emulator)."""
    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=url)
    )


def declare_bytes(url: str, dataset: str, table: str, size: int, partition: date | None = None) -> None:
    """Declare a table's (or one date partition's) size to the byte-estimate hook."""
    body: dict[str, object] = {"dataset": dataset, "table": table, "bytes": size}
    if partition is not None:
        body["partition"] = partition.isoformat()
    request = urllib.request.Request(
        f"{url}/_emulator/bytes", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        response.read()


def _run(client: bigquery.Client, sql: str) -> None:
    client.query(sql, timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)


def _exists(client: bigquery.Client, table: str) -> bool:
    try:
        client.get_table(table, timeout=TIMEOUT_S)
    except NotFound:
        return False
    return True


def _ts(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.strftime('%Y-%m-%d %H:%M:%S')}+00'"


def _packages_rows(now: datetime) -> list[str]:
    # (package_id, sender, recipient, weight, status, created hours ago)
    packages = [
        ("P001", "C001", "C002", 1.2, "delivered", 100), ("P002", "C002", "C003", 0.4, "delivered", 90),
        ("P003", "C003", "C001", 3.1, "in_transit", 50), ("P003", "C003", "C001", 3.1, "in_transit", 50),
        ("P004", "C004", "C005", 2.2, "in_transit", 40), ("P005", "C005", "C004", 0.9, "created", 30),
        ("P005", "C005", "C004", 0.9, "created", 30), ("P006", "C001", "C003", 5.0, "created", 20),
        ("P007", "C998", "C002", 1.1, "created", 10), ("P008", "C999", "C003", 7.5, "created", 5),
        (None, "C002", "C001", 0.3, "created", 4), (None, "C004", "C001", 0.8, "created", 3),
    ]  # fmt: skip
    return [
        f"({'NULL' if pid is None else repr(pid)}, '{sender}', '{recipient}', {weight}, '{status}', "
        f"{_ts(now - timedelta(hours=hours))}, {_ts(now)})"
        for pid, sender, recipient, weight, status, hours in packages
    ]


def seed(url: str, project: str, *, prefix: str = "") -> SeedObjects:
    """Create the 002 objects (datasets ``<prefix>raw`` and ``<prefix>marts``) where missing; declare sizes."""
    client = client_for(url, project)
    raw, marts = f"{prefix}raw", f"{prefix}marts"
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=back) for back in range(DAYS, 0, -1)]
    missing_day = days[-3]
    load_query = (
        "SELECT event_date AS delivery_date, COUNT(DISTINCT package_id) AS packages, COUNT(*) AS events, "
        f"CURRENT_TIMESTAMP() AS _loaded_at FROM `{raw}.tracking_events` "
        "WHERE event_date = @partition_date GROUP BY event_date"
    )
    objects = SeedObjects(raw=raw, marts=marts, days=days, missing_day=missing_day, load_query=load_query)
    now = datetime.now(UTC).replace(microsecond=0)
    for dataset in (raw, marts):
        _run(client, f"CREATE SCHEMA IF NOT EXISTS `{dataset}`")
    if not _exists(client, f"{raw}.customers"):
        _run(client, f"CREATE TABLE `{raw}.customers` (customer_id STRING, name STRING, _loaded_at TIMESTAMP)")
        values = ", ".join(f"('{cid}', 'Customer {cid}', {_ts(now)})" for cid in CUSTOMERS)
        _run(client, f"INSERT INTO `{raw}.customers` VALUES {values}")
    if not _exists(client, f"{raw}.packages"):
        _run(
            client,
            f"CREATE TABLE `{raw}.packages` (package_id STRING, sender_customer_id STRING, "
            "recipient_customer_id STRING, weight_kg FLOAT64, status STRING, created_at TIMESTAMP, "
            "_loaded_at TIMESTAMP)",
        )
        _run(client, f"INSERT INTO `{raw}.packages` VALUES {', '.join(_packages_rows(now)[:-2])}")
    if not _exists(client, f"{raw}.tracking_events"):
        _run(
            client,
            f"CREATE TABLE `{raw}.tracking_events` (event_id STRING, package_id STRING, event_type STRING, "
            "event_timestamp TIMESTAMP, event_date DATE, _loaded_at TIMESTAMP) PARTITION BY event_date",
        )
        rows = [
            f"('E{day:%Y%m%d}-{n}', 'P00{1 + n % 6}', '{'delivered' if n % 2 else 'scanned'}', "
            f"TIMESTAMP '{day.isoformat()} 1{n % 10}:00:00+00', DATE '{day.isoformat()}', {_ts(now)})"
            for day in days
            for n in range(objects.events_on(day))
        ]
        _run(client, f"INSERT INTO `{raw}.tracking_events` VALUES {', '.join(rows)}")
    if not _exists(client, f"{marts}.fact_deliveries"):
        _run(
            client,
            f"CREATE TABLE `{marts}.fact_deliveries` (delivery_date DATE, packages INT64, events INT64, "
            "_loaded_at TIMESTAMP) PARTITION BY delivery_date",
        )
        loaded = [day for day in days if day != missing_day]
        dates = ", ".join(f"DATE '{day.isoformat()}'" for day in loaded)
        _run(
            client,
            f"INSERT INTO `{marts}.fact_deliveries` SELECT event_date, COUNT(DISTINCT package_id), COUNT(*), "
            f"CURRENT_TIMESTAMP() FROM `{raw}.tracking_events` WHERE event_date IN ({dates}) GROUP BY event_date",
        )
    if not _exists(client, f"{marts}.mv_daily_volume"):
        _run(
            client,
            f"CREATE MATERIALIZED VIEW `{marts}.mv_daily_volume` AS SELECT DATE(created_at) AS day, "
            f"COUNT(*) AS packages FROM `{raw}.packages` GROUP BY day",
        )
        # Two late packages arrive after the view was built: it is stale until refreshed.
        _run(client, f"INSERT INTO `{raw}.packages` VALUES {', '.join(_packages_rows(now)[-2:])}")
    for day in days:
        declare_bytes(url, raw, "tracking_events", PARTITION_BYTES, day)
        declare_bytes(url, marts, "fact_deliveries", FACT_PARTITION_BYTES, day)
    declare_bytes(url, raw, "packages", PACKAGES_BYTES)
    declare_bytes(url, raw, "customers", CUSTOMERS_BYTES)
    return objects
