# mypy: ignore-errors
"""A run that never finishes (seed 002, "DAG stuck in running state").

``generate_report`` waits on a lock that is never released (it sleeps an hour), so a triggered run stays
``running`` until someone clears or fails the stuck task. No schedule: it only runs when triggered, so it
does not hold an executor slot from start-up on.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from controlplane_alerts import dag_failure_alert, task_failure_alert

with DAG(
    dag_id="stuck_report_pipeline",
    description="Daily delivery report whose export task hangs (seed 002: DAG stuck in running state)",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=1,
    tags=["sandbox", "reporting"],
    on_failure_callback=dag_failure_alert,
    default_args={
        "owner": "data-engineering",
        "retries": 0,
        "retry_delay": timedelta(seconds=5),
        "on_failure_callback": task_failure_alert,
    },
):
    collect = BashOperator(task_id="collect_delivery_metrics", bash_command='echo "collected 5120 tracking events"')
    report = BashOperator(
        task_id="generate_report",
        bash_command=(
            'echo "waiting for lock on reports/fact_deliveries_daily (held by a zombie worker)"; '
            "sleep ${STUCK_TASK_SECONDS:-3600}"
        ),
    )
    collect >> report
