"""Loading files: stages, file formats, COPY INTO (load once, 64 days of load metadata) and pipes."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

from sandbox.snowflake import protocol as p
from sandbox.snowflake.core import Core, Session, columns, fqn, now, parse_ts, sql_like
from sandbox.snowflake.protocol import Column, SqlError
from sandbox.snowflake.sqltext import (
    NAME,
    find_keyword,
    lit,
    options,
    split_name,
    string_list,
    unquote,
)

LOAD_METADATA_TTL = dt.timedelta(days=64)
COPY_INTO = rf"COPY\s+INTO\s+({NAME})(?:\s*\(([^)]*)\))?\s+FROM\s+(@[^\s;]+)(.*)"

COPY_COLUMNS = columns(
    "file status rows_parsed:fixed rows_loaded:fixed error_limit:fixed errors_seen:fixed first_error "
    "first_error_line:fixed first_error_character:fixed first_error_column_name"
)
PIPE_COLUMNS = columns(
    "created_on:ts name database_name schema_name definition owner notification_channel comment integration pattern "
    "error_integration owner_role_type invalid_reason kind"
)


def _recent(loaded_at: str | None) -> bool:
    """True when a load recorded at ``loaded_at`` is still in the load metadata (64 days)."""
    return loaded_at is not None and now() - dt.datetime.fromisoformat(loaded_at) < LOAD_METADATA_TTL


class Loading(Core):
    """Stages (folders), CSV file formats, COPY INTO with load metadata, and pipes."""

    # ---------------------------------------------------------------------------------- stages and COPY

    def create_stage(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        if key in self.state["stages"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        opts = options(rest or "")
        url = unquote(opts["URL"]) if "URL" in opts else None
        if url is not None and not url.startswith("file://"):
            raise SqlError(f"the emulator's stages are folders: URL must be file:///..., not {url}", 1003, "42000")
        folder = Path(url.removeprefix("file://")) if url else self.directory / "stages" / db / schema / name
        if replace and not url:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.state["stages"][key] = {
            "database": db,
            "schema": schema,
            "name": name,
            "url": url,
            "folder": str(folder),
            "file_format": opts.get("FILE_FORMAT"),
            "created_on": now().isoformat(),
        }
        self.save()
        return p.status(f"Stage area {name} successfully created.")

    def stage_ref(self, session: Session, text: str) -> tuple[str, str]:
        """``@db.s.stage/sub/path`` -> (the stage's full name, ``sub/path``)."""
        name, _, subpath = text.removeprefix("@").partition("/")
        key = fqn(self.resolve(session, name))
        if key not in self.state["stages"]:
            raise SqlError(f"Stage '{key}' does not exist or not authorized.", 2003)
        return key, subpath

    def stage_files(self, key: str, subpath: str = "", pattern: str | None = None) -> list[str]:
        folder = Path(self.state["stages"][key]["folder"])
        found = sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file())
        found = [f for f in found if f.startswith(subpath)]
        return [f for f in found if pattern is None or re.fullmatch(pattern, f)]

    def list_stage(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        ref, rest = match.groups()
        key, subpath = self.stage_ref(session, ref)
        opts = options(rest or "")
        pattern = unquote(opts["PATTERN"]) if "PATTERN" in opts else None
        folder = Path(self.state["stages"][key]["folder"])
        rows = []
        for rel in self.stage_files(key, subpath, pattern):
            path = folder / rel
            stat = path.stat()
            modified = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
            digest = hashlib.md5(path.read_bytes()).hexdigest()
            rows.append([f"{key.split('.')[-1].lower()}/{rel}", stat.st_size, digest, modified])
        return p.rowset(columns("name size:fixed md5 last_modified"), rows)

    def create_file_format(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        if key in self.state["file_formats"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        opts = {k: unquote(v) for k, v in options(rest).items()}
        if opts.get("TYPE", "CSV").upper() != "CSV":
            raise SqlError("the emulator reads CSV files only (TYPE = CSV)", 1003, "42000")
        self.state["file_formats"][key] = opts
        self.save()
        return p.status(f"File format {name} successfully created.")

    def file_format(self, session: Session, raw: str | None, table: str) -> dict[str, str]:
        """The options of ``FILE_FORMAT = (FORMAT_NAME = 'f')`` or ``(TYPE = CSV ...)`` (default: plain CSV)."""
        if not raw:
            return {}
        inner = options(raw.strip()[1:-1] if raw.strip().startswith("(") else f"FORMAT_NAME = {raw}")
        if "FORMAT_NAME" not in inner:
            return {k: unquote(v) for k, v in inner.items()}
        parts = split_name(unquote(inner["FORMAT_NAME"]))
        db, schema, _name = table.split(".")
        candidates = (
            [fqn(self.resolve(session, unquote(inner["FORMAT_NAME"])))]
            if len(parts) == 3 or (session.database and session.schema)
            else []
        )
        candidates.append(".".join([db, schema][: 3 - len(parts)] + parts))
        for key in candidates:
            if key in self.state["file_formats"]:
                return dict(self.state["file_formats"][key])
        raise SqlError(f"File format '{unquote(inner['FORMAT_NAME'])}' does not exist or not authorized.", 2003)

    def copy_into(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        results = self.load(session, match)
        if not results:
            return p.rowset([Column("status")], [["Copy executed with 0 files processed."]])
        return p.rowset(COPY_COLUMNS, [r[:10] for r in results])

    def load(
        self,
        session: Session,
        match: re.Match[str],
        *,
        pipe: dict[str, Any] | None = None,
        only: list[str] | None = None,
    ) -> list[list[Any]]:
        """Run a parsed ``COPY INTO``: each staged CSV file not loaded into the table yet (64 days of load metadata,
        as Snowflake keeps) is inserted in one statement; the per-file result rows."""
        table_text, column_text, stage_text, rest = match.groups()
        table = fqn(self.resolve(session, table_text))
        stage, subpath = self.stage_ref(session, stage_text)
        opts = options(rest or "")
        files = string_list(opts["FILES"]) if "FILES" in opts else None
        pattern = unquote(opts["PATTERN"]) if "PATTERN" in opts else None
        force = unquote(opts.get("FORCE", "FALSE")).upper() == "TRUE"
        on_error = unquote(opts.get("ON_ERROR", "SKIP_FILE" if pipe else "ABORT_STATEMENT")).upper()
        fmt = self.file_format(session, opts.get("FILE_FORMAT") or self.state["stages"][stage]["file_format"], table)
        targets = [c.strip() for c in column_text.split(",")] if column_text else self.table_columns(session, table)
        candidates = self.stage_files(stage, subpath, pattern)
        if files is not None:
            missing = [f for f in files if f"{subpath}{f}" not in candidates and f not in candidates]
            if missing:
                raise SqlError(
                    f"Remote file '{missing[0]}' was not found. There are several potential causes.", 2003, "58030"
                )
            candidates = [c for c in candidates if c in files or c.removeprefix(subpath) in files]
        if only is not None:
            candidates = [c for c in candidates if c in only]
        loaded = self.state["load_metadata"].get(table, {})
        fresh = [c for c in candidates if force or not _recent(loaded.get(f"{stage}/{c}"))]
        own_transaction = not session.in_transaction and on_error == "ABORT_STATEMENT" and len(fresh) > 1
        if own_transaction:
            self.fs.query(session.token, "BEGIN")
        results: list[list[Any]] = []
        try:
            for rel in fresh:
                results.append(self._load_file(session, table, targets, stage, rel, fmt, on_error))
                if results[-1][1] == "LOAD_FAILED" and on_error == "ABORT_STATEMENT":
                    raise SqlError(str(results[-1][6]), 100038, "22018")
        except SqlError:
            if own_transaction:
                self.fs.query(session.token, "ROLLBACK")
            raise
        if own_transaction:
            self.fs.query(session.token, "COMMIT")
        self.after_commit(session, lambda: self._record_loads(table, stage, results, pipe))
        return results

    def _load_file(
        self, session: Session, table: str, targets: list[str], stage: str, rel: str, fmt: dict[str, str], on_error: str
    ) -> list[Any]:
        path = Path(self.state["stages"][stage]["folder"]) / rel
        enclosed = fmt.get("FIELD_OPTIONALLY_ENCLOSED_BY", "NONE")
        reader = csv.reader(
            io.StringIO(path.read_text(errors="replace")),
            delimiter=fmt.get("FIELD_DELIMITER", ","),
            quotechar=enclosed if enclosed.upper() != "NONE" else None,
            quoting=csv.QUOTE_MINIMAL if enclosed.upper() != "NONE" else csv.QUOTE_NONE,
        )
        records = [r for r in list(reader)[int(fmt.get("SKIP_HEADER", "0")) :] if r]
        null_if = set(string_list(fmt["NULL_IF"])) if "NULL_IF" in fmt else {"\\N"}
        good, first_error, first_line, errors = [], None, None, 0
        for line, record in enumerate(records, start=1 + int(fmt.get("SKIP_HEADER", "0"))):
            if len(record) != len(targets):
                errors += 1
                if first_error is None:
                    first_error = (
                        f"Number of columns in file ({len(record)}) does not match that of the "
                        f"corresponding table ({len(targets)}), use file format option "
                        "error_on_column_count_mismatch=false to ignore this error"
                    )
                    first_line = line
                continue
            good.append(["NULL" if v in null_if or v == "" else lit(v) for v in record])
        if errors and on_error != "CONTINUE":
            good = []
        loaded = 0
        if good:
            values = ", ".join(f"({', '.join(r)})" for r in good)
            try:
                self.fs.query(session.token, f"INSERT INTO {table} ({', '.join(targets)}) VALUES {values}")
                loaded = len(good)
            except SqlError as exc:
                errors, first_error, first_line = errors + len(good), exc.message, first_line or 1
        status = "LOADED" if not errors else "PARTIALLY_LOADED" if loaded else "LOAD_FAILED"
        return [rel, status, len(records), loaded, 1, errors, first_error, first_line, None, None, path.stat().st_size]

    def _record_loads(self, table: str, stage: str, results: list[list[Any]], pipe: dict[str, Any] | None) -> None:
        db, schema, name = table.split(".")
        stamp = now()
        for rel, status, parsed, loaded, limit, errors, error, line, _c, _n, size in results:
            if status != "LOAD_FAILED":
                self.state["load_metadata"].setdefault(table, {})[f"{stage}/{rel}"] = stamp.isoformat()
            self.insert_history(
                "COPY_HISTORY",
                {
                    "FILE_NAME": rel,
                    "STAGE_LOCATION": f"@{stage}/",
                    "LAST_LOAD_TIME": stamp,
                    "ROW_COUNT": loaded,
                    "ROW_PARSED": parsed,
                    "FILE_SIZE": size,
                    "FIRST_ERROR_MESSAGE": error,
                    "FIRST_ERROR_LINE_NUMBER": line,
                    "ERROR_COUNT": errors,
                    "ERROR_LIMIT": limit,
                    "STATUS": {"LOADED": "Loaded", "PARTIALLY_LOADED": "Partially loaded"}.get(status, "Load failed"),
                    "TABLE_CATALOG_NAME": db,
                    "TABLE_SCHEMA_NAME": schema,
                    "TABLE_NAME": name,
                    "PIPE_CATALOG_NAME": pipe and pipe["database"],
                    "PIPE_SCHEMA_NAME": pipe and pipe["schema"],
                    "PIPE_NAME": pipe and pipe["name"],
                    "PIPE_RECEIVED_TIME": stamp if pipe else None,
                },
            )
        self.save()

    # ------------------------------------------------------------------------------------------- pipes

    def pipe(self, key: str) -> dict[str, Any]:
        found = self.state["pipes"].get(key)
        if found is None:
            raise SqlError(f"Pipe '{key}' does not exist or not authorized.", 2003)
        return found

    def create_pipe(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        as_at = find_keyword(rest, "AS")
        copy = re.fullmatch(COPY_INTO, rest[as_at + 2 :].strip(), re.I | re.S) if as_at >= 0 else None
        if copy is None:
            raise SqlError("SQL compilation error: CREATE PIPE needs AS COPY INTO <table> FROM @<stage>", 1003, "42000")
        if key in self.state["pipes"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        inner = Session(token=session.token, id=session.id, database=db, schema=schema)
        table = fqn(self.resolve(inner, copy.group(1)))
        stage, subpath = self.stage_ref(inner, copy.group(3))
        self.table_columns(session, table)
        opts = options(rest[:as_at])
        self.state["pipes"][key] = {
            "database": db,
            "schema": schema,
            "name": name,
            "id": self.new_id(),
            "definition": copy.group(0),
            "table": table,
            "stage": stage,
            "subpath": subpath,
            "paused": False,
            "pending": [],
            "auto_ingest": unquote(opts.get("AUTO_INGEST", "FALSE")).upper() == "TRUE",
            "last_ingested": None,
            "last_path": None,
            "last_error": None,
            "created_on": now().isoformat(),
            "comment": unquote(opts.get("COMMENT", "''")),
        }
        self.save()
        return p.status(f"Pipe {name} successfully created.")

    def alter_pipe(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text, action = match.groups()
        key = fqn(self.resolve(session, name_text))
        if if_exists and key not in self.state["pipes"]:
            return p.status()
        pipe = self.pipe(key)
        opts = options(action)
        if action.upper().startswith("REFRESH"):
            if pipe["paused"]:
                raise SqlError(f"Pipe {key} is paused: set PIPE_EXECUTION_PAUSED = FALSE before REFRESH.", 91319)
            prefix = unquote(opts.get("PREFIX", "''"))
            loaded = self.state["load_metadata"].get(pipe["table"], {})
            files = [
                f
                for f in self.stage_files(pipe["stage"], pipe["subpath"] + prefix)
                if not _recent(loaded.get(f"{pipe['stage']}/{f}"))
            ]
            self.ingest(pipe, files)
            return p.rowset(columns("File Status"), [[f, "SENT"] for f in files])
        if "PIPE_EXECUTION_PAUSED" not in opts:
            raise SqlError(f"SQL compilation error: the emulator's ALTER PIPE does not take {action}", 1003, "42000")
        pipe["paused"] = unquote(opts["PIPE_EXECUTION_PAUSED"]).upper() == "TRUE"
        if not pipe["paused"] and pipe["pending"]:  # queued notifications are processed on resume
            pending, pipe["pending"] = pipe["pending"], []
            self.ingest(pipe, pending)
        self.save()
        return p.status()

    def ingest(self, pipe: dict[str, Any], files: list[str]) -> None:
        """Load ``files`` through the pipe's COPY (ON_ERROR = SKIP_FILE, as Snowpipe) and record its usage."""
        if not files:
            return
        started = now()
        session = self.internal_session(pipe["database"], pipe["schema"])
        copy = re.fullmatch(COPY_INTO, pipe["definition"], re.I | re.S)
        assert copy is not None
        try:
            results = self.load(session, copy, pipe=pipe, only=files)
        except SqlError as exc:
            pipe["last_error"] = exc.message
            self.save()
            return
        for result in results:
            if result[1] == "LOAD_FAILED":
                pipe["last_error"] = f"{result[0]}: {result[6]}"
            else:
                pipe["last_error"] = None
                pipe["last_ingested"], pipe["last_path"] = now().isoformat(), result[0]
        inserted = [r for r in results if r[1] != "LOAD_FAILED"]
        if inserted:
            self.insert_history(
                "PIPE_USAGE_HISTORY",
                {
                    "PIPE_ID": pipe["id"],
                    "PIPE_CATALOG_NAME": pipe["database"],
                    "PIPE_SCHEMA_NAME": pipe["schema"],
                    "PIPE_NAME": pipe["name"],
                    "START_TIME": started,
                    "END_TIME": now(),
                    "CREDITS_USED": round(0.0006 * len(inserted), 6),
                    "BYTES_INSERTED": sum(r[10] for r in inserted),
                    "FILES_INSERTED": len(inserted),
                },
            )
        self.save()

    def pipe_status(self, session: Session, name: str) -> str:
        pipe = self.pipe(fqn(self.resolve(session, name)))
        status: dict[str, Any] = {
            "executionState": "PAUSED" if pipe["paused"] else "RUNNING",
            "pendingFileCount": len(pipe["pending"]),
            "notificationChannelName": f"emulator:{pipe['stage']}",
            "numOutstandingMessagesOnChannel": len(pipe["pending"]),
        }
        if pipe["last_ingested"]:
            status["lastIngestedTimestamp"] = pipe["last_ingested"].replace("+00:00", "Z")
            status["lastIngestedFilePath"] = pipe["last_path"]
        if pipe["last_error"]:
            status["error"] = status["lastErrorMessage"] = pipe["last_error"]
        return json.dumps(status)

    def drop_pipe(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text = match.groups()
        key = fqn(self.resolve(session, name_text))
        if self.state["pipes"].pop(key, None) is None and not if_exists:
            self.pipe(key)
        self.save()
        return p.status(f"{key.split('.')[-1]} successfully dropped.")

    def show_pipes(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        like, scope, scope_name = match.groups()
        rows = [
            [
                parse_ts(x["created_on"]),
                x["name"],
                x["database"],
                x["schema"],
                x["definition"],
                "SYSADMIN",
                None,
                x["comment"],
                None,
                None,
                None,
                "ROLE",
                None,
                "STANDARD",
            ]
            for x in sorted(self.state["pipes"].values(), key=lambda x: (x["database"], x["schema"], x["name"]))
            if (not like or sql_like(x["name"], unquote(like)))
            and (not scope or self._in_scope(session, x, scope, scope_name))
        ]
        return p.rowset(PIPE_COLUMNS, rows, statement_type=p.SHOW)

    def put_file(self, stage_name: str, name: str, content: str, notify: bool = True) -> dict[str, Any]:
        """The "a file arrives" hook: write the file into the stage; each auto-ingest pipe on the stage ingests it
        (or queues it while paused)."""
        with self.lock:
            key = ".".join(split_name(stage_name))
            if key not in self.state["stages"]:
                raise SqlError(f"Stage '{key}' does not exist or not authorized.", 2003)
            folder = Path(self.state["stages"][key]["folder"])
            path = (folder / name).resolve()
            if not path.is_relative_to(folder.resolve()):
                raise SqlError(f"file name {name!r} leaves the stage", 1003)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            ingested, queued = [], []
            for pipe_key, pipe in sorted(self.state["pipes"].items()):
                if not (notify and pipe["auto_ingest"] and pipe["stage"] == key and name.startswith(pipe["subpath"])):
                    continue
                if pipe["paused"]:
                    pipe["pending"].append(name)
                    queued.append(pipe_key)
                else:
                    self.ingest(pipe, [name])
                    ingested.append(pipe_key)
            self.save()
            return {"file": name, "ingested_by": ingested, "queued_by": queued}
