"""Warehouses: CREATE / ALTER (size, SUSPEND, RESUME) / DROP / SHOW WAREHOUSES."""

from __future__ import annotations

import re
from typing import Any

from sandbox.snowflake import protocol as p
from sandbox.snowflake.core import Core, Session, columns, now, parse_ts, sql_like
from sandbox.snowflake.protocol import SqlError
from sandbox.snowflake.sqltext import (
    options,
    split_name,
    unquote,
)

WAREHOUSE_SIZES = {
    "XSMALL": "X-Small",
    "X-SMALL": "X-Small",
    "SMALL": "Small",
    "MEDIUM": "Medium",
    "LARGE": "Large",
    "XLARGE": "X-Large",
    "X-LARGE": "X-Large",
    "XXLARGE": "2X-Large",
    "X2LARGE": "2X-Large",
    "2X-LARGE": "2X-Large",
    "XXXLARGE": "3X-Large",
    "X3LARGE": "3X-Large",
    "3X-LARGE": "3X-Large",
    "X4LARGE": "4X-Large",
    "4X-LARGE": "4X-Large",
    "X5LARGE": "5X-Large",
    "5X-LARGE": "5X-Large",
    "X6LARGE": "6X-Large",
    "6X-LARGE": "6X-Large",
}

WAREHOUSE_COLUMNS = columns(
    "name state type size min_cluster_count:fixed max_cluster_count:fixed started_clusters:fixed running:fixed "
    "queued:fixed is_default is_current auto_suspend:fixed auto_resume created_on:ts resumed_on:ts updated_on:ts "
    "owner comment"
)


class Warehouses(Core):
    """Warehouses: their size and state (nothing runs on them: they are bookkeeping the connector reads)."""

    # -------------------------------------------------------------------------------------- warehouses

    def warehouse(self, name: str) -> dict[str, Any]:
        found = self.state["warehouses"].get(name)
        if found is None:
            raise SqlError(f"Object does not exist, or operation cannot be performed: warehouse {name}", 2043)
        return dict(found)

    @staticmethod
    def warehouse_size(raw: str) -> str:
        size = WAREHOUSE_SIZES.get(unquote(raw).upper())
        if size is None:
            raise SqlError(f"invalid value [{unquote(raw)}] for parameter 'WAREHOUSE_SIZE'", 1008, "22023")
        return size

    def create_warehouse(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, rest = match.groups()
        name = split_name(name_text)[-1]
        if name in self.state["warehouses"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        opts = options(rest or "")
        stamp = now().isoformat()
        self.state["warehouses"][name] = {
            "name": name,
            "size": self.warehouse_size(opts.get("WAREHOUSE_SIZE", "XSMALL")),
            "state": "SUSPENDED" if unquote(opts.get("INITIALLY_SUSPENDED", "FALSE")).upper() == "TRUE" else "STARTED",
            "auto_suspend": int(unquote(opts.get("AUTO_SUSPEND", "600"))),
            "auto_resume": unquote(opts.get("AUTO_RESUME", "TRUE")).upper() == "TRUE",
            "created_on": stamp,
            "updated_on": stamp,
            "resumed_on": stamp,
            "comment": unquote(opts.get("COMMENT", "''")),
        }
        self.save()
        session.warehouse = name  # Snowflake makes a new warehouse the session's current one
        return p.status(f"Warehouse {name} successfully created.")

    def alter_warehouse(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text, action = match.groups()
        name = split_name(name_text)[-1]
        if if_exists and name not in self.state["warehouses"]:
            return p.status()
        warehouse = self.state["warehouses"][name] if name in self.state["warehouses"] else self.warehouse(name)
        verb = action.split()[0].upper()
        if verb == "SUSPEND":
            if warehouse["state"] == "SUSPENDED":
                raise SqlError(f"Invalid state. Warehouse '{name}' cannot be suspended.", 90064, "22000")
            warehouse["state"] = "SUSPENDED"
        elif verb == "RESUME":
            if warehouse["state"] == "STARTED" and "IF SUSPENDED" not in action.upper():
                raise SqlError(f"Invalid state. Warehouse '{name}' cannot be resumed.", 90063, "22000")
            warehouse["state"], warehouse["resumed_on"] = "STARTED", now().isoformat()
        else:
            opts = options(action[3:])
            if not opts:
                raise SqlError(f"SQL compilation error: nothing to set in ALTER WAREHOUSE {name}", 1003, "42000")
            if "WAREHOUSE_SIZE" in opts:
                warehouse["size"] = self.warehouse_size(opts["WAREHOUSE_SIZE"])
            if "AUTO_SUSPEND" in opts:
                warehouse["auto_suspend"] = int(unquote(opts["AUTO_SUSPEND"]))
            if "AUTO_RESUME" in opts:
                warehouse["auto_resume"] = unquote(opts["AUTO_RESUME"]).upper() == "TRUE"
        warehouse["updated_on"] = now().isoformat()
        self.save()
        return p.status()

    def drop_warehouse(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text = match.groups()
        name = split_name(name_text)[-1]
        if self.state["warehouses"].pop(name, None) is None and not if_exists:
            self.warehouse(name)
        self.save()
        return p.status(f"{name} successfully dropped.")

    def show_warehouses(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        like = match.group(1)
        columns = WAREHOUSE_COLUMNS
        rows = []
        for name, w in sorted(self.state["warehouses"].items()):
            if like and not sql_like(name, unquote(like)):
                continue
            started, running = w["state"] == "STARTED", self.running.get(name, 0)
            rows.append(
                [
                    name,
                    w["state"],
                    "STANDARD",
                    w["size"],
                    1,
                    1,
                    1 if started else 0,
                    running,
                    0,
                    "N",
                    "Y" if session.warehouse == name else "N",
                    w["auto_suspend"],
                    "true" if w["auto_resume"] else "false",
                    parse_ts(w["created_on"]),
                    parse_ts(w["resumed_on"]),
                    parse_ts(w["updated_on"]),
                    "SYSADMIN",
                    w["comment"],
                ]
            )
        return p.rowset(columns, rows, statement_type=p.SHOW)

    def use_warehouse(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        name = split_name(match.group(1))[-1]
        self.warehouse(name)
        session.warehouse = name
        return p.status(statement_type=0x4300)
