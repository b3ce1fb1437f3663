"""The seed-001 retail warehouse on the Snowflake emulator, built through the real connector like any client.

Idempotent: every object is created with ``OR REPLACE`` (or ``IF NOT EXISTS`` for databases and schemas), so a
second run rebuilds the same state. Deterministic data: POS sales of 2024-01-01 .. 2024-01-05 (one CSV file a day
in ``@DEV_RAW.BRONZE.stage_pos_data``), 8 customers, January 2024 in ``dim_date``. What it leaves behind:

- ``WH_TRANS`` (MEDIUM); DEV_RAW.BRONZE / DEV_STAGING.{TASKS,STREAMS,SILVER} / DEV_DW.{DIMENSIONS,FACTS};
- ``DEV_RAW.BRONZE.raw_pos`` (load_timestamp = load time) loaded by the running pipe ``pipe_pos_data`` (files of
  the 1st to the 4th by REFRESH, the 5th arrived later and was auto-ingested), file format ``csv_format``;
- ``DEV_STAGING.STREAMS.stream_pos_changes`` on raw_pos, holding the 5th's rows (the failed runs below did not
  consume them);
- the graph ``DEV_STAGING.TASKS.task_bronze_to_silver_pos`` (root, hourly, when the stream has data:
  stream -> ``SILVER.stg_pos`` with is_valid) -> ``task_load_dim_customer`` (CALL the SCD2 procedure) ->
  ``task_load_fact_sales`` (CALL ``sp_load_fact_sales``): one successful run, then the root resumed and left
  ``FAILED_AND_AUTO_SUSPENDED`` after 3 failed scheduled runs (the layer's ``tasks/fail-next`` hook: an unchanged
  graph, so RETRY LAST applies);
- ``DEV_DW.DIMENSIONS.dim_customer`` (SCD2; customer 3 changed segment: two versions) with
  ``sp_load_dim_customer_scd_type2``, ``dim_date``, ``DEV_DW.FACTS.fact_sales`` with ``sp_load_fact_sales``;
- one invalid POS record (quantity 0) in stg_pos;
- a paused pipe: ``DEV_RAW.BRONZE.pipe_inventory_data`` (stage ``stage_inventory_data`` -> ``raw_inventory``)
  with one file waiting (pendingFileCount 1).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import snowflake.connector

DATABASES = {
    "DEV_RAW": ("BRONZE",),
    "DEV_STAGING": ("TASKS", "STREAMS", "SILVER"),
    "DEV_DW": ("DIMENSIONS", "FACTS"),
}
DAYS = [dt.date(2024, 1, 1) + dt.timedelta(days=n) for n in range(5)]
CUSTOMERS = [
    (1, "Ada Lovelace", "Retail"),
    (2, "Grace Hopper", "Retail"),
    (3, "Alan Turing", "Silver"),
    (4, "Edsger Dijkstra", "Retail"),
    (5, "Barbara Liskov", "Gold"),
    (6, "Donald Knuth", "Retail"),
    (7, "Frances Allen", "Silver"),
    (8, "Ken Thompson", "Retail"),
]
ROOT = "DEV_STAGING.TASKS.task_bronze_to_silver_pos"
FAILURE = "Numeric value 'N/A' is not recognized"

POS_COLUMNS = "transaction_id, store_id, customer_id, product_id, quantity, unit_price, transaction_ts"
TO_SILVER = f"""INSERT INTO DEV_STAGING.SILVER.stg_pos ({POS_COLUMNS}, is_valid, created_at)
SELECT {POS_COLUMNS}, quantity > 0 AND unit_price > 0, CURRENT_TIMESTAMP()
FROM DEV_STAGING.STREAMS.stream_pos_changes WHERE METADATA$ACTION = 'INSERT'"""
SCD2 = """CREATE OR REPLACE PROCEDURE DEV_DW.DIMENSIONS.sp_load_dim_customer_scd_type2()
RETURNS VARCHAR LANGUAGE SQL AS
$$
BEGIN
  UPDATE DEV_DW.DIMENSIONS.dim_customer d SET effective_to = CURRENT_TIMESTAMP(), is_current = FALSE
  WHERE d.is_current AND EXISTS (
    SELECT 1 FROM DEV_STAGING.SILVER.stg_customer s
    WHERE s.customer_id = d.customer_id AND (s.customer_name <> d.customer_name OR s.segment <> d.segment));
  INSERT INTO DEV_DW.DIMENSIONS.dim_customer
    (customer_id, customer_name, segment, effective_from, effective_to, is_current)
  SELECT s.customer_id, s.customer_name, s.segment, CURRENT_TIMESTAMP(), NULL, TRUE
  FROM DEV_STAGING.SILVER.stg_customer s
  WHERE NOT EXISTS (
    SELECT 1 FROM DEV_DW.DIMENSIONS.dim_customer d WHERE d.customer_id = s.customer_id AND d.is_current);
  RETURN 'dim_customer loaded';
END;
$$"""
FACTS = """CREATE OR REPLACE PROCEDURE DEV_DW.FACTS.sp_load_fact_sales()
RETURNS VARCHAR LANGUAGE SQL AS
$$
BEGIN
  INSERT INTO DEV_DW.FACTS.fact_sales
    (transaction_id, date_key, store_id, customer_id, product_id, quantity, amount, loaded_at)
  SELECT p.transaction_id,
         YEAR(p.transaction_ts) * 10000 + MONTH(p.transaction_ts) * 100 + DAY(p.transaction_ts),
         p.store_id, p.customer_id, p.product_id, p.quantity, p.quantity * p.unit_price, CURRENT_TIMESTAMP()
  FROM DEV_STAGING.SILVER.stg_pos p
  WHERE p.is_valid
    AND NOT EXISTS (SELECT 1 FROM DEV_DW.FACTS.fact_sales f WHERE f.transaction_id = p.transaction_id);
  RETURN 'fact_sales loaded';
END;
$$"""


def pos_file(day: dt.date) -> str:
    """One day's POS export: 6 to 9 sales, deterministic; the 3rd of January has one with quantity 0."""
    lines = ["transaction_id,store_id,customer_id,product_id,quantity,unit_price,transaction_ts"]
    for n in range(6 + day.day % 4):
        quantity = 0 if (day.day, n) == (3, 2) else 1 + (day.day + n) % 4
        price = f"{4.5 + ((day.day * 7 + n * 3) % 11) * 1.25:.2f}"
        ts = dt.datetime.combine(day, dt.time(9 + n, (day.day * 13 + n * 7) % 60))
        lines.append(
            f"{day:%Y%m%d}{n:03d},{1 + n % 3},{1 + (day.day + n) % 8},{100 + (n * 3 + day.day) % 5},"
            f"{quantity},{price},{ts:%Y-%m-%d %H:%M:%S}"
        )
    return "\n".join(lines) + "\n"


def _hook(url: str, path: str, **args: Any) -> Any:
    request = urllib.request.Request(
        f"{url}/_emulator/{path}",
        data=json.dumps(args).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def seed(url: str) -> str:
    """Create the seed's objects on the emulator at ``url``; a one-line summary."""
    parts = urlsplit(url)
    conn = snowflake.connector.connect(
        host=parts.hostname,
        port=parts.port,
        protocol="http",
        account="sandbox",
        user="seed",
        password="seed",
        login_timeout=10,
        network_timeout=120,
        session_parameters={"QUERY_TAG": "seed-001"},
    )
    try:
        cur = conn.cursor()

        def run(*statements: str) -> None:
            for statement in statements:
                cur.execute(statement)

        run("CREATE OR REPLACE WAREHOUSE WH_TRANS WITH WAREHOUSE_SIZE = 'MEDIUM'")
        for database, schemas in DATABASES.items():
            run(
                f"CREATE DATABASE IF NOT EXISTS {database}",
                *(f"CREATE SCHEMA IF NOT EXISTS {database}.{s}" for s in schemas),
            )

        # bronze: the POS stage, its files, the raw table and its running pipe; the stream on the raw table
        run(
            "CREATE OR REPLACE TABLE DEV_RAW.BRONZE.raw_pos (transaction_id VARCHAR, store_id INT, customer_id INT, "
            "product_id INT, quantity INT, unit_price NUMBER(10, 2), transaction_ts TIMESTAMP_NTZ, "
            "load_timestamp TIMESTAMP_LTZ DEFAULT CURRENT_TIMESTAMP())",
            "CREATE OR REPLACE FILE FORMAT DEV_RAW.BRONZE.csv_format TYPE = CSV SKIP_HEADER = 1 "
            "FIELD_OPTIONALLY_ENCLOSED_BY = '\"'",
            "CREATE OR REPLACE STAGE DEV_RAW.BRONZE.stage_pos_data",
            "CREATE OR REPLACE STREAM DEV_STAGING.STREAMS.stream_pos_changes ON TABLE DEV_RAW.BRONZE.raw_pos",
        )
        for day in DAYS[:4]:
            _hook(
                url,
                "stages/put",
                stage="DEV_RAW.BRONZE.stage_pos_data",
                name=f"pos_{day}.csv",
                content=pos_file(day),
                notify=False,
            )
        run(
            f"CREATE OR REPLACE PIPE DEV_RAW.BRONZE.pipe_pos_data AUTO_INGEST = TRUE AS COPY INTO "
            f"DEV_RAW.BRONZE.raw_pos ({POS_COLUMNS}) FROM @DEV_RAW.BRONZE.stage_pos_data "
            "FILE_FORMAT = (FORMAT_NAME = 'DEV_RAW.BRONZE.csv_format')",
            "ALTER PIPE DEV_RAW.BRONZE.pipe_pos_data REFRESH",
        )

        # silver, the dimensions and facts with their procedures
        run(
            "CREATE OR REPLACE TABLE DEV_STAGING.SILVER.stg_pos (transaction_id VARCHAR, store_id INT, "
            "customer_id INT, product_id INT, quantity INT, unit_price NUMBER(10, 2), transaction_ts TIMESTAMP_NTZ, "
            "is_valid BOOLEAN, created_at TIMESTAMP_LTZ)",
            "CREATE OR REPLACE TABLE DEV_STAGING.SILVER.stg_customer (customer_id INT, customer_name VARCHAR, "
            "segment VARCHAR, updated_at TIMESTAMP_LTZ)",
            "INSERT INTO DEV_STAGING.SILVER.stg_customer VALUES "
            + ", ".join(f"({i}, '{name}', '{segment}', CURRENT_TIMESTAMP())" for i, name, segment in CUSTOMERS),
            "CREATE OR REPLACE TABLE DEV_DW.DIMENSIONS.dim_customer (customer_id INT, customer_name VARCHAR, "
            "segment VARCHAR, effective_from TIMESTAMP_LTZ, effective_to TIMESTAMP_LTZ, is_current BOOLEAN)",
            "CREATE OR REPLACE TABLE DEV_DW.DIMENSIONS.dim_date (date_key INT, date_value DATE, day_of_week INT, "
            "month INT, year INT)",
            "INSERT INTO DEV_DW.DIMENSIONS.dim_date VALUES "
            + ", ".join(
                f"({d:%Y%m%d}, '{d}', {d.isoweekday()}, {d.month}, {d.year})"
                for d in (dt.date(2024, 1, 1) + dt.timedelta(days=n) for n in range(31))
            ),
            "CREATE OR REPLACE TABLE DEV_DW.FACTS.fact_sales (transaction_id VARCHAR, date_key INT, store_id INT, "
            "customer_id INT, product_id INT, quantity INT, amount NUMBER(12, 2), loaded_at TIMESTAMP_LTZ)",
            SCD2,
            FACTS,
        )

        # the task graph: one good run, a dimension change, the 5th's file, then 3 failed scheduled runs
        run(
            f"CREATE OR REPLACE TASK {ROOT} WAREHOUSE = WH_TRANS SCHEDULE = '60 MINUTE' "
            f"WHEN SYSTEM$STREAM_HAS_DATA('DEV_STAGING.STREAMS.stream_pos_changes') AS {TO_SILVER}",
            f"CREATE OR REPLACE TASK DEV_STAGING.TASKS.task_load_dim_customer WAREHOUSE = WH_TRANS AFTER {ROOT} "
            "AS CALL DEV_DW.DIMENSIONS.sp_load_dim_customer_scd_type2()",
            "CREATE OR REPLACE TASK DEV_STAGING.TASKS.task_load_fact_sales WAREHOUSE = WH_TRANS "
            "AFTER DEV_STAGING.TASKS.task_load_dim_customer AS CALL DEV_DW.FACTS.sp_load_fact_sales()",
            "ALTER TASK DEV_STAGING.TASKS.task_load_fact_sales RESUME",
            "ALTER TASK DEV_STAGING.TASKS.task_load_dim_customer RESUME",
            f"EXECUTE TASK {ROOT}",
            "UPDATE DEV_STAGING.SILVER.stg_customer SET segment = 'Gold', updated_at = CURRENT_TIMESTAMP() "
            "WHERE customer_id = 3",
            "CALL DEV_DW.DIMENSIONS.sp_load_dim_customer_scd_type2()",
        )
        _hook(
            url,
            "stages/put",
            stage="DEV_RAW.BRONZE.stage_pos_data",
            name=f"pos_{DAYS[4]}.csv",
            content=pos_file(DAYS[4]),
        )
        run(f"ALTER TASK {ROOT} RESUME")
        _hook(url, "tasks/fail-next", task=ROOT, times=3, error=FAILURE)
        for _ in range(3):
            _hook(url, "scheduler/run", tasks=[ROOT])

        # the paused pipe, with a file waiting
        run(
            "CREATE OR REPLACE TABLE DEV_RAW.BRONZE.raw_inventory (product_id INT, store_id INT, "
            "quantity_on_hand INT, snapshot_ts TIMESTAMP_NTZ, "
            "load_timestamp TIMESTAMP_LTZ DEFAULT CURRENT_TIMESTAMP())",
            "CREATE OR REPLACE STAGE DEV_RAW.BRONZE.stage_inventory_data",
            "CREATE OR REPLACE PIPE DEV_RAW.BRONZE.pipe_inventory_data AUTO_INGEST = TRUE AS COPY INTO "
            "DEV_RAW.BRONZE.raw_inventory (product_id, store_id, quantity_on_hand, snapshot_ts) "
            "FROM @DEV_RAW.BRONZE.stage_inventory_data FILE_FORMAT = (FORMAT_NAME = 'DEV_RAW.BRONZE.csv_format')",
            "ALTER PIPE DEV_RAW.BRONZE.pipe_inventory_data SET PIPE_EXECUTION_PAUSED = TRUE",
        )
        inventory = "product_id,store_id,quantity_on_hand,snapshot_ts\n" + "".join(
            f"{100 + p},{s},{10 + p * s},2024-01-05 06:00:00\n" for p in range(5) for s in (1, 2, 3)
        )
        _hook(
            url,
            "stages/put",
            stage="DEV_RAW.BRONZE.stage_inventory_data",
            name="inventory_2024-01-05.csv",
            content=inventory,
        )
        cur.execute("SELECT COUNT(*) FROM DEV_RAW.BRONZE.raw_pos")
        (raw_rows,) = cur.fetchone() or (0,)
    finally:
        conn.close()
    return f"seeded 001 on {url}: {raw_rows} POS rows over {len(DAYS)} days, {ROOT} FAILED_AND_AUTO_SUSPENDED"
