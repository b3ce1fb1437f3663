"""The BigQuery verbs: ``refresh-mart``, ``backfill`` (date partitions, with a cost estimate) and
``restore-table`` (time travel into a new table, verified, then swapped in).

Each statement that changes something runs as a job with a deterministic id derived from the action id and
the step (``cp_<action>_<step>``) and the label ``cp_action``: a re-delivered ``execute`` finds its jobs and
does not run them again (:meth:`Session.run_once`). Plans dry-run what they will run, so they show the bytes
BigQuery would bill and, at the connection's ``on_demand_usd_per_tib``, the cost.
https://cloud.google.com/bigquery/docs/reference/rest/v2/Job#JobConfiguration (dryRun, maximumBytesBilled)
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import (
    ConnectorError,
    ExecutionContext,
    Outcome,
    Plan,
    Risk,
    TargetRef,
    Touch,
    UtcDatetime,
    Verb,
    Verification,
)
from connectors.bigquery.checks import last_refresh, partition_rows
from connectors.bigquery.client import job_id, param
from connectors.bigquery.config import MatviewLocator, TableLocator, column, parse_locator, table_ref

if TYPE_CHECKING:
    from connectors.bigquery.connector import BigQueryConnector

MAX_BACKFILL_DAYS = 366
DRY_RUN_WORKERS = 8
TIME_TRAVEL_DAYS = 7  # BigQuery's default time travel window
#: a plan's risk rises with its estimated cost (US dollars): below the first, low; below the second, medium
COST_RISK_USD = (1.0, 25.0)


def cost_risk(cost_usd: float) -> Risk:
    """The risk of spending ``cost_usd``: low under $1, medium under $25, high from there."""
    low, medium = COST_RISK_USD
    return Risk.LOW if cost_usd < low else Risk.MEDIUM if cost_usd < medium else Risk.HIGH


def restore_names(name: str, action_id: str) -> tuple[str, str]:
    """(the copy restored into, the name the current table is kept under) for an action's restore: suffixed with
    8 hex digits of the action id's hash, the same on every delivery, different for every action."""
    short = hashlib.sha256(action_id.encode()).hexdigest()[:8]
    return f"{name}_restore_{short}", f"{name}_before_{short}"


class _BigQueryVerb(Verb["BigQueryConnector", Any]):
    connector: BigQueryConnector

    def ref(self, dataset: str, name: str) -> str:
        return table_ref(self.connector.cfg.project, dataset, name)


# ------------------------------------------------------------------------------------------ refresh-mart


class RefreshMartParams(BaseModel):
    """``refresh-mart`` takes no parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RefreshMartVerb(_BigQueryVerb):
    """Refresh a materialized view (``CALL BQ.REFRESH_MATERIALIZED_VIEW``), once per action."""

    name = "refresh-mart"
    params_model = RefreshMartParams
    target_kinds = ("matview",)
    idempotent = True
    description = "Refresh a BigQuery materialized view now (CALL BQ.REFRESH_MATERIALIZED_VIEW)."

    def _call(self, locator: MatviewLocator) -> str:
        # CALL takes the view's name as a string; the parts are validated names (no quote can occur).
        return f"CALL BQ.REFRESH_MATERIALIZED_VIEW('{self.connector.cfg.project}.{locator.dataset}.{locator.name}')"

    def plan(self, target: TargetRef, params: RefreshMartParams) -> Plan:
        """The view, when it was last refreshed, and the bytes a full refresh reads (a dry run of its query:
        an upper bound, BigQuery refreshes incrementally where it can)."""
        locator: MatviewLocator = parse_locator(target, self.target_kinds)
        session, config = self.connector.session(), self.connector.cfg
        exists, refreshed = last_refresh(session, config.project, locator)
        if not exists:
            raise ConnectorError(f"{locator.display} is not a materialized view of {config.project}")
        view = session.call(
            f"reading {locator.display}",
            lambda: session.client.get_table(
                f"{config.project}.{locator.dataset}.{locator.name}", retry=session.retry, timeout=config.timeout_s
            ),
        )
        size = session.dry_run_bytes(view.mview_query or "SELECT 1", doing=f"estimating a refresh of {locator.display}")
        cost = config.cost_usd(size)
        when = "never refreshed" if refreshed is None else f"last refreshed {refreshed.isoformat()}"
        return Plan(
            summary=f"refresh {locator.display} ({when}; reads up to {size} bytes, ~${cost:.2f})",
            touches=[Touch(kind="matview", name=locator.display, detail={"last_refresh_time": when})],
            counts={"views": 1, "bytes": size},
            estimated_bytes=size,
            estimated_cost_usd=cost,
            risk=cost_risk(cost),
            details={"view": locator.display, "last_refresh_time": refreshed.isoformat() if refreshed else None},
        )

    def execute(self, target: TargetRef, params: RefreshMartParams, ctx: ExecutionContext) -> Outcome:
        """Run the refresh as this action's job; a re-delivery finds the job and reports ``already_done``."""
        locator: MatviewLocator = parse_locator(target, self.target_kinds)
        session = self.connector.session()
        job, already = session.run_once(
            job_id(ctx.action_id, "refresh"), self._call(locator), [], action_id=ctx.action_id,
            doing=f"refreshing {locator.display}",
            created=lambda j: ctx.executed(f"refresh of {locator.display} started", {"job_id": j.job_id}),
        )  # fmt: skip
        started = job.created or datetime.now(UTC)
        ctx.log(f"{locator.display} {'was already refreshed by' if already else 'refreshed in'} job {job.job_id}")
        return Outcome(
            summary=f"{locator.display} {'was already refreshed' if already else 'refreshed'} (job {job.job_id})",
            details={"view": locator.display, "job_id": job.job_id, "job_created": started.isoformat()},
            already_done=already,
        )

    def verify(self, target: TargetRef, params: RefreshMartParams, outcome: Outcome) -> Verification:
        """The view's last refresh is at or after the action's job was created."""
        locator: MatviewLocator = parse_locator(target, self.target_kinds)
        _, refreshed = last_refresh(self.connector.session(), self.connector.cfg.project, locator)
        created = datetime.fromisoformat(str(outcome.details["job_created"]))
        # The emulator and BigQuery stamp in milliseconds: a second of slack for clock rounding.
        ok = refreshed is not None and refreshed >= created - timedelta(seconds=1)
        when = refreshed.isoformat() if refreshed else "never"
        summary = f"{locator.display} last refreshed {when}" + (
            "" if ok else f", before the job ({created.isoformat()})"
        )
        return Verification(ok=ok, summary=summary, details={"last_refresh_time": when})


# --------------------------------------------------------------------------------------------- backfill


class BackfillParams(BaseModel):
    """``start_date`` to ``end_date`` (inclusive): the day partitions to reload with the target's
    ``load_query``, oldest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_date: date
    end_date: date

    @model_validator(mode="after")
    def _window(self) -> BackfillParams:
        if self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        if (self.end_date - self.start_date).days >= MAX_BACKFILL_DAYS:
            raise ValueError(f"a backfill covers at most {MAX_BACKFILL_DAYS} days")
        return self

    def days(self) -> list[date]:
        return [self.start_date + timedelta(days=n) for n in range((self.end_date - self.start_date).days + 1)]


class BackfillVerb(_BigQueryVerb):
    """Reload date partitions of a table: per day, one job deleting the partition and inserting the
    ``load_query``'s rows, in one transaction. The plan dry-runs both statements per day."""

    name = "backfill"
    params_model = BackfillParams
    target_kinds = ("table",)
    idempotent = True
    description = "Reload a table's day partitions from its load_query, with per-partition bytes and cost."

    def _locator(self, target: TargetRef) -> TableLocator:
        locator: TableLocator = parse_locator(target, self.target_kinds)
        missing = [name for name in ("partition_column", "load_query") if getattr(locator, name) is None]
        if missing:
            raise ConnectorError(f"{locator.display} cannot be backfilled: its catalog target lacks {missing}")
        return locator

    def _statements(self, locator: TableLocator) -> tuple[str, str]:
        table = self.ref(locator.dataset, locator.name)
        assert locator.partition_column is not None and locator.load_query is not None
        delete = f"DELETE FROM {table} WHERE {column(locator.partition_column)} = @partition_date"
        return delete, f"INSERT INTO {table} {locator.load_query}"

    def plan(self, target: TargetRef, params: BackfillParams) -> Plan:
        """Per partition: rows now and the dry-run bytes of its delete and load; the total and its cost."""
        locator = self._locator(target)
        session, config = self.connector.session(), self.connector.cfg
        rows_now = partition_rows(session, config.project, locator, params.start_date, params.end_date)
        delete, _ = self._statements(locator)
        load = str(locator.load_query)  # what the INSERT reads: BigQuery bills the SELECT, not the write

        def estimate(day: date) -> int:
            at = [param("partition_date", day)]
            doing = f"estimating the backfill of {locator.display} for {day}"
            return session.dry_run_bytes(delete, at, doing=doing) + session.dry_run_bytes(load, at, doing=doing)

        # Two dry runs per day, each a round trip: a year's backfill is planned in parallel, not in minutes.
        with ThreadPoolExecutor(max_workers=DRY_RUN_WORKERS, thread_name_prefix="bq-dry-run") as pool:
            sizes = list(pool.map(estimate, params.days()))
        touches, over_cap = [], []
        total = sum(sizes)
        for day, size in zip(params.days(), sizes, strict=True):
            if size > config.maximum_bytes_billed:
                over_cap.append(day.isoformat())
            touches.append(
                Touch(
                    kind="partition",
                    name=f"{locator.display}${day:%Y%m%d}",
                    detail={
                        "date": day.isoformat(),
                        "rows_now": rows_now[day],
                        "bytes": size,
                        "cost_usd": config.cost_usd(size),
                    },
                )
            )
        cost = config.cost_usd(total)
        warnings = [f"each partition's rows are deleted and reloaded in one transaction ({len(touches)} jobs)"]
        if over_cap:
            warnings.append(
                f"{len(over_cap)} partition(s) ({', '.join(over_cap)}) would bill more than maximum_bytes_billed "
                f"({config.maximum_bytes_billed} bytes): BigQuery will refuse those jobs"
            )
        return Plan(
            summary=f"backfill {len(touches)} partition(s) of {locator.display} "
            f"({params.start_date}..{params.end_date}): {total} bytes, ~${cost:.2f}",
            touches=touches,
            counts={"partitions": len(touches), "bytes": total, "rows_now": sum(rows_now.values())},
            estimated_bytes=total,
            estimated_cost_usd=cost,
            warnings=warnings,
            risk=cost_risk(cost),
            details={
                "table": locator.display,
                "partition_column": locator.partition_column,
                "partitions": [t.detail for t in touches],
                "maximum_bytes_billed": config.maximum_bytes_billed,
                "on_demand_usd_per_tib": config.on_demand_usd_per_tib,
            },
        )

    def execute(self, target: TargetRef, params: BackfillParams, ctx: ExecutionContext) -> Outcome:
        """One job per partition (``cp_<action>_backfill_<YYYYMMDD>``), oldest first; jobs an earlier delivery
        ran are found and not run again."""
        locator = self._locator(target)
        session = self.connector.session()
        delete, insert = self._statements(locator)
        script = f"BEGIN TRANSACTION;\n{delete};\n{insert};\nCOMMIT TRANSACTION;"
        days = params.days()
        done: list[dict[str, Any]] = []
        announced = False

        def created(job: Any) -> None:
            nonlocal announced
            if not announced:
                ctx.executed(f"backfill of {locator.display} started", {"first_job_id": job.job_id})
                announced = True

        for index, day in enumerate(days):
            if ctx.cancel_requested():
                raise ConnectorError(f"cancelled after {index} of {len(days)} partition(s); the rest were not reloaded")
            job, already = session.run_once(
                job_id(ctx.action_id, f"backfill_{day:%Y%m%d}"), script, [param("partition_date", day)],
                action_id=ctx.action_id, doing=f"reloading {locator.display} for {day}", created=created,
            )  # fmt: skip
            ctx.log(f"{day}: {'already reloaded by' if already else 'reloaded in'} job {job.job_id}")
            done.append({"date": day.isoformat(), "job_id": job.job_id, "already_done": already})
            ctx.progress(index + 1, len(days))
            ctx.heartbeat()
        all_done = all(item["already_done"] for item in done)
        return Outcome(
            summary=f"{'already ' if all_done else ''}reloaded {len(done)} partition(s) of {locator.display}",
            details={"table": locator.display, "partitions": done},
            already_done=all_done,
        )

    def verify(self, target: TargetRef, params: BackfillParams, outcome: Outcome) -> Verification:
        """Every partition's job finished without error, and the partitions' row counts now."""
        locator = self._locator(target)
        session, config = self.connector.session(), self.connector.cfg
        problems = []
        for item in outcome.details.get("partitions", []):
            job = session.find_job(str(item["job_id"]), doing=f"reading job {item['job_id']}")
            if job is None or job.state != "DONE" or job.error_result:
                problems.append(f"{item['date']}: job {item['job_id']} is {job.state if job else 'missing'}")
        counts = partition_rows(session, config.project, locator, params.start_date, params.end_date)
        details = {"rows": {day.isoformat(): rows for day, rows in counts.items()}}
        if problems:
            return Verification(ok=False, summary="; ".join(problems), details=details)
        return Verification(
            ok=True,
            summary=f"{len(counts)} partition(s) of {locator.display} reloaded: {sum(counts.values())} rows now",
            details=details,
        )


# ---------------------------------------------------------------------------------------- restore-table


class RestoreTableParams(BaseModel):
    """``timestamp``: the moment to restore the table to (within BigQuery's 7-day time travel window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: UtcDatetime = Field(description="restore the table as it was at this moment (UTC)")


class RestoreTableVerb(_BigQueryVerb):
    """Restore a table from time travel: copy it as of ``timestamp`` into ``<name>_restore_<action>``, check
    the copy's row count against the table as of then, then swap: the table becomes ``<name>_before_<action>``
    (kept, to drop once checked) and the copy takes its name."""

    name = "restore-table"
    params_model = RestoreTableParams
    target_kinds = ("table",)
    idempotent = True
    description = "Restore a table as of a past moment (time travel): copy, verify counts, swap in."

    def _count(self, locator: TableLocator, name: str, at: datetime | None = None) -> int:
        table = self.ref(locator.dataset, name)
        travel = " FOR SYSTEM_TIME AS OF @at" if at is not None else ""
        params = [param("at", at)] if at is not None else []
        when = f" as of {at.isoformat()}" if at else ""
        rows = self.connector.session().rows(
            f"SELECT COUNT(*) FROM {table}{travel}", params, doing=f"counting {locator.dataset}.{name}{when}"
        )
        return int(rows[0][0])

    def _window(self, at: datetime) -> None:
        now = datetime.now(UTC)
        if at >= now:
            raise ConnectorError(f"{at.isoformat()} is not in the past")
        if now - at > timedelta(days=TIME_TRAVEL_DAYS):
            raise ConnectorError(f"{at.isoformat()} is older than BigQuery's {TIME_TRAVEL_DAYS}-day time travel window")

    def plan(self, target: TargetRef, params: RestoreTableParams) -> Plan:
        """The timestamp, the rows now and then, the bytes the copy reads, and the names used for the swap."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        self._window(params.timestamp)
        config, session = self.connector.cfg, self.connector.session()
        rows_now = self._count(locator, locator.name)
        rows_then = self._count(locator, locator.name, params.timestamp)
        size = session.dry_run_bytes(
            f"SELECT * FROM {self.ref(locator.dataset, locator.name)} FOR SYSTEM_TIME AS OF @at",
            [param("at", params.timestamp)],
            doing=f"estimating the copy of {locator.display}",
        )
        cost = config.cost_usd(size)
        at = params.timestamp.isoformat()
        return Plan(
            summary=f"restore {locator.display} as of {at}: {rows_now} rows now -> {rows_then} rows then",
            touches=[
                Touch(kind="table", name=locator.display, detail={"rows_now": rows_now, "rows_then": rows_then}),
                Touch(kind="table", name=f"{locator.display}_restore_<action>", detail={"created": True}),
            ],
            counts={"tables": 1, "rows_now": rows_now, "rows_then": rows_then, "bytes": size},
            estimated_bytes=size,
            estimated_cost_usd=cost,
            locks=[f"{locator.display} is renamed away and replaced: readers in between find no table"],
            warnings=[
                f"rows written after {at} are not in the restored table; the current table is kept as "
                f"{locator.name}_before_<action> to compare and drop",
                "views and jobs reading the table by name read the restored one from the swap on",
            ],
            risk=Risk.HIGH,
            details={"timestamp": at, "rows_now": rows_now, "rows_then": rows_then, "table": locator.display},
        )

    def execute(self, target: TargetRef, params: RestoreTableParams, ctx: ExecutionContext) -> Outcome:
        """Copy (job ``restore_copy``), count, swap (job ``restore_swap``); a re-delivery resumes after the
        last job that ran and reports ``already_done`` when the swap ran."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        session, config = self.connector.session(), self.connector.cfg
        restored, before = restore_names(locator.name, ctx.action_id)
        details = {
            "table": locator.display,
            "kept_as": f"{locator.dataset}.{before}",
            "timestamp": params.timestamp.isoformat(),
        }
        swap_id = job_id(ctx.action_id, "restore_swap")
        swapped = session.find_job(swap_id, doing="looking for this action's swap")
        if swapped is not None:
            doing = f"swapping {locator.display}"
            session.settle(swapped, doing=doing)
            session.raise_if_failed(swapped, doing=doing)
            ctx.log(f"{locator.display} was already restored by job {swap_id}")
            rows = self._count(locator, locator.name)
            return Outcome(
                summary=f"{locator.display} was already restored ({rows} rows)",
                details=details | {"job_id": swap_id, "rows_restored": rows},
                already_done=True,
            )
        self._window(params.timestamp)
        original = session.call(
            f"reading {locator.display}",
            lambda: session.client.get_table(
                f"{config.project}.{locator.dataset}.{locator.name}", retry=session.retry, timeout=config.timeout_s
            ),
        )
        partitioning = original.time_partitioning.field if original.time_partitioning else None
        partition_by = f" PARTITION BY {column(partitioning)}" if partitioning else ""
        copy = (
            f"CREATE TABLE {self.ref(locator.dataset, restored)}{partition_by} AS "
            f"SELECT * FROM {self.ref(locator.dataset, locator.name)} FOR SYSTEM_TIME AS OF @at"
        )
        session.run_once(
            job_id(ctx.action_id, "restore_copy"), copy, [param("at", params.timestamp)], action_id=ctx.action_id,
            doing=f"copying {locator.display} as of {params.timestamp.isoformat()}",
            created=lambda j: ctx.executed(f"copy {locator.dataset}.{restored} created", {"job_id": j.job_id}),
        )  # fmt: skip
        rows_then = self._count(locator, locator.name, params.timestamp)
        rows_copied = self._count(locator, restored)
        if rows_copied != rows_then:
            raise ConnectorError(
                f"the copy {locator.dataset}.{restored} has {rows_copied} rows, the table had {rows_then} as of "
                f"{params.timestamp.isoformat()}: not swapped (the copy is left for inspection)"
            )
        ctx.log(f"copy {locator.dataset}.{restored} holds {rows_copied} rows, as the table did then: swapping")
        rows_now = self._count(locator, locator.name)
        swap = (
            f"ALTER TABLE {self.ref(locator.dataset, locator.name)} RENAME TO `{before}`;\n"
            f"ALTER TABLE {self.ref(locator.dataset, restored)} RENAME TO `{locator.name}`;"
        )
        session.run_once(swap_id, swap, [], action_id=ctx.action_id, doing=f"swapping {locator.display}")
        ctx.log(f"{locator.display} now holds the restored rows; the previous table is {locator.dataset}.{before}")
        return Outcome(
            summary=f"{locator.display} restored as of {details['timestamp']}: {rows_now} -> {rows_copied} rows",
            details=details | {"job_id": swap_id, "rows_before": rows_now, "rows_restored": rows_copied},
        )

    def verify(self, target: TargetRef, params: RestoreTableParams, outcome: Outcome) -> Verification:
        """The table holds as many rows as it did at ``timestamp``, and the previous table is kept."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        rows_then = int(outcome.details["rows_restored"])
        rows = self._count(locator, locator.name)
        kept_name = str(outcome.details["kept_as"]).split(".", 1)[1]
        kept = self._count(locator, kept_name)
        ok = rows == rows_then
        summary = (
            f"{locator.display} has {rows} rows, as it had at {params.timestamp.isoformat()}; "
            f"the previous table {locator.dataset}.{kept_name} ({kept} rows) is kept"
            if ok
            else f"{locator.display} has {rows} rows, expected {rows_then}"
        )
        return Verification(ok=ok, summary=summary, details={"rows": rows, "expected": rows_then, "kept_rows": kept})
