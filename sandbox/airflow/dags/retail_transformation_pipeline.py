# mypy: ignore-errors
"""Retail transformation (seed 001): extract -> transform -> load, about a second per run, always succeeds.

The DAG to backfill ("airflow dags backfill retail_transformation_pipeline --start-date ... --end-date ...")
and to clear for a date range. ``max_active_runs`` comes from the environment variable
``SANDBOX_RETAIL_MAX_ACTIVE_RUNS`` (default 3) of the Airflow processes.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, get_current_context, task
from controlplane_alerts import dag_failure_alert, task_failure_alert

log = logging.getLogger(__name__)


def _day() -> str:
    context = get_current_context()
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.strftime("%Y-%m-%d")


with DAG(
    dag_id="retail_transformation_pipeline",
    description="Bronze POS data to staging, dimensions and fact_sales (seed 001)",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=int(os.environ.get("SANDBOX_RETAIL_MAX_ACTIVE_RUNS", "3")),
    tags=["sandbox", "transformation"],
    on_failure_callback=dag_failure_alert,
    default_args={
        "owner": "data-engineering",
        "retries": 0,
        "retry_delay": timedelta(seconds=5),
        "on_failure_callback": task_failure_alert,
    },
):

    @task
    def extract_pos() -> int:
        time.sleep(0.2)
        rows = 5200
        log.info("Read %d POS rows from DEV_RAW.BRONZE.raw_pos for %s", rows, _day())
        return rows

    @task
    def transform_sales(rows: int) -> int:
        time.sleep(0.2)
        valid = rows - 12
        log.info("Staged %d valid rows into DEV_STAGING.SILVER.stg_pos (12 flagged is_valid = FALSE)", valid)
        return valid

    @task
    def load_fact_sales(rows: int) -> None:
        time.sleep(0.2)
        log.info("Loaded %d rows into DEV_DW.FACTS.fact_sales for %s", rows, _day())

    load_fact_sales(transform_sales(extract_pos()))
