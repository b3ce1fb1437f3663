# mypy: ignore-errors
"""Retail ingestion (seed 001, "Starting / stopping a pipeline manually"): created PAUSED.

"airflow dags pause retail_ingestion_pipeline" is the seed's emergency stop; this DAG starts paused so the
"DAG not running" and "resume" procedures have something to find and unpause. Quick tasks.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task
from controlplane_alerts import dag_failure_alert, task_failure_alert

log = logging.getLogger(__name__)

with DAG(
    dag_id="retail_ingestion_pipeline",
    description="POS files to DEV_RAW.BRONZE via Snowpipe, then a status check (seed 001); starts paused",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,
    max_active_runs=1,
    tags=["sandbox", "ingestion"],
    on_failure_callback=dag_failure_alert,
    default_args={
        "owner": "data-engineering",
        "retries": 0,
        "retry_delay": timedelta(seconds=5),
        "on_failure_callback": task_failure_alert,
    },
):
    stage_files = BashOperator(
        task_id="stage_pos_files",
        bash_command='echo "PUT file://pos_{{ run_id }}.csv @DEV_RAW.BRONZE.stage_pos_data"',
    )

    @task
    def check_snowpipe_status() -> str:
        time.sleep(0.2)
        status = '{"executionState":"RUNNING","pendingFileCount":0}'
        log.info("SYSTEM$PIPE_STATUS('DEV_RAW.BRONZE.pipe_pos_data') = %s", status)
        return status

    stage_files >> check_snowpipe_status()
