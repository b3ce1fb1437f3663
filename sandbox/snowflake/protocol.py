"""The Snowflake connector's HTTP protocol, as far as the emulator layer speaks it.

The real ``snowflake-connector-python`` logs in (``POST /session/v1/login-request``), gets a session token and
sends one statement per ``POST /queries/v1/query-request`` (gzip JSON ``{"sqlText": ...}``) with the header
``Authorization: Snowflake Token="<token>"``. An answer is ``{"data": {...}, "success": true}``; a result set is
a JSON rowset (every value a string, or null) with a ``rowtype`` telling the connector how to convert each
column. fakesnow's own server (``fakesnow/server.py``) answers the same shapes; :class:`Fakesnow` is the layer's
client of it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import urllib.error
import urllib.request
import uuid
from base64 import b64decode
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

HTTP_TIMEOUT_S = 60.0

# statementTypeId values (snowflake-jdbc SFStatementType; the connector counts DML rows from them)
SELECT = 0x1000
INSERT = 0x3100
DDL = 0x6000
SHOW = 0x4400
TCL = 0x5000


class SqlError(Exception):
    """A statement failed: answered to the client as Snowflake's error (code, SQL state, message)."""

    def __init__(self, message: str, code: int = 2003, sqlstate: str = "02000") -> None:
        super().__init__(message)
        self.message, self.code, self.sqlstate = message, code, sqlstate
        self.query_id: str | None = None


@dataclass(frozen=True)
class Column:
    """A result column: its name and Snowflake type (``text``, ``fixed``, ``boolean``, ``timestamp_ltz``)."""

    name: str
    type: str = "text"


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dt.datetime):
        return f"{value.timestamp():.3f}"
    return str(value)


def rowset(columns: Sequence[Column], rows: Sequence[Sequence[Any]], *, statement_type: int = SELECT) -> dict[str, Any]:
    """The ``data`` of a successful answer with a JSON rowset."""
    rowtype = [
        {
            "name": c.name,
            "database": "",
            "schema": "",
            "table": "",
            "nullable": True,
            "type": c.type,
            "byteLength": None,
            "length": None,
            "scale": 3 if c.type == "timestamp_ltz" else 0 if c.type == "fixed" else None,
            "precision": 38 if c.type == "fixed" else None,
            "collation": None,
        }
        for c in columns
    ]
    return {
        "parameters": [{"name": "TIMEZONE", "value": "Etc/UTC"}],
        "rowtype": rowtype,
        "rowset": [[_cell(v) for v in row] for row in rows],
        "total": len(rows),
        "returned": len(rows),
        "queryId": str(uuid.uuid4()),
        "statementTypeId": statement_type,
        "queryResultFormat": "json",
    }


def status(message: str = "Statement executed successfully.", *, statement_type: int = DDL) -> dict[str, Any]:
    """The one-row ``status`` answer of a DDL-like statement."""
    return rowset([Column("status")], [[message]], statement_type=statement_type)


def error_body(exc: SqlError) -> dict[str, Any]:
    code = f"{exc.code:06d}"
    return {
        "data": {"errorCode": code, "sqlState": exc.sqlstate},
        "code": code,
        "message": exc.message,
        "success": False,
    }


def rows_of(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of a fakesnow answer's ``data`` (a JSON rowset of strings, or an Arrow IPC stream)."""
    if data.get("queryResultFormat") == "json":
        return [tuple(row) for row in data.get("rowset") or []]
    encoded = data.get("rowsetBase64") or ""
    if not encoded:
        return []
    import pyarrow.ipc  # the project's own dependency; fakesnow answers queries in Arrow

    table = pyarrow.ipc.open_stream(b64decode(encoded)).read_all()
    return list(zip(*[column.to_pylist() for column in table.columns], strict=True))


def column_names(data: dict[str, Any]) -> list[str]:
    return [c["name"] for c in data.get("rowtype") or []]


def read_body(raw: bytes, encoding: str | None) -> dict[str, Any]:
    body = gzip.decompress(raw) if encoding == "gzip" else raw
    parsed = json.loads(body or b"{}")
    if not isinstance(parsed, dict):
        raise ValueError("the request body is not a JSON object")
    return parsed


class Fakesnow:
    """A client of fakesnow's HTTP server: login, one statement per request, raw answers."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, database: str | None = None, schema: str | None = None) -> str:
        """A new fakesnow session (for the layer's own work); its token."""
        query = "&".join(f"{k}={v}" for k, v in (("databaseName", database), ("schemaName", schema)) if v)
        body = json.dumps({"data": {"SESSION_PARAMETERS": {}}}).encode()
        code, raw = self.post(f"/session/v1/login-request?{query}", body, {"Content-Type": "application/json"})
        answer = json.loads(raw)
        if code != 200 or not answer.get("success"):
            raise RuntimeError(f"fakesnow login failed ({code}): {raw[:500]!r}")
        return str(answer["data"]["token"])

    def query(self, token: str, sql: str) -> dict[str, Any]:
        """Run one statement in ``token``'s session; the answer's ``data`` or SqlError."""
        body = json.dumps({"sqlText": sql, "sequenceId": 1}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f'Snowflake Token="{token}"'}
        code, raw = self.post("/queries/v1/query-request", body, headers)
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise SqlError(f"fakesnow answered HTTP {code}: {raw[:300]!r}") from exc
        if not answer.get("success"):
            raise SqlError(
                str(answer.get("message")),
                int(answer.get("code") or 2003),
                str((answer.get("data") or {}).get("sqlState") or "02000"),
            )
        return dict(answer["data"])
