# mypy: ignore-errors
"""Bronze ingestion (seed 000, "Ingestion DAG failure"): orders and customers land in bronze, then a check.

``ingest_orders`` fails like a real source outage (the orders API answers 503) until the Airflow Variable
``data_ingestion_bronze_fixed`` is "true"; then clearing it with ``--downstream`` makes the run succeed,
which is the runbook's "Retry" step. No retries, so it fails fast.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Variable
from controlplane_alerts import dag_failure_alert, task_failure_alert

log = logging.getLogger(__name__)

ORDERS_API = "https://orders-api.retail.internal/v1/orders"
BRONZE = "s3://retail-lake/bronze"


def _day(context) -> str:
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.strftime("%Y-%m-%d")


def ingest_orders(**context) -> dict:
    day = _day(context)
    url = f"{ORDERS_API}?date={day}&page_size=5000"
    log.info("Extracting orders for %s from %s", day, url)
    fixed = str(Variable.get("data_ingestion_bronze_fixed", default="false")).strip().lower() == "true"
    if not fixed:
        for attempt in (1, 2, 3):
            log.warning("GET %s -> HTTP 503 Service Unavailable (attempt %d/3)", url, attempt)
            time.sleep(0.1)
        raise ConnectionError(
            f"Source system unavailable: GET {url} returned HTTP 503 Service Unavailable after 3 attempts "
            f"(upstream: orders-db connection pool exhausted); no file written to "
            f"{BRONZE}/orders/ingest_dt={day}/"
        )
    rows = 1842
    log.info("Wrote %d orders to %s/orders/ingest_dt=%s/part-0.parquet", rows, BRONZE, day)
    return {"table": "orders", "ingest_dt": day, "rows": rows}


def ingest_customers(**context) -> dict:
    day = _day(context)
    rows = 317
    log.info("Wrote %d customers to %s/customers/ingest_dt=%s/part-0.parquet", rows, BRONZE, day)
    return {"table": "customers", "ingest_dt": day, "rows": rows}


def validate_ingestion(**context) -> None:
    ti = context["ti"]
    for task_id in ("ingest_orders", "ingest_customers"):
        manifest = ti.xcom_pull(task_ids=task_id)
        if not manifest or manifest.get("rows", 0) <= 0:
            raise ValueError(f"{task_id}: no rows landed in bronze for {_day(context)}")
        log.info("%s: %s rows for ingest_dt=%s", task_id, manifest["rows"], manifest["ingest_dt"])


with DAG(
    dag_id="data_ingestion_bronze",
    description="Ingest orders and customers into the bronze layer, then validate (seed 000)",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=3,
    tags=["sandbox", "ingestion", "bronze"],
    on_failure_callback=dag_failure_alert,
    default_args={
        "owner": "data-engineering",
        "retries": 0,
        "retry_delay": timedelta(seconds=5),
        "on_failure_callback": task_failure_alert,
    },
):
    orders = PythonOperator(task_id="ingest_orders", python_callable=ingest_orders)
    customers = PythonOperator(task_id="ingest_customers", python_callable=ingest_customers)
    validate = PythonOperator(task_id="validate_ingestion", python_callable=validate_ingestion)
    [orders, customers] >> validate
