"""``manage.py seed_demo --pg-port P [--airflow-url URL ...] [--quarantine-prod-root R --quarantine-dev-root R]
[--snowflake-url URL --snowflake-password-ref REF] [--bigquery-url URL --bigquery-project P]``: the demo catalog
over the sandbox weather warehouse (and, given ``--airflow-url``, over the sandbox Airflow's DAGs; given the
quarantine roots, over two quarantine sources: production on the GCS emulator, development on local disk; given
``--snowflake-url``, over the seed-001 retail warehouse on the Snowflake emulator, in dev only: the seed's
databases are DEV_RAW, DEV_STAGING and DEV_DW; given ``--bigquery-url``, over the seed-002 logistics datasets on
the BigQuery emulator, in dev), one demo user per role, and the ``airflow-bot`` user whose API token the Airflow
failure callbacks use.

Idempotent: what exists is kept, what is missing is created through the catalog services, so a second run
writes nothing and records no audit event. Everything runs in one transaction under a ``system`` change
context, so a failure leaves nothing half-seeded. Passwords are printed (``Login: <user> / <password>``)
only when a user is created or ``--reset-passwords`` is given; they never reach the audit trail.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from connectors.base import ConnectorError
from controlplane.audit.context import Channel, change_context
from controlplane.audit.services import audit_record
from controlplane.catalog import services as catalog
from controlplane.catalog.models import Connection, Environment, Pipeline, Source, Target
from controlplane.errors import ServiceError

ENVIRONMENTS = (("dev", False), ("prod", True))
SOURCE = "open-meteo"
PIPELINE = "daily_pipeline"

# (username, role): the role is the auth group the policy reads; "admin" is also staff and superuser.
DEMO_USERS = (
    ("viewer", "viewer"),
    ("responder", "responder"),
    ("approver", "approver"),
    ("approver2", "approver"),
    ("admin", "admin"),
)
# Machine users: no usable password (they log in with API tokens only), so no login is printed or reset.
# airflow-bot holds the alerts:write token of the sandbox Airflow's failure callbacks.
BOT_USERS = (("airflow-bot", "responder"),)


@dataclass(frozen=True)
class TargetSpec:
    """One demo target, created in each environment as ``<env>.weather.<name>``."""

    name: str
    kind: str
    locator: dict[str, Any]
    display_name: str
    in_pipeline: bool = True


TARGETS = (
    TargetSpec(
        "daily_weather_aggregates",
        "matview",
        {"schema": "mart", "name": "daily_weather_aggregates"},
        "Daily weather aggregates (mart)",
    ),
    TargetSpec(
        "daily_wikipedia_page_stats",
        "matview",
        {"schema": "mart", "name": "daily_wikipedia_page_stats"},
        "Daily Wikipedia page stats (mart)",
    ),
    TargetSpec(
        "core_weather",
        "table",
        {"schema": "core", "name": "weather", "timestamp_column": "observed_at"},
        "Hourly weather observations (core)",
    ),
    TargetSpec(
        "raw_weather_observations",
        "table",
        {"schema": "raw", "name": "weather_observations", "timestamp_column": "ingested_at"},
        "Raw Open-Meteo payloads (raw)",
    ),
    TargetSpec("core_location", "table", {"schema": "core", "name": "location"}, "Locations (reference data)"),
    TargetSpec(
        "core_wikipedia_page", "table", {"schema": "core", "name": "wikipedia_page"}, "Wikipedia pages (reference data)"
    ),
    TargetSpec("database", "database", {}, "Weather warehouse database", in_pipeline=False),
)


@dataclass(frozen=True)
class DagSpec:
    """One sandbox Airflow DAG (sandbox/airflow/dags), seeded per environment as target
    ``<env>.airflow.<dag_id>`` linked to pipeline ``<env>-<dag_id>``."""

    dag_id: str
    layer: str
    description: str


AIRFLOW_DAGS = (
    DagSpec(
        "data_ingestion_bronze",
        Pipeline.Layer.BRONZE,
        "Orders and customers into bronze; ingest_orders fails while the orders API is down (seed 000)",
    ),
    DagSpec(
        "retail_transformation_pipeline",
        Pipeline.Layer.GOLD,
        "POS extract, sales transform, fact_sales load; daily, the DAG to backfill (seed 001)",
    ),
    DagSpec(
        "retail_ingestion_pipeline",
        Pipeline.Layer.BRONZE,
        "POS files to bronze via Snowpipe; created paused (seed 001)",
    ),
    DagSpec(
        "stuck_report_pipeline",
        Pipeline.Layer.OTHER,
        "Delivery report whose export task hangs: a DAG stuck in running (seed 002)",
    ),
)


@dataclass(frozen=True)
class QuarantineSpec:
    """One demo quarantine source (seed 003, section 5's retention policy): connection ``quarantine-<env>``,
    target ``<env>.quarantine.silver_base`` (the source) and ``<env>.quarantine.<table>`` per table found."""

    env: str
    threshold_pct: float
    retention_days: int
    weekly_review: bool


QUARANTINE_SOURCES = (
    QuarantineSpec("prod", threshold_pct=5.0, retention_days=30, weekly_review=True),
    QuarantineSpec("dev", threshold_pct=10.0, retention_days=7, weekly_review=False),
)


@dataclass(frozen=True)
class SnowflakeTargetSpec:
    """One object of the seed-001 retail warehouse, target ``dev.snowflake.<name>`` of connection
    ``snowflake-dev``, in pipeline ``dev-retail_<pipeline>_snowflake``."""

    name: str
    kind: str
    locator: dict[str, Any]
    display_name: str
    pipeline: str  # "ingestion" or "transformation"


def _obj(database: str, schema: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"database": database, "schema": schema, "name": name, **extra}


_SF_ROOT = _obj("DEV_STAGING", "TASKS", "TASK_BRONZE_TO_SILVER_POS")
SNOWFLAKE_ENV = "dev"
SNOWFLAKE_CONNECTION = "snowflake-dev"
SNOWFLAKE_PIPELINES = {
    "ingestion": (Pipeline.Layer.BRONZE, "POS and inventory files into DEV_RAW.BRONZE by Snowpipe (seed 001)"),
    "transformation": (
        Pipeline.Layer.SILVER,
        "The task graph bronze -> silver -> dim_customer (SCD2) -> fact_sales, fed by a stream (seed 001)",
    ),
}
SNOWFLAKE_TARGETS = (
    SnowflakeTargetSpec(
        "task_bronze_to_silver_pos", "task", _SF_ROOT, "Task graph root: POS bronze to silver", "transformation"
    ),
    SnowflakeTargetSpec(
        "task_load_dim_customer",
        "task",
        _obj("DEV_STAGING", "TASKS", "TASK_LOAD_DIM_CUSTOMER", root=_SF_ROOT),
        "Task: load dim_customer (SCD2)",
        "transformation",
    ),
    SnowflakeTargetSpec(
        "task_load_fact_sales",
        "task",
        _obj("DEV_STAGING", "TASKS", "TASK_LOAD_FACT_SALES", root=_SF_ROOT),
        "Task: load fact_sales",
        "transformation",
    ),
    SnowflakeTargetSpec(
        "pipe_pos_data", "pipe", _obj("DEV_RAW", "BRONZE", "PIPE_POS_DATA"), "Snowpipe: POS files", "ingestion"
    ),
    SnowflakeTargetSpec(
        "pipe_inventory_data",
        "pipe",
        _obj("DEV_RAW", "BRONZE", "PIPE_INVENTORY_DATA"),
        "Snowpipe: inventory files",
        "ingestion",
    ),
    SnowflakeTargetSpec(
        "stream_pos_changes",
        "stream",
        _obj("DEV_STAGING", "STREAMS", "STREAM_POS_CHANGES"),
        "Stream: changes of raw_pos",
        "transformation",
    ),
    SnowflakeTargetSpec(
        "raw_pos",
        "table",
        _obj(
            "DEV_RAW",
            "BRONZE",
            "RAW_POS",
            timestamp_column="LOAD_TIMESTAMP",
            stage="DEV_RAW.BRONZE.STAGE_POS_DATA",
            file_format="DEV_RAW.BRONZE.CSV_FORMAT",
        ),
        "Raw POS sales (bronze)",
        "ingestion",
    ),
    SnowflakeTargetSpec(
        "raw_inventory",
        "table",
        _obj(
            "DEV_RAW",
            "BRONZE",
            "RAW_INVENTORY",
            timestamp_column="LOAD_TIMESTAMP",
            stage="DEV_RAW.BRONZE.STAGE_INVENTORY_DATA",
            file_format="DEV_RAW.BRONZE.CSV_FORMAT",
        ),
        "Raw inventory snapshots (bronze)",
        "ingestion",
    ),
    SnowflakeTargetSpec(
        "stg_pos",
        "table",
        _obj("DEV_STAGING", "SILVER", "STG_POS", timestamp_column="CREATED_AT", valid_column="IS_VALID"),
        "Staged POS sales (silver)",
        "transformation",
    ),
    SnowflakeTargetSpec(
        "dim_customer",
        "table",
        _obj("DEV_DW", "DIMENSIONS", "DIM_CUSTOMER", timestamp_column="EFFECTIVE_FROM", key_column="CUSTOMER_ID"),
        "Customer dimension (SCD2)",
        "transformation",
    ),
    # The seed's fact_sales keys its days by date_key (yyyymmdd, which the connector reads as a day) and is loaded
    # by sp_load_fact_sales: a facts backfill deletes the period and calls it (001-backfill-facts).
    SnowflakeTargetSpec(
        "fact_sales",
        "table",
        _obj(
            "DEV_DW",
            "FACTS",
            "FACT_SALES",
            timestamp_column="LOADED_AT",
            date_column="DATE_KEY",
            procedure="DEV_DW.FACTS.SP_LOAD_FACT_SALES",
        ),
        "Sales facts",
        "transformation",
    ),
    SnowflakeTargetSpec(
        "sp_load_dim_customer_scd_type2",
        "procedure",
        _obj("DEV_DW", "DIMENSIONS", "SP_LOAD_DIM_CUSTOMER_SCD_TYPE2"),
        "Procedure: SCD2 load of dim_customer",
        "transformation",
    ),
    SnowflakeTargetSpec(
        "sp_load_fact_sales",
        "procedure",
        _obj("DEV_DW", "FACTS", "SP_LOAD_FACT_SALES"),
        "Procedure: load fact_sales",
        "transformation",
    ),
    SnowflakeTargetSpec("wh_trans", "warehouse", {"name": "WH_TRANS"}, "Warehouse WH_TRANS", "transformation"),
    SnowflakeTargetSpec(
        "environment",
        "environment",
        {"databases": ["DEV_RAW", "DEV_STAGING", "DEV_DW"]},
        "The DEV environment (DEV_RAW, DEV_STAGING, DEV_DW): the source of a clone",
        "transformation",
    ),
)


@dataclass(frozen=True)
class BigQueryTargetSpec:
    """One object of the seed-002 logistics datasets, target ``dev.bigquery.<name>`` of connection
    ``bigquery-dev``, in pipeline ``dev-logistics_bigquery``."""

    name: str
    kind: str
    locator: dict[str, Any]
    display_name: str


BIGQUERY_ENV = "dev"
BIGQUERY_CONNECTION = "bigquery-dev"
# The seed's reload of one fact_deliveries partition from the tracking events (sandbox/bigquery/seed.py).
FACT_DELIVERIES_LOAD = (
    "SELECT event_date AS delivery_date, COUNT(DISTINCT package_id) AS packages, COUNT(*) AS events, "
    "CURRENT_TIMESTAMP() AS _loaded_at FROM `raw.tracking_events` "
    "WHERE event_date = @partition_date GROUP BY event_date"
)
BIGQUERY_TARGETS = (
    BigQueryTargetSpec(
        "raw_packages",
        "table",
        {"dataset": "raw", "name": "packages", "timestamp_column": "_loaded_at", "key_column": "package_id"},
        "Raw packages",
    ),
    BigQueryTargetSpec(
        "raw_customers",
        "table",
        {"dataset": "raw", "name": "customers", "timestamp_column": "_loaded_at", "key_column": "customer_id"},
        "Raw customers",
    ),
    BigQueryTargetSpec(
        "raw_tracking_events",
        "table",
        {
            "dataset": "raw",
            "name": "tracking_events",
            "partition_column": "event_date",
            "timestamp_column": "_loaded_at",
            "key_column": "event_id",
        },
        "Raw tracking events (partitioned by event_date)",
    ),
    BigQueryTargetSpec(
        "fact_deliveries",
        "table",
        {
            "dataset": "marts",
            "name": "fact_deliveries",
            "partition_column": "delivery_date",
            "timestamp_column": "_loaded_at",
            "load_query": FACT_DELIVERIES_LOAD,
        },
        "Deliveries per day (partitioned; reloaded from the tracking events)",
    ),
    BigQueryTargetSpec(
        "mv_daily_volume", "matview", {"dataset": "marts", "name": "mv_daily_volume"}, "Daily package volume"
    ),
    BigQueryTargetSpec("raw", "dataset", {"dataset": "raw"}, "Dataset raw"),
    BigQueryTargetSpec("marts", "dataset", {"dataset": "marts"}, "Dataset marts"),
    BigQueryTargetSpec("project", "project", {}, "The BigQuery project (slot use)"),
)


@dataclass
class SeedReport:
    """What a run did: names of created and changed objects, warnings, and the logins to print."""

    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


def pipeline_name(env: Environment) -> str:
    # Pipeline names are unique across environments, so the environment is part of the name.
    return f"{env.name}-{PIPELINE}"


class Command(BaseCommand):
    help = "Create the demo catalog (dev and prod over the weather warehouse) and one user per role; idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pg-host", default="127.0.0.1")
        parser.add_argument("--pg-port", type=int, required=True)
        parser.add_argument("--pg-db", default="weather")
        parser.add_argument("--pg-user", default="postgres")
        parser.add_argument(
            "--password-ref",
            default=None,
            help="secret reference for the weather database password (env:NAME or file:/path); none by default",
        )
        parser.add_argument(
            "--airflow-url",
            default=None,
            help="the sandbox Airflow's API server (http://127.0.0.1:PORT): also seed connections airflow-dev and "
            "airflow-prod, a pipeline and a target per sandbox DAG, and an instance target per environment",
        )
        parser.add_argument("--airflow-user", default=None, help="the Airflow user the connector logs in as")
        parser.add_argument(
            "--airflow-password-ref",
            default=None,
            help="secret reference for that user's password (env:NAME or file:/path); never the password itself",
        )
        parser.add_argument(
            "--quarantine-prod-root",
            default=None,
            help="the production quarantine source's Silver base path (gs://bucket/prefix on the GCS emulator)",
        )
        parser.add_argument("--quarantine-gcs-endpoint", default=None, help="the GCS emulator's URL")
        parser.add_argument(
            "--quarantine-dev-root", default=None, help="the development quarantine source's Silver base path (local)"
        )
        parser.add_argument(
            "--snowflake-url",
            default=None,
            help="the sandbox Snowflake emulator (http://127.0.0.1:PORT): also seed connection snowflake-dev and a "
            "target per seed-001 object",
        )
        parser.add_argument(
            "--snowflake-password-ref",
            default=None,
            help="secret reference for the Snowflake password (env:NAME or file:/path; the emulator takes any)",
        )
        parser.add_argument(
            "--bigquery-url",
            default=None,
            help="the sandbox BigQuery emulator (http://127.0.0.1:PORT): also seed connection bigquery-dev and a "
            "target per seed-002 object (anonymous credentials: the emulator needs none)",
        )
        parser.add_argument("--bigquery-project", default="sandbox", help="the emulator's project")
        parser.add_argument(
            "--reset-passwords", action="store_true", help="give every demo user a new password and print it"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = {
            "host": options["pg_host"],
            "port": options["pg_port"],
            "dbname": options["pg_db"],
            "user": options["pg_user"],
        }
        airflow_url = options["airflow_url"]
        if not airflow_url and (options["airflow_user"] or options["airflow_password_ref"]):
            raise CommandError("--airflow-user and --airflow-password-ref need --airflow-url")
        airflow_config = {"base_url": airflow_url.rstrip("/")} if airflow_url else {}
        if airflow_url and options["airflow_user"]:
            airflow_config["username"] = options["airflow_user"]
        roots = {"prod": options["quarantine_prod_root"], "dev": options["quarantine_dev_root"]}
        if any(roots.values()) and not all(roots.values()):
            raise CommandError("--quarantine-prod-root and --quarantine-dev-root go together")
        snowflake_url = options["snowflake_url"]
        if bool(snowflake_url) != bool(options["snowflake_password_ref"]):
            raise CommandError("--snowflake-url and --snowflake-password-ref go together")
        report = SeedReport()
        with change_context(channel=Channel.SYSTEM, actor_name="seed_demo"):
            try:
                with transaction.atomic():
                    _seed_catalog(report, config=config, password_ref=options["password_ref"])
                    if airflow_config:
                        _seed_airflow(report, config=airflow_config, password_ref=options["airflow_password_ref"])
                    if roots["prod"]:
                        _seed_quarantine(report, roots=roots, gcs_endpoint=options["quarantine_gcs_endpoint"])
                    if snowflake_url:
                        seed_snowflake(report, url=snowflake_url, password_ref=options["snowflake_password_ref"])
                    if options["bigquery_url"]:
                        seed_bigquery(report, url=options["bigquery_url"], project=options["bigquery_project"])
                    _seed_users(report, reset_passwords=options["reset_passwords"])
            except ServiceError as exc:
                raise CommandError(exc.message) from None
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from None
        for warning in report.warnings:
            self.stderr.write(f"seed_demo: {warning}")
        self.stderr.write(
            f"seed_demo: created {len(report.created)}, changed {len(report.changed)}"
            + (f" ({', '.join(report.created + report.changed)})" if report.created or report.changed else "")
        )
        # Printed only after the commit, so a printed password always works.
        for username, password in report.logins:
            self.stdout.write(f"Login: {username} / {password}")


def _seed_catalog(report: SeedReport, *, config: dict[str, Any], password_ref: str | None) -> None:
    source, created = Source.objects.get_or_create(
        name=SOURCE, defaults={"description": "Open-Meteo weather API (hourly observations)"}
    )
    if created:
        # No source service exists yet; the row is recorded like every other catalog write.
        audit_record(event="catalog.source.created", obj=source, after={"name": source.name})
        report.created.append(f"source {source.name}")
    for env_name, protected in ENVIRONMENTS:
        env = _seed_environment(report, name=env_name, protected=protected)
        conn = _seed_connection(
            report, name=f"weather-{env_name}", kind="postgres", env=env, config=config, password_ref=password_ref
        )
        pipeline = _seed_pipeline(
            report,
            name=pipeline_name(env),
            env=env,
            layer=Pipeline.Layer.MART,
            description=f"Open-Meteo and Wikipedia ingestion into the warehouse, then the marts ({SOURCE})",
        )
        for spec in TARGETS:
            _seed_target(
                report,
                key=f"{env_name}.weather.{spec.name}",
                kind=spec.kind,
                conn=conn,
                locator=spec.locator,
                pipeline=pipeline if spec.in_pipeline else None,
                display_name=spec.display_name,
            )


def _seed_airflow(report: SeedReport, *, config: dict[str, Any], password_ref: str | None) -> None:
    """Per environment: connection ``airflow-<env>`` to the sandbox Airflow, a pipeline and a ``dag`` target
    per sandbox DAG (the target names its pipeline, so an alert's incident finds it), an ``instance`` target."""
    for env_name, protected in ENVIRONMENTS:
        env = _seed_environment(report, name=env_name, protected=protected)
        conn = _seed_connection(
            report, name=f"airflow-{env_name}", kind="airflow", env=env, config=config, password_ref=password_ref
        )
        for dag in AIRFLOW_DAGS:
            pipeline = _seed_pipeline(
                report,
                name=f"{env_name}-{dag.dag_id}",  # pipeline names are unique across environments
                env=env,
                layer=dag.layer,
                description=f"Airflow DAG {dag.dag_id}: {dag.description}",
            )
            _seed_target(
                report,
                key=f"{env_name}.airflow.{dag.dag_id}",
                kind="dag",
                conn=conn,
                locator={"dag_id": dag.dag_id},
                pipeline=pipeline,
                display_name=f"Airflow DAG {dag.dag_id}",
            )
        _seed_target(
            report,
            key=f"{env_name}.airflow.instance",
            kind="instance",
            conn=conn,
            locator={},
            pipeline=None,
            display_name=f"Airflow ({env_name})",
        )


def _seed_quarantine(report: SeedReport, *, roots: dict[str, str], gcs_endpoint: str | None) -> None:
    """Per environment: connection ``quarantine-<env>``, a silver pipeline, the source target and one
    ``quarantine_table`` target per table the source has (listed through the connector)."""
    for spec in QUARANTINE_SOURCES:
        env = _seed_environment(report, name=spec.env, protected=spec.env == "prod")
        root = roots[spec.env]
        config: dict[str, Any] = {
            "root": root,
            "threshold_pct": spec.threshold_pct,
            "retention_days": spec.retention_days,
            "weekly_review": spec.weekly_review,
        }
        if root.startswith("gs://") and gcs_endpoint:
            config["gcs_endpoint"] = gcs_endpoint
        conn = _seed_connection(
            report, name=f"quarantine-{spec.env}", kind="quarantine", env=env, config=config, password_ref=None
        )
        try:
            tables = [row["table"] for row in catalog.connector_for(conn).metadata("tables")]
        except ConnectorError as exc:
            raise CommandError(f"quarantine-{spec.env}: cannot list the tables of {root}: {exc.message}") from None
        pipeline = _seed_pipeline(
            report,
            name=f"{spec.env}-ecom_silver_base",
            env=env,
            layer=Pipeline.Layer.SILVER,
            description=f"E-commerce Silver base layer and its quarantined records ({root})",
        )
        _seed_target(
            report,
            key=f"{spec.env}.quarantine.silver_base",
            kind="quarantine",
            conn=conn,
            locator={},
            pipeline=pipeline,
            display_name=f"Silver quarantine ({spec.env})",
        )
        for table in tables:
            _seed_target(
                report,
                key=f"{spec.env}.quarantine.{table}",
                kind="quarantine_table",
                conn=conn,
                locator={"table": table},
                pipeline=pipeline,
                display_name=f"Quarantined {table} ({spec.env})",
            )


def snowflake_config(url: str) -> dict[str, Any]:
    """The ``snowflake-dev`` connection's config for the emulator at ``url`` (it takes any account and user)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
        raise CommandError(f"--snowflake-url must be http(s)://host:port, not {url!r}")
    return {
        "account": "sandbox",
        "user": "controlplane",
        "host": parts.hostname,
        "port": parts.port,
        "protocol": parts.scheme,
        "warehouse": "WH_TRANS",
        "database": "DEV_STAGING",  # a database's INFORMATION_SCHEMA holds the query history re-delivery reads
        "wait_timeout_s": 120,
        "poll_interval_s": 0.5,
    }


def seed_snowflake(report: SeedReport, *, url: str, password_ref: str) -> None:
    """Connection ``snowflake-dev`` to the emulator, pipelines ``dev-retail_{ingestion,transformation}_snowflake``
    and a target per seed-001 object (SNOWFLAKE_TARGETS): the catalog the 001 runbooks and the watch use."""
    env = _seed_environment(report, name=SNOWFLAKE_ENV, protected=False)
    conn = _seed_connection(
        report,
        name=SNOWFLAKE_CONNECTION,
        kind="snowflake",
        env=env,
        config=snowflake_config(url),
        password_ref=password_ref,
    )
    pipelines = {
        name: _seed_pipeline(
            report, name=f"{env.name}-retail_{name}_snowflake", env=env, layer=layer, description=description
        )
        for name, (layer, description) in SNOWFLAKE_PIPELINES.items()
    }
    for spec in SNOWFLAKE_TARGETS:
        _seed_target(
            report,
            key=f"{env.name}.snowflake.{spec.name}",
            kind=spec.kind,
            conn=conn,
            locator=spec.locator,
            pipeline=pipelines[spec.pipeline],
            display_name=spec.display_name,
        )


def seed_bigquery(report: SeedReport, *, url: str, project: str) -> None:
    """Connection ``bigquery-dev`` to the emulator (its ``api_endpoint``; no credentials), pipeline
    ``dev-logistics_bigquery`` and a target per seed-002 object (BIGQUERY_TARGETS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
        raise CommandError(f"--bigquery-url must be http(s)://host:port, not {url!r}")
    env = _seed_environment(report, name=BIGQUERY_ENV, protected=False)
    conn = _seed_connection(
        report,
        name=BIGQUERY_CONNECTION,
        kind="bigquery",
        env=env,
        config={"project": project, "api_endpoint": url.rstrip("/")},
        password_ref=None,
    )
    pipeline = _seed_pipeline(
        report,
        name=f"{env.name}-logistics_bigquery",
        env=env,
        layer=Pipeline.Layer.BRONZE,
        description="Packages, customers and tracking events into raw, the delivery marts (seed 002)",
    )
    for spec in BIGQUERY_TARGETS:
        _seed_target(
            report,
            key=f"{env.name}.bigquery.{spec.name}",
            kind=spec.kind,
            conn=conn,
            locator=spec.locator,
            pipeline=pipeline,
            display_name=spec.display_name,
        )


def _seed_environment(report: SeedReport, *, name: str, protected: bool) -> Environment:
    env = Environment.objects.filter(name=name).first()
    if env is None:
        env = catalog.environment_create(name=name, protected=protected)
        report.created.append(f"environment {name}")
    elif env.protected != protected:
        warning = f"environment {name} has protected={env.protected}; left as is"
        if warning not in report.warnings:  # met once for the weather catalog, once for Airflow's
            report.warnings.append(warning)
    return env


def _seed_pipeline(report: SeedReport, *, name: str, env: Environment, layer: str, description: str) -> Pipeline:
    pipeline = Pipeline.objects.select_related("environment").filter(name=name).first()
    if pipeline is None:
        pipeline = catalog.pipeline_create(name=name, environment=env, layer=layer, description=description)
        report.created.append(f"pipeline {name}")
    elif pipeline.environment_id != env.pk:
        raise CommandError(f"pipeline {name} exists in {pipeline.environment.name}: not the demo's")
    return pipeline


def _seed_target(
    report: SeedReport,
    *,
    key: str,
    kind: str,
    conn: Connection,
    locator: dict[str, Any],
    pipeline: Pipeline | None,
    display_name: str,
) -> None:
    if Target.objects.filter(key=key).exists():
        return
    try:
        catalog.target_create(
            key=key, kind=kind, connection=conn, locator=locator, pipeline=pipeline, display_name=display_name
        )
    except ServiceError as exc:
        raise CommandError(f"target {key}: {exc.message}") from None
    report.created.append(f"target {key}")


def _seed_connection(
    report: SeedReport, *, name: str, kind: str, env: Environment, config: dict[str, Any], password_ref: str | None
) -> Connection:
    """Connection ``name``, created, or updated when the sandbox moved (another port, URL or reference)."""
    conn = Connection.objects.select_related("environment").filter(name=name).first()
    if conn is None:
        conn = catalog.connection_create(
            name=name,
            kind=kind,
            environment=env,
            config=config,
            secret_refs={"password": password_ref} if password_ref else {},
        )
        report.created.append(f"connection {name}")
        return conn
    if conn.kind != kind or conn.environment_id != env.pk:
        raise CommandError(f"connection {name} exists as {conn.kind} in {conn.environment.name}: not the demo's")
    # Only the keys the demo manages are compared, so settings added by hand (timeouts ...) survive.
    new_config = {**conn.config, **config}
    new_refs = {**conn.secret_refs, "password": password_ref} if password_ref else conn.secret_refs
    if new_config != conn.config or new_refs != conn.secret_refs:
        catalog.connection_update(connection=conn, config=new_config, secret_refs=new_refs)
        report.changed.append(f"connection {name}")
    return conn


def _seed_users(report: SeedReport, *, reset_passwords: bool) -> None:
    user_model = get_user_model()
    users = [(username, role, False) for username, role in DEMO_USERS]
    users += [(username, role, True) for username, role in BOT_USERS]
    groups = {g.name: g for g in Group.objects.filter(name__in={role for _, role, _ in users})}
    for username, role, bot in users:
        group = groups.get(role)
        if group is None:
            raise CommandError(f"the {role} group is missing: run manage.py migrate first")
        is_admin = role == "admin"
        user = user_model.objects.filter(username=username).first()
        if user is None:
            password = None if bot else secrets.token_urlsafe(9)  # None: an unusable password
            user = user_model.objects.create_user(
                username=username, password=password, is_staff=is_admin, is_superuser=is_admin
            )
            user.groups.add(group)  # the user's creation and role are audited by the audit app's receivers
            report.created.append(f"user {username}")
            if password is not None:
                report.logins.append((username, password))
            continue
        changed = False  # audited by the audit app's receivers, as any change of roles or flags is
        if not user.groups.filter(pk=group.pk).exists():
            user.groups.add(group)
            changed = True
        if is_admin and not (user.is_staff and user.is_superuser):
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
            changed = True
        if changed:
            report.changed.append(f"user {username}")
        if reset_passwords and not bot:
            password = secrets.token_urlsafe(9)
            user.set_password(password)
            user.save(update_fields=["password"])
            # The event says that it happened, never what the password is.
            audit_record(event="auth.user.password_reset", obj=user, after={"username": username})
            report.logins.append((username, password))
