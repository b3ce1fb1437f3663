"""The connector's own records beside the data, under ``{root}/quarantine/_control/``: one JSON file per action
(named after the action id), so a re-delivered task finds what it already did and the counts stay right
while a release is half done.

- ``released/{action_id}.json``: a release. ``state`` is ``pending`` from before its valid file is written
  until every quarantine file it rewrote is replaced, then ``done``. The valid files of a pending release
  are not counted (their rows are still counted on the quarantine side), so no row counts twice.
- ``keep/{action_id}.json``: a keep decision (table, reason, days, note, expiry); retention cleanup leaves
  kept partitions alone until the expiry.
"""

from __future__ import annotations

import json
from typing import Any

from connectors.base import ConnectorError
from connectors.quarantine.store import Store

RELEASED = "released"
KEEP = "keep"


def entries(store: Store, kind: str) -> list[dict[str, Any]]:
    """Every record of ``kind`` (``released``, ``keep``), oldest action id first."""
    found = []
    for entry in store.ls(store.control_dir(kind)):
        if entry.get("type") != "file" or not entry["name"].endswith(".json"):
            continue
        try:
            with store.fs.open(entry["name"], "rb") as handle:
                found.append(json.load(handle))
        except FileNotFoundError:
            continue  # removed between listing and reading
        except (OSError, ValueError) as exc:
            raise ConnectorError(f"reading {store.url(entry['name'])} failed: {exc}", transient=True) from None
    return sorted(found, key=lambda e: str(e.get("action_id", "")))


def pending_valid_files(store: Store) -> set[str]:
    """Valid files written by releases that are not done yet: not counted (see the module docstring)."""
    return {path for e in entries(store, RELEASED) if e.get("state") != "done" for path in e.get("valid_files", [])}
