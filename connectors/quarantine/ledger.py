"""The connector's own records beside the data, under ``{root}/quarantine/_control/``: one JSON file per action
(named after the action id), so a re-delivered task finds what it already did and the counts stay right
while a release is half done.

- ``released/{action_id}.json``: a release. ``state`` is ``pending`` from before its valid file is written
  until every quarantine file it rewrote is replaced, then ``done``. The valid files of a pending release
  are not counted (their rows are still counted on the quarantine side), so no row counts twice.
  A release that cannot write its valid files is undone (they are deleted) and marked ``failed``.
- ``discarded/{action_id}.json``: a discard, ``pending`` -> ``done`` like a release (without valid files).
- ``keep/{action_id}.json``: a keep decision (table, reason, days, note, expiry); retention cleanup leaves
  kept partitions alone until the expiry (inclusive).
- ``cleanup/{action_id}.json``: a retention cleanup, ``pending`` -> ``done``, with the files it deletes.

A record is written whole in one request (``pipe_file``: one upload on GCS, so a reader never sees half of
one); the action id is its file name, so a re-delivered action reads its own record back first.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from connectors.base import ConnectorError
from connectors.quarantine.store import Store

RELEASED = "released"
DISCARDED = "discarded"
KEEP = "keep"
CLEANUP = "cleanup"
KINDS = (RELEASED, DISCARDED, KEEP, CLEANUP)
PENDING = "pending"
DONE = "done"
FAILED = "failed"  # undone before anything left quarantine (a release that could not write its valid files)
# an action id becomes a file name (and part of data file names): one safe path segment
ACTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,99}$")


def entries(store: Store, kind: str) -> list[dict[str, Any]]:
    """Every record of ``kind`` (``released``, ``keep``, ...), oldest action id first."""
    found = []
    for entry in store.ls(store.control_dir(kind)):
        name = entry["name"].rsplit("/", 1)[-1]
        if entry.get("type") != "file" or not name.endswith(".json") or not ACTION_ID.match(name[: -len(".json")]):
            continue
        record = read(store, kind, name[: -len(".json")])
        if record is not None:  # None: removed between listing and reading
            found.append(record)
    return sorted(found, key=lambda e: str(e.get("action_id", "")))


def pending_valid_files(store: Store) -> set[str]:
    """Valid files written by releases that are not done yet: not counted (see the module docstring)."""
    return {path for e in entries(store, RELEASED) if e.get("state") != "done" for path in e.get("valid_files", [])}


def kept_partitions(store: Store, *, as_of: date) -> dict[tuple[str, date], list[dict[str, Any]]]:
    """(table, day) -> the keep records covering it that have not expired on ``as_of`` (expiry inclusive)."""
    kept: dict[tuple[str, date], list[dict[str, Any]]] = {}
    for entry in entries(store, KEEP):
        try:
            start, end = date.fromisoformat(entry["from_date"]), date.fromisoformat(entry["to_date"])
            expires = date.fromisoformat(entry["expires"])
        except (KeyError, TypeError, ValueError):
            raise ConnectorError(f"the keep record of action {entry.get('action_id')!r} is malformed") from None
        if expires < as_of:
            continue
        for offset in range((end - start).days + 1):
            kept.setdefault((str(entry["table"]), date.fromordinal(start.toordinal() + offset)), []).append(entry)
    return kept


def partitions_in_progress(store: Store) -> dict[tuple[str, date], list[str]]:
    """(table, day) -> the releases and discards not done yet that act on files of that quarantine
    partition: retention cleanup leaves them to finish (a re-delivery needs its files)."""
    busy: dict[tuple[str, date], list[str]] = {}
    for kind in (RELEASED, DISCARDED):
        for entry in entries(store, kind):
            if entry.get("state") in (DONE, FAILED):
                continue
            for day in sorted({str(f.get("day")) for f in entry.get("planned", [])}):
                try:
                    key = (str(entry["table"]), date.fromisoformat(day))
                except (KeyError, ValueError):
                    raise ConnectorError(
                        f"the {kind} record of action {entry.get('action_id')!r} is malformed"
                    ) from None
                busy.setdefault(key, []).append(str(entry.get("action_id")))
    return busy


# ---------------------------------------------------------------------------------------------- writers


def check_action_id(action_id: str) -> str:
    """``action_id`` if it can name a file; a permanent ConnectorError if not."""
    if not ACTION_ID.match(action_id):
        raise ConnectorError(f"action id {action_id!r} cannot name a file (letters, digits, _ and -)")
    return action_id


def record_path(store: Store, kind: str, action_id: str) -> str:
    """Where the ``kind`` record of ``action_id`` lives."""
    if kind not in KINDS:
        raise ValueError(f"unknown ledger kind {kind!r}")
    return store.control_dir(kind, f"{check_action_id(action_id)}.json")


def read(store: Store, kind: str, action_id: str) -> dict[str, Any] | None:
    """The ``kind`` record of ``action_id``, or None when there is none yet."""
    path = record_path(store, kind, action_id)
    try:
        with store.fs.open(path, "rb") as handle:
            found: dict[str, Any] = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as exc:  # not JSON: written by something else; retrying will not fix it
        raise ConnectorError(f"{store.url(path)} is not a ledger record ({exc}): look at it") from None
    except store.errors as exc:
        raise ConnectorError(f"reading {store.url(path)} failed: {exc}", transient=True) from None
    return found


def write(store: Store, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """Write (or replace) the ``kind`` record named after ``record["action_id"]``, whole, in one request."""
    path = record_path(store, kind, str(record["action_id"]))
    data = json.dumps(record, sort_keys=True, indent=1, default=str).encode()
    try:
        if not store.remote:  # GCS has no directories; a local disk needs the parent first
            store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        store.fs.pipe_file(path, data)
    except store.errors as exc:
        raise ConnectorError(f"writing {store.url(path)} failed: {exc}", transient=True) from None
    return record
