"""The dispositions on the files: ``quarantine-release``, ``quarantine-discard``, ``quarantine-keep`` and
``quarantine-cleanup`` (seed 003, section 5: recover, delete, keep for later, retention).

Every verb acts on what its plan listed (``ctx.plan``, the one shown and approved): the plan names each
quarantine file with its size and its matching rows, and execute refuses a file that changed since (its
size differs or it is gone) instead of acting on something nobody saw. Rows quarantined after the plan
(new files, same reason, same days) are left where they are and named by ``verify``: they need their own
request.

Exactly once, through the ledger (``ledger.py``) and names derived from the action id:

- a release writes its ledger record (``pending``) first, then one valid file per day
  (``{root}/{table}/ingest_dt=D/released-{action_id}.parquet``, the metadata columns dropped), then takes
  the rows out of quarantine: a file holding only released rows is deleted, any other is written again
  without them as ``rewritten-{action_id}-NNN.parquet`` before the original is deleted (GCS has no rename),
  and last marks the record ``done``. A re-delivery reads the record and redoes only what is missing: a
  valid file already holding its rows is not written again, an original already gone is not read again.
  Until ``done`` the valid files are not counted (``ledger.pending_valid_files``), so no row counts twice.
- a discard does the same without the valid side; keep writes one record; cleanup records the files it
  deletes before deleting them.

The data files are read and written with pyarrow through the store's fsspec filesystem (local disk or GCS),
one file at a time (a quarantine part is small), so schema drift between files does not matter: the rows
of one day are concatenated with their columns unified (a missing column is null).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import ConnectorError, ExecutionContext, Outcome, Plan, Risk, TargetRef, Touch, Verb, Verification
from connectors.quarantine import ledger
from connectors.quarantine.config import (
    METADATA_COLUMNS,
    REASON_COLUMN,
    TableLocator,
    check_table,
    parse_locator,
)
from connectors.quarantine.store import Store

if TYPE_CHECKING:
    from connectors.quarantine.connector import QuarantineConnector

MAX_DAYS = 31
MAX_NOTE = 2000
MAX_KEEP_DAYS = 365
MAX_REASON = 1000
# a cleanup above this is not routine any more (a wrong as_of or retention, or a backlog): HIGH, approval in prod
CLEANUP_HIGH_BYTES = 50 * 2**30
CLEANUP_HIGH_PARTITIONS = 500
FILE = "quarantine_file"
PARTITION = "quarantine_partition"
VALID = "valid_partition"


def today_utc() -> date:
    return datetime.now(UTC).date()


def _now() -> str:
    return datetime.now(UTC).isoformat()


# ------------------------------------------------------------------------------------------------ params


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _DayRange(_Params):
    """``from_date`` .. ``to_date`` (inclusive): the ``ingest_dt`` partitions acted on, at most 31 days."""

    from_date: date
    to_date: date

    @model_validator(mode="after")
    def _range(self) -> _DayRange:
        if self.from_date > self.to_date:
            raise ValueError(f"from_date {self.from_date} is after to_date {self.to_date}")
        if (self.to_date - self.from_date).days + 1 > MAX_DAYS:
            raise ValueError(f"at most {MAX_DAYS} days at a time ({self.from_date} .. {self.to_date} is more)")
        return self

    def days(self) -> list[date]:
        return [self.from_date + timedelta(days=n) for n in range((self.to_date - self.from_date).days + 1)]


def _reason(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("reason is blank")
    return value


class ReleaseParams(_DayRange):
    """The records of one quarantine reason in a day range go back to the valid partitions."""

    reason: str = Field(min_length=1, max_length=MAX_REASON)

    _blank = field_validator("reason")(_reason)


class DiscardParams(_DayRange):
    """The records of one reason (None: every reason) in a day range are deleted."""

    reason: str | None = Field(default=None, min_length=1, max_length=MAX_REASON)

    _blank = field_validator("reason")(_reason)


class KeepParams(_DayRange):
    """The records of one reason in a day range are kept past retention until ``expires`` (inclusive)."""

    reason: str = Field(min_length=1, max_length=MAX_REASON)
    note: str = Field(min_length=1, max_length=MAX_NOTE)
    expires: date

    _blank = field_validator("reason")(_reason)

    @field_validator("note")
    @classmethod
    def _note(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a keep needs a note saying why")
        return value

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: date) -> date:
        today = today_utc()
        if value <= today:
            raise ValueError(f"expires must be after today ({today})")
        if value > today + timedelta(days=MAX_KEEP_DAYS):
            raise ValueError(f"expires must be at most {MAX_KEEP_DAYS} days ahead ({today + timedelta(MAX_KEEP_DAYS)})")
        return value


class CleanupParams(_Params):
    """Delete the quarantine partitions older than ``retention_days`` (default: the source's) before
    ``as_of`` (default: today, UTC), except kept ones."""

    retention_days: int | None = Field(default=None, ge=1, le=3650)
    as_of: date | None = None

    @field_validator("as_of")
    @classmethod
    def _as_of(cls, value: date | None) -> date | None:
        if value is not None and value > today_utc():
            raise ValueError(f"as_of {value} is in the future (a cleanup never runs ahead of today)")
        return value


# ------------------------------------------------------------------------------------------------- files


@contextmanager
def _io(store: Store, what: str, path: str) -> Iterator[None]:
    """Storage and parquet errors as ConnectorErrors (network: transient; an unreadable file: permanent).
    FileNotFoundError passes through: callers decide what a missing file means."""
    try:
        yield
    except FileNotFoundError:
        raise
    except pa.ArrowInvalid as exc:
        raise ConnectorError(f"{what} {store.url(path)} failed: not a readable parquet file ({exc})") from None
    except store.errors as exc:
        raise ConnectorError(f"{what} {store.url(path)} failed: {exc}", transient=True) from None


def read_table(store: Store, path: str, columns: list[str] | None = None) -> pa.Table:
    """One parquet file (only ``columns`` when given; no hive partition column is added)."""
    with _io(store, "reading", path), store.fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        if columns is not None:
            columns = [c for c in columns if c in parquet.schema_arrow.names]
        return parquet.read(columns=columns)


def footer_rows(store: Store, path: str) -> int:
    """The row count of a parquet file from its footer (FileNotFoundError when it is gone)."""
    with _io(store, "reading", path), store.fs.open(path, "rb") as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def num_rows(store: Store, path: str) -> int | None:
    """The row count of a parquet file from its footer; None when the file is missing or unreadable (a
    write cut short on local disk)."""
    try:
        return footer_rows(store, path)
    except FileNotFoundError:
        return None
    except ConnectorError as exc:
        if exc.transient:
            raise
        return None


def write_table(store: Store, path: str, table: pa.Table) -> None:
    """Write ``table`` as a parquet file in one request (GCS: one upload, never seen half written)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    with _io(store, "writing", path):
        if not store.remote:  # GCS has no directories; a local disk needs the partition directory first
            store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        store.fs.pipe_file(path, sink.getvalue().to_pybytes())


def delete_file(store: Store, path: str) -> None:
    """Delete one file; already gone is fine (a re-delivery)."""
    try:
        with _io(store, "deleting", path):
            store.fs.rm_file(path)
    except FileNotFoundError:
        pass


def exists(store: Store, path: str) -> bool:
    with _io(store, "looking for", path):
        return bool(store.fs.exists(path))


def prune_dir(store: Store, directory: str) -> None:
    """Remove a local partition directory left empty (GCS has no directories: nothing to do there), so an
    emptied partition does not stay listed as a day."""
    if store.remote or store.ls(directory):
        return
    with suppress(OSError):  # gone already, or something was written into it meanwhile
        store.fs.rmdir(directory)


def matching(table: pa.Table, reason: str | None) -> pa.ChunkedArray | pa.Array:
    """A boolean mask of the rows quarantined for ``reason`` (None: every row)."""
    if reason is None:
        return pa.array([True] * table.num_rows, type=pa.bool_())
    if REASON_COLUMN not in table.column_names:
        return pa.array([False] * table.num_rows, type=pa.bool_())
    return pc.fill_null(pc.equal(table[REASON_COLUMN].cast(pa.string()), reason), False)


@dataclass(frozen=True)
class QFile:
    """A quarantine file a disposition acts on: its matching rows out of its total, as planned."""

    day: date
    path: str
    size: int
    rows: int
    total: int

    @property
    def whole(self) -> bool:
        """Every row matches: the file is deleted rather than written again."""
        return self.rows == self.total

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "path": self.path,
            "size": self.size,
            "rows": self.rows,
            "total": self.total,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> QFile:
        return cls(
            day=date.fromisoformat(str(raw["day"])),
            path=str(raw["path"]),
            size=int(raw["size"]),
            rows=int(raw["rows"]),
            total=int(raw["total"]),
        )

    def touch(self, store: Store, *, action: str | None = None) -> Touch:
        """The file as a plan shows it, with what happens to it (by default: ``delete`` or ``rewrite``)."""
        action = action or ("delete" if self.whole else "rewrite")
        return Touch(kind=FILE, name=store.url(self.path), detail={**self.as_json(), "action": action})


def scan(store: Store, table: str, days: list[date], reason: str | None) -> list[QFile]:
    """The quarantine files of ``table`` on ``days`` holding rows of ``reason`` (None: any), with counts.
    Reads only the reason column (or only the footer when every row matches)."""
    wanted = set(days)
    found = []
    for day in store.days(table, quarantined=True):
        if day not in wanted:
            continue
        for info in store.files(table, day, quarantined=True):
            try:
                if reason is None:
                    total = rows = footer_rows(store, info.path)
                else:
                    column = read_table(store, info.path, [REASON_COLUMN])
                    total, rows = column.num_rows, int(pc.sum(matching(column, reason)).as_py() or 0)
            except FileNotFoundError:
                continue  # removed between listing and reading
            if rows:
                found.append(QFile(day=day, path=info.path, size=info.size, rows=rows, total=total))
    return found


def planned_files(store: Store, plan: Plan, table: str, days: list[date]) -> list[QFile]:
    """The quarantine files a plan lists, each checked to be a parquet file directly in one of the
    request's partitions: execute deletes what the stored plan names, so it never trusts a path blindly."""
    files = [QFile.from_json(dict(t.detail)) for t in plan.touches if t.kind == FILE]
    for qfile in files:
        if qfile.day not in days:
            raise ConnectorError(f"the plan lists a file of {qfile.day}, outside the requested days")
        check_in_partition(store, table, qfile.day, qfile.path)
    return files


def check_in_partition(store: Store, table: str, day: date, path: str) -> None:
    """``path`` is a parquet file directly inside the quarantine partition (table, day); else permanent."""
    directory, _, name = path.rpartition("/")
    if directory != store.partition_dir(table, day, quarantined=True) or not name.endswith(".parquet"):
        raise ConnectorError(f"the plan names {store.url(path)}, not a file of quarantine partition {table}/{day}")


def check_unchanged(store: Store, files: list[QFile]) -> None:
    """Every planned file is still there with the planned size; a permanent error naming the first that is
    not (another disposition or a pipeline changed it): the approved plan no longer describes the data."""
    for qfile in files:
        try:
            with _io(store, "looking at", qfile.path):
                size = int(store.fs.info(qfile.path).get("size") or 0)
        except FileNotFoundError:
            size = -1
        if size != qfile.size:
            state = "is gone" if size < 0 else f"changed size ({qfile.size} -> {size} bytes)"
            raise ConnectorError(
                f"{store.url(qfile.path)} {state} since the plan: nothing done; look again and request anew"
            )


def rewritten_path(qfile: QFile, action_id: str, index: int) -> str:
    return f"{qfile.path.rsplit('/', 1)[0]}/rewritten-{action_id}-{index:03d}.parquet"


def remove_from_quarantine(
    store: Store, record: dict[str, Any], reason: str | None, ctx: ExecutionContext
) -> tuple[list[str], dict[str, str]]:
    """Take the recorded files' matching rows out of quarantine: a file of matching rows only is deleted;
    any other is first written again without them (under a name derived from the action id, so a
    re-delivery finds it), then the original is deleted. Returns (deleted, {original: rewritten})."""
    deleted: list[str] = []
    rewritten: dict[str, str] = {}
    files = [QFile.from_json(f) for f in record["planned"]]
    for index, qfile in enumerate(files):
        ctx.heartbeat()
        if qfile.whole:
            delete_file(store, qfile.path)
            deleted.append(qfile.path)
            continue
        target = rewritten_path(qfile, str(record["action_id"]), index)
        rest = qfile.total - qfile.rows
        if exists(store, qfile.path):
            if num_rows(store, target) != rest:
                try:
                    whole = read_table(store, qfile.path)
                except FileNotFoundError:
                    raise ConnectorError(f"{store.url(qfile.path)} vanished while being rewritten") from None
                kept = whole.filter(pc.invert(matching(whole, reason)))
                if kept.num_rows != rest:
                    raise ConnectorError(
                        f"{store.url(qfile.path)} holds {whole.num_rows - kept.num_rows} matching rows, "
                        f"the plan said {qfile.rows}: left as it is"
                    )
                write_table(store, target, kept)
            delete_file(store, qfile.path)
        elif num_rows(store, target) != rest:
            raise ConnectorError(
                f"{store.url(qfile.path)} is gone but its rewritten copy {store.url(target)} is not complete: "
                "something else removed it; look at the partition"
            )
        rewritten[qfile.path] = target
    for directory in sorted({f.path.rsplit("/", 1)[0] for f in files}):
        prune_dir(store, directory)
    return deleted, rewritten


def _common(table: str | None, reason: str | None, start: date | None, end: date | None) -> dict[str, Any]:
    return {
        "table": table,
        "reason": reason,
        "from_date": start.isoformat() if start else None,
        "to_date": end.isoformat() if end else None,
    }


def _totals(files: list[QFile]) -> dict[str, int]:
    return {"rows": sum(f.rows for f in files), "files": len(files), "bytes": sum(f.size for f in files)}


def _per_day(files: list[QFile]) -> dict[str, int]:
    days: dict[str, int] = {}
    for qfile in files:
        days[qfile.day.isoformat()] = days.get(qfile.day.isoformat(), 0) + qfile.rows
    return dict(sorted(days.items()))


def _what(table: str, reason: str | None, params: _DayRange) -> str:
    reason_text = f"reason {reason!r}" if reason is not None else "every reason"
    return f"{table}, {reason_text}, {params.from_date} .. {params.to_date}"


def _remaining(
    store: Store, table: str, params: _DayRange, reason: str | None, record: dict[str, Any]
) -> tuple[list[str], list[QFile]]:
    """After a release or discard: the problems (planned rows still in quarantine) and the files holding
    rows of the reason that arrived after the plan (not acted on; named, not a failure)."""
    planned = {f["path"] for f in record["planned"]}
    ours = set(record.get("rewritten", {}).values())
    problems, later = [], []
    for qfile in scan(store, table, params.days(), reason):
        if qfile.path in planned:
            problems.append(f"{store.url(qfile.path)} still holds {qfile.rows} of the planned rows")
        elif qfile.path in ours:
            problems.append(f"the rewritten {store.url(qfile.path)} still holds {qfile.rows} matching rows")
        else:
            later.append(qfile)
    return problems, later


# ----------------------------------------------------------------------------------------------- release


class Release(Verb["QuarantineConnector", ReleaseParams]):
    name = "quarantine-release"
    connector: QuarantineConnector
    params_model = ReleaseParams
    target_kinds = ("quarantine_table",)
    description = (
        "Replay the quarantined records of one reason and day range into the valid partitions (a new file "
        "named after the action, metadata columns dropped), then remove them from quarantine."
    )

    def plan(self, target: TargetRef, params: ReleaseParams) -> Plan:
        """The files holding the reason's rows in the days (Touch per file: delete or rewrite), the rows per
        day and the valid partitions written; ConnectorError when there is nothing to release."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        store = self.connector.store
        files = scan(store, locator.table, params.days(), params.reason)
        totals = _totals(files)
        if not files:
            raise ConnectorError(
                f"nothing to release: no quarantined rows of {_what(locator.table, params.reason, params)}"
            )
        per_day = _per_day(files)
        valid = [
            Touch(
                kind=VALID,
                name=store.url(store.partition_dir(locator.table, date.fromisoformat(d), quarantined=False)),
                detail={"day": d, "rows": rows, "file": "released-{action_id}.parquet"},
            )
            for d, rows in per_day.items()
        ]
        rewrites = sum(1 for f in files if not f.whole)
        return Plan(
            summary=(
                f"release {totals['rows']} rows of {_what(locator.table, params.reason, params)}: "
                f"{len(per_day)} valid files written, {len(files) - rewrites} quarantine files deleted, "
                f"{rewrites} rewritten without those rows"
            ),
            touches=[f.touch(store) for f in files] + valid,
            counts={**totals, "days": len(per_day)},
            estimated_bytes=totals["bytes"],
            risk=Risk.MEDIUM,
            details={
                **_common(locator.table, params.reason, params.from_date, params.to_date),
                **totals,
                "days": per_day,
            },
        )

    def execute(self, target: TargetRef, params: ReleaseParams, ctx: ExecutionContext) -> Outcome:
        """Release what the plan listed, once per action id; a re-delivery completes what is left."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        store = self.connector.store
        action_id = ledger.check_action_id(ctx.action_id)
        record = ledger.read(store, ledger.RELEASED, action_id)
        if record is not None and record.get("state") == ledger.DONE:
            ctx.log(f"already released by this action at {record.get('finished_at')}")
            return _release_outcome(record, already_done=True)
        if record is None:
            files = planned_files(store, ctx.plan or self.plan(target, params), locator.table, params.days())
            if ctx.cancel_requested():
                raise ConnectorError("cancelled on request before anything was written")
            check_unchanged(store, files)
            per_day = _per_day(files)
            record = {
                "action_id": action_id,
                "state": ledger.PENDING,
                **_common(locator.table, params.reason, params.from_date, params.to_date),
                **_totals(files),
                "days": per_day,
                "planned": [f.as_json() for f in files],
                "started_at": _now(),
            }
            valid = [valid_path(store, record, day) for day in per_day]
            taken = [store.url(path) for path in valid if exists(store, path)]
            if taken:  # an action id is new: a file of its name is not ours to overwrite
                raise ConnectorError(f"{', '.join(taken)} already exists: nothing done, nothing overwritten")
            record = ledger.write(store, ledger.RELEASED, {**record, "valid_files": valid})
        elif record.get("state") == ledger.FAILED:
            raise ConnectorError(f"this release failed before and was undone: {record.get('error')}")
        else:
            ctx.log("resuming a release this action started: completing what is left")
        try:
            write_valid(store, record, ctx)
        except ConnectorError as exc:
            if exc.transient:
                raise  # retried: the next attempt completes the record
            _undo_valid(store, record, exc, ctx)
            raise
        ctx.executed(
            f"wrote {record['rows']} released rows to {len(record['valid_files'])} valid files",
            {"valid_files": [store.url(p) for p in record["valid_files"]]},
        )
        deleted, rewritten = remove_from_quarantine(store, record, params.reason, ctx)
        record = ledger.write(
            store,
            ledger.RELEASED,
            {**record, "state": ledger.DONE, "deleted": deleted, "rewritten": rewritten, "finished_at": _now()},
        )
        ctx.log(f"released {record['rows']} rows; {len(deleted)} quarantine files deleted, {len(rewritten)} rewritten")
        return _release_outcome(record, already_done=False)

    def verify(self, target: TargetRef, params: ReleaseParams, outcome: Outcome) -> Verification:
        """Re-count both sides: the action's valid files hold its rows (per day), and none of the planned
        rows is still quarantined. Rows of the reason quarantined after the plan are named, not a failure."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        store = self.connector.store
        action_id = str(outcome.details.get("action_id", ""))
        record = ledger.read(store, ledger.RELEASED, action_id) if action_id else None
        if record is None or record.get("state") != ledger.DONE:
            state = "missing" if record is None else record.get("state")
            return Verification(ok=False, summary=f"the release ledger of action {action_id!r} is {state}")
        problems = []
        valid_rows = 0
        for day, rows in record["days"].items():
            path = valid_path(store, record, day)
            found = num_rows(store, path)
            valid_rows += found or 0
            if found is None:
                problems.append(f"{store.url(path)} is missing ({rows} rows were released for {day})")
            elif found != rows:
                problems.append(f"{store.url(path)} holds {found} rows, {rows} were released for {day}")
        left, later = _remaining(store, locator.table, params, params.reason, record)
        problems += left
        details = {"valid_rows": valid_rows, "released": record["rows"], "quarantined_since_plan": _totals(later)}
        if problems:
            return Verification(ok=False, summary="; ".join(problems), details=details)
        summary = f"{valid_rows} released rows in {len(record['valid_files'])} valid files; none left in quarantine"
        if later:
            summary += f" ({sum(f.rows for f in later)} rows of that reason quarantined since the plan stay there)"
        return Verification(ok=True, summary=summary, details=details)


def valid_path(store: Store, record: dict[str, Any], day: str) -> str:
    """The valid file a release writes for ``day``: new in the valid partition, named after the action."""
    partition = store.partition_dir(str(record["table"]), date.fromisoformat(day), quarantined=False)
    return f"{partition}/released-{ledger.check_action_id(str(record['action_id']))}.parquet"


def write_valid(store: Store, record: dict[str, Any], ctx: ExecutionContext) -> None:
    """Write each day's released rows (metadata columns dropped) to the day's valid file, unless a complete
    one is there already (an earlier delivery). All valid files are complete before any quarantine file is
    touched, so the rows they are made from are still in quarantine whenever one has to be written."""
    files = [QFile.from_json(f) for f in record["planned"]]
    reason = record["reason"]
    for day, rows in record["days"].items():
        path = valid_path(store, record, day)
        ctx.heartbeat()
        if ctx.cancel_requested():  # only here: once rows leave quarantine, finishing is the safe way out
            raise ConnectorError("cancelled on request while writing the valid files")
        if num_rows(store, path) == rows:
            ctx.log(f"{store.url(path)} already holds its {rows} rows: not written again")
            continue
        parts = []
        for qfile in (f for f in files if f.day.isoformat() == day):
            try:
                whole = read_table(store, qfile.path)
            except FileNotFoundError:
                raise ConnectorError(
                    f"{store.url(qfile.path)} is gone before its rows were released: look at the partition"
                ) from None
            chosen = whole.filter(matching(whole, reason))
            if chosen.num_rows != qfile.rows:
                raise ConnectorError(
                    f"{store.url(qfile.path)} holds {chosen.num_rows} rows of the reason, the plan said {qfile.rows}"
                )
            parts.append(chosen.drop_columns([c for c in METADATA_COLUMNS if c in chosen.column_names]))
        try:  # columns added or widened between files of the day: unified (a missing column is null)
            rows_of_day = pa.concat_tables(parts, promote_options="permissive")
        except pa.ArrowException as exc:
            raise ConnectorError(f"the released rows of {day} do not fit one schema: {exc}") from None
        write_table(store, path, rows_of_day)
        ctx.log(f"wrote {rows} rows to {store.url(path)}")


def _undo_valid(store: Store, record: dict[str, Any], exc: ConnectorError, ctx: ExecutionContext) -> None:
    """A release that cannot write its valid files (rows that fit no schema, a planned file that changed)
    is undone before anything left quarantine: its valid files are deleted and the record marked
    ``failed``, so nothing stays pending (uncounted, and kept from cleanup) for good."""
    for path in record["valid_files"]:
        delete_file(store, path)
    ledger.write(
        store, ledger.RELEASED, {**record, "state": ledger.FAILED, "error": exc.message, "finished_at": _now()}
    )
    ctx.log(f"release undone: no valid file left, every row still in quarantine ({exc.message})")


def _release_outcome(record: dict[str, Any], *, already_done: bool) -> Outcome:
    keys = ("table", "reason", "from_date", "to_date", "rows", "files", "bytes", "days", "valid_files")
    verb = "was already released" if already_done else "released"
    return Outcome(
        summary=f"{record['rows']} rows of {record['table']} ({record['reason']}) {verb} to the valid partitions",
        details={"action_id": record["action_id"], **{k: record[k] for k in keys}, **_removed(record)},
        already_done=already_done,
    )


def _removed(record: dict[str, Any]) -> dict[str, Any]:
    return {"deleted": record.get("deleted", []), "rewritten": record.get("rewritten", {})}


# ----------------------------------------------------------------------------------------------- discard


class Discard(Verb["QuarantineConnector", DiscardParams]):
    name = "quarantine-discard"
    connector: QuarantineConnector
    params_model = DiscardParams
    target_kinds = ("quarantine_table",)
    description = "Delete the quarantined records of one reason (or every reason) in a day range."

    def plan(self, target: TargetRef, params: DiscardParams) -> Plan:
        """The files holding the rows (delete or rewrite) with bytes; HIGH risk (data is gone for good)."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        store = self.connector.store
        files = scan(store, locator.table, params.days(), params.reason)
        if not files:
            raise ConnectorError(
                f"nothing to discard: no quarantined rows of {_what(locator.table, params.reason, params)}"
            )
        totals = _totals(files)
        rewrites = sum(1 for f in files if not f.whole)
        return Plan(
            summary=(
                f"delete {totals['rows']} quarantined rows of {_what(locator.table, params.reason, params)}: "
                f"{len(files) - rewrites} files deleted, {rewrites} rewritten without those rows "
                f"({totals['bytes']} bytes touched)"
            ),
            touches=[f.touch(store) for f in files],
            counts={**totals, "days": len(_per_day(files))},
            estimated_bytes=totals["bytes"],
            risk=Risk.HIGH,
            warnings=["the discarded records cannot be recovered"],
            details={
                **_common(locator.table, params.reason, params.from_date, params.to_date),
                **totals,
                "days": _per_day(files),
            },
        )

    def execute(self, target: TargetRef, params: DiscardParams, ctx: ExecutionContext) -> Outcome:
        """Discard what the plan listed, once per action id; a re-delivery completes what is left."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        store = self.connector.store
        action_id = ledger.check_action_id(ctx.action_id)
        record = ledger.read(store, ledger.DISCARDED, action_id)
        if record is not None and record.get("state") == ledger.DONE:
            ctx.log(f"already discarded by this action at {record.get('finished_at')}")
            return _discard_outcome(record, already_done=True)
        if record is None:
            files = planned_files(store, ctx.plan or self.plan(target, params), locator.table, params.days())
            if ctx.cancel_requested():
                raise ConnectorError("cancelled on request before anything was deleted")
            check_unchanged(store, files)
            record = ledger.write(
                store,
                ledger.DISCARDED,
                {
                    "action_id": action_id,
                    "state": ledger.PENDING,
                    **_common(locator.table, params.reason, params.from_date, params.to_date),
                    **_totals(files),
                    "days": _per_day(files),
                    "planned": [f.as_json() for f in files],
                    "started_at": _now(),
                },
            )
        else:
            ctx.log("resuming a discard this action started: completing what is left")
        deleted, rewritten = remove_from_quarantine(store, record, params.reason, ctx)
        record = ledger.write(
            store,
            ledger.DISCARDED,
            {**record, "state": ledger.DONE, "deleted": deleted, "rewritten": rewritten, "finished_at": _now()},
        )
        ctx.log(f"discarded {record['rows']} rows; {len(deleted)} files deleted, {len(rewritten)} rewritten")
        return _discard_outcome(record, already_done=False)

    def verify(self, target: TargetRef, params: DiscardParams, outcome: Outcome) -> Verification:
        """None of the planned rows is left in quarantine (rows quarantined since the plan are named)."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        store = self.connector.store
        action_id = str(outcome.details.get("action_id", ""))
        record = ledger.read(store, ledger.DISCARDED, action_id) if action_id else None
        if record is None or record.get("state") != ledger.DONE:
            state = "missing" if record is None else record.get("state")
            return Verification(ok=False, summary=f"the discard ledger of action {action_id!r} is {state}")
        problems, later = _remaining(store, locator.table, params, params.reason, record)
        details = {"discarded": record["rows"], "quarantined_since_plan": _totals(later)}
        if problems:
            return Verification(ok=False, summary="; ".join(problems), details=details)
        summary = f"none of the {record['rows']} discarded rows is left in quarantine"
        if later:
            summary += f" ({sum(f.rows for f in later)} matching rows quarantined since the plan stay there)"
        return Verification(ok=True, summary=summary, details=details)


def _discard_outcome(record: dict[str, Any], *, already_done: bool) -> Outcome:
    keys = ("table", "reason", "from_date", "to_date", "rows", "files", "bytes", "days")
    verb = "were already discarded" if already_done else "discarded"
    return Outcome(
        summary=f"{record['rows']} quarantined rows of {record['table']} {verb}",
        details={"action_id": record["action_id"], **{k: record[k] for k in keys}, **_removed(record)},
        already_done=already_done,
    )


# -------------------------------------------------------------------------------------------------- keep


class Keep(Verb["QuarantineConnector", KeepParams]):
    name = "quarantine-keep"
    connector: QuarantineConnector
    params_model = KeepParams
    target_kinds = ("quarantine_table",)
    description = "Keep the quarantined records of one reason and day range past retention, with a note and an expiry."

    def plan(self, target: TargetRef, params: KeepParams) -> Plan:
        """The files (and rows) the keep covers, each marked ``keep``; changes no data (LOW)."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        store = self.connector.store
        files = scan(store, locator.table, params.days(), params.reason)
        if not files:
            raise ConnectorError(
                f"nothing to keep: no quarantined rows of {_what(locator.table, params.reason, params)}"
            )
        totals = _totals(files)
        per_day = _per_day(files)
        return Plan(
            summary=(
                f"keep {totals['rows']} rows of {_what(locator.table, params.reason, params)} until {params.expires}: "
                f"retention cleanup leaves {len(per_day)} partitions alone; no data changes"
            ),
            touches=[f.touch(store, action="keep") for f in files],
            counts={**totals, "days": len(per_day)},
            risk=Risk.LOW,
            details={
                **_common(locator.table, params.reason, params.from_date, params.to_date),
                **totals,
                "days": per_day,
                "expires": params.expires.isoformat(),
            },
        )

    def execute(self, target: TargetRef, params: KeepParams, ctx: ExecutionContext) -> Outcome:
        """Write the keep record named after the action id (once; a repeat finds it)."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        store = self.connector.store
        action_id = ledger.check_action_id(ctx.action_id)
        record = ledger.read(store, ledger.KEEP, action_id)
        if record is not None:
            return _keep_outcome(record, already_done=True)
        plan = ctx.plan or self.plan(target, params)
        record = ledger.write(
            store,
            ledger.KEEP,
            {
                "action_id": action_id,
                **_common(locator.table, params.reason, params.from_date, params.to_date),
                **{k: int(plan.details.get(k, 0)) for k in ("rows", "files", "bytes")},
                "note": params.note,
                "expires": params.expires.isoformat(),
                "created_at": _now(),
            },
        )
        ctx.log(f"kept {_what(locator.table, params.reason, params)} until {params.expires}")
        return _keep_outcome(record, already_done=False)

    def verify(self, target: TargetRef, params: KeepParams, outcome: Outcome) -> Verification:
        """The keep record reads back with the requested table, reason, days, note and expiry."""
        locator: TableLocator = parse_locator(target, self.target_kinds)
        action_id = str(outcome.details.get("action_id", ""))
        record = ledger.read(self.connector.store, ledger.KEEP, action_id) if action_id else None
        if record is None:
            return Verification(ok=False, summary=f"no keep record for action {action_id!r}")
        wanted = {
            **_common(locator.table, params.reason, params.from_date, params.to_date),
            "note": params.note,
            "expires": params.expires.isoformat(),
        }
        wrong = sorted(k for k, v in wanted.items() if record.get(k) != v)
        if wrong:
            return Verification(ok=False, summary=f"the keep record differs from the request in: {', '.join(wrong)}")
        return Verification(ok=True, summary=f"kept until {record['expires']}", details={"record": record})


def _keep_outcome(record: dict[str, Any], *, already_done: bool) -> Outcome:
    keys = ("table", "reason", "from_date", "to_date", "rows", "files", "bytes", "note", "expires")
    verb = "were already kept" if already_done else "kept"
    return Outcome(
        summary=f"{record['rows']} quarantined rows of {record['table']} {verb} until {record['expires']}",
        details={"action_id": record["action_id"], **{k: record[k] for k in keys}},
        already_done=already_done,
    )


# ----------------------------------------------------------------------------------------------- cleanup


class Cleanup(Verb["QuarantineConnector", CleanupParams]):
    name = "quarantine-cleanup"
    connector: QuarantineConnector
    params_model = CleanupParams
    target_kinds = ("quarantine",)
    description = "Delete the quarantine partitions older than the retention (ingest_dt), except kept ones."

    def plan(self, target: TargetRef, params: CleanupParams) -> Plan:
        """Every partition with ``ingest_dt`` before ``as_of - retention_days`` that no unexpired keep covers,
        with its files, rows (footers) and bytes. Nothing expired is a plan too (it changes nothing)."""
        parse_locator(target, self.target_kinds)
        store = self.connector.store
        retention = params.retention_days or self.connector.cfg.retention_days
        as_of = params.as_of or today_utc()
        cutoff = as_of - timedelta(days=retention)
        kept = ledger.kept_partitions(store, as_of=as_of)
        busy = ledger.partitions_in_progress(store)
        touches: list[Touch] = []
        spared: list[dict[str, Any]] = []
        in_progress: list[dict[str, Any]] = []
        for table in store.tables():
            for day in store.days(table, quarantined=True):
                if day >= cutoff:
                    continue
                if (table, day) in kept:
                    keeps = kept[(table, day)]
                    spared.append(
                        {
                            "table": table,
                            "day": day.isoformat(),
                            "until": max(k["expires"] for k in keeps),
                            "actions": [k["action_id"] for k in keeps],
                        }
                    )
                    continue
                if (table, day) in busy:
                    in_progress.append({"table": table, "day": day.isoformat(), "actions": busy[(table, day)]})
                    continue
                files: list[dict[str, Any]] = [
                    {"path": f.path, "size": f.size, "rows": num_rows(store, f.path) or 0}
                    for f in store.files(table, day, quarantined=True)
                ]
                directory = store.partition_dir(table, day, quarantined=True)
                size = sum(f["size"] for f in files)
                rows = sum(f["rows"] for f in files)
                touches.append(
                    Touch(
                        kind=PARTITION,
                        name=store.url(directory),
                        detail={
                            "table": table,
                            "day": day.isoformat(),
                            "path": directory,
                            "files": files,
                            "bytes": size,
                            "rows": rows,
                        },
                    )
                )
        tables, totals = _cleanup_counts([dict(t.detail) for t in touches])
        days = sorted(t.detail["day"] for t in touches)
        risk = Risk.LOW if not touches else Risk.MEDIUM
        warnings = []
        if retention < self.connector.cfg.retention_days:
            warnings.append(
                f"retention {retention} days is shorter than the source's {self.connector.cfg.retention_days}"
            )
        if totals["bytes"] > CLEANUP_HIGH_BYTES or totals["partitions"] > CLEANUP_HIGH_PARTITIONS:
            warnings.append("a large cleanup: more than a routine day's worth of partitions")
        if touches and warnings:
            risk = Risk.HIGH
        if touches:
            summary = (
                f"delete {totals['partitions']} quarantine partitions older than {retention} days (before {cutoff}): "
                f"{totals['files']} files, {totals['rows']} rows, {totals['bytes']} bytes"
            )
        else:
            summary = f"nothing to delete: no expired quarantine partition before {cutoff} (retention {retention} days)"
        if spared:
            summary += f"; {len(spared)} kept partitions left alone"
        if in_progress:
            summary += f"; {len(in_progress)} partitions of a release or discard in progress left for later"
        return Plan(
            summary=summary,
            touches=touches,
            counts=totals,
            estimated_bytes=totals["bytes"],
            warnings=warnings,
            risk=risk,
            details={
                **_common(None, None, date.fromisoformat(days[0]) if days else None, cutoff - timedelta(days=1)),
                "rows": totals["rows"],
                "files": totals["files"],
                "bytes": totals["bytes"],
                "partitions": totals["partitions"],
                "tables": tables,
                "kept": spared,
                "in_progress": in_progress,
                "retention_days": retention,
                "as_of": as_of.isoformat(),
            },
        )

    def execute(self, target: TargetRef, params: CleanupParams, ctx: ExecutionContext) -> Outcome:
        """Delete the files the plan listed (nothing found later), recorded first, once per action id."""
        parse_locator(target, self.target_kinds)
        store = self.connector.store
        action_id = ledger.check_action_id(ctx.action_id)
        record = ledger.read(store, ledger.CLEANUP, action_id)
        if record is not None and record.get("state") == ledger.DONE:
            return _cleanup_outcome(record, already_done=True)
        if record is None:
            plan = ctx.plan or self.plan(target, params)
            if ctx.cancel_requested():
                raise ConnectorError("cancelled on request before anything was deleted")
            partitions, spared = _still_expired(store, planned_partitions(store, plan), plan)
            for partition in spared:
                ctx.log(f"{partition['table']}/{partition['day']} is kept or in use since the plan: left alone")
            tables, totals = _cleanup_counts(partitions)
            record = ledger.write(
                store,
                ledger.CLEANUP,
                {
                    "action_id": action_id,
                    "state": ledger.PENDING,
                    **plan.details,
                    **totals,
                    "tables": tables,
                    "partitions": partitions,
                    "spared_since_plan": [{"table": p["table"], "day": p["day"]} for p in spared],
                    "started_at": _now(),
                },
            )
        partitions = record["partitions"]
        for done, partition in enumerate(partitions, start=1):
            for file in partition["files"]:
                delete_file(store, file["path"])
            prune_dir(store, partition["path"])
            ctx.heartbeat()
            ctx.progress(done, len(partitions))
        record = ledger.write(store, ledger.CLEANUP, {**record, "state": ledger.DONE, "finished_at": _now()})
        ctx.log(f"deleted {len(partitions)} quarantine partitions ({record['files']} files, {record['bytes']} bytes)")
        return _cleanup_outcome(record, already_done=False)

    def verify(self, target: TargetRef, params: CleanupParams, outcome: Outcome) -> Verification:
        """None of the planned files remains; files written into a planned partition since are named."""
        parse_locator(target, self.target_kinds)
        store = self.connector.store
        action_id = str(outcome.details.get("action_id", ""))
        record = ledger.read(store, ledger.CLEANUP, action_id) if action_id else None
        if record is None or record.get("state") != ledger.DONE:
            state = "missing" if record is None else record.get("state")
            return Verification(ok=False, summary=f"the cleanup ledger of action {action_id!r} is {state}")
        left: list[str] = []
        later: list[str] = []
        for partition in record["partitions"]:
            planned = {f["path"] for f in partition["files"]}
            for info in store.files(partition["table"], date.fromisoformat(partition["day"]), quarantined=True):
                (left if info.path in planned else later).append(store.url(info.path))
        details = {"left": left, "written_since_plan": later}
        if left:
            return Verification(
                ok=False, summary=f"{len(left)} planned files remain: {', '.join(left[:5])}", details=details
            )
        summary = f"none of the {len(record['partitions'])} planned partitions remains"
        if later:
            summary += f" ({len(later)} files written into them since the plan stay: {', '.join(later[:5])})"
        return Verification(ok=True, summary=summary, details=details)


def _cleanup_counts(partitions: list[dict[str, Any]]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per table and in all: partitions, files, rows and bytes of cleanup partitions (plan touch details)."""
    tables: dict[str, dict[str, int]] = {}
    for partition in partitions:
        counts = tables.setdefault(partition["table"], {"partitions": 0, "files": 0, "rows": 0, "bytes": 0})
        for key, value in (
            ("partitions", 1),
            ("files", len(partition["files"])),
            ("rows", partition["rows"]),
            ("bytes", partition["bytes"]),
        ):
            counts[key] += value
    totals = {k: sum(t[k] for t in tables.values()) for k in ("partitions", "files", "rows", "bytes")}
    return tables, totals


def _still_expired(
    store: Store, partitions: list[dict[str, Any]], plan: Plan
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The planned partitions split into those to delete and those a keep or an unfinished release or
    discard has claimed since the plan (a later decision to keep data wins over an earlier plan to delete)."""
    as_of = date.fromisoformat(str(plan.details.get("as_of") or today_utc().isoformat()))
    claimed = set(ledger.kept_partitions(store, as_of=as_of)) | set(ledger.partitions_in_progress(store))
    spared = [p for p in partitions if (p["table"], date.fromisoformat(p["day"])) in claimed]
    return [p for p in partitions if p not in spared], spared


def planned_partitions(store: Store, plan: Plan) -> list[dict[str, Any]]:
    """The partitions a cleanup plan lists, each file checked to lie in its quarantine partition."""
    partitions = [dict(t.detail) for t in plan.touches if t.kind == PARTITION]
    for partition in partitions:
        try:
            table, day = check_table(str(partition["table"])), date.fromisoformat(str(partition["day"]))
        except (KeyError, ValueError) as exc:
            raise ConnectorError(f"the plan lists a partition that is not one: {exc}") from None
        if partition["path"] != store.partition_dir(table, day, quarantined=True):
            raise ConnectorError(f"the plan names {partition['path']!r}, not the quarantine partition {table}/{day}")
        for file in partition["files"]:
            check_in_partition(store, table, day, str(file["path"]))
    return partitions


def _cleanup_outcome(record: dict[str, Any], *, already_done: bool) -> Outcome:
    keys = ("table", "reason", "from_date", "to_date", "rows", "files", "bytes", "tables", "kept", "spared_since_plan")
    verb = "were already deleted" if already_done else "deleted"
    return Outcome(
        summary=f"{len(record['partitions'])} expired quarantine partitions {verb} ({record['rows']} rows)",
        details={
            "action_id": record["action_id"],
            **{k: record[k] for k in keys},
            "partitions": len(record["partitions"]),
            "retention_days": record["retention_days"],
            "as_of": record["as_of"],
        },
        already_done=already_done,
    )
