"""The byte-estimate hook: a thin HTTP proxy of our own in front of local-bigquery.

local-bigquery answers every dry run with 0 bytes and ignores ``maximumBytesBilled``, so a cost estimate
could not be tested against it. This proxy forwards every request unchanged and adds two things, from byte
sizes a test (or the seed) declares per table and per date partition:

- a dry-run query job (``jobs.insert`` or ``jobs.query`` with ``dryRun``) is still run by local-bigquery (so
  a bad query fails as it would), and its answer gets ``totalBytesProcessed`` = the estimate;
- a query job with ``maximumBytesBilled`` under the estimate is refused, without reaching local-bigquery,
  with BigQuery's own error (HTTP 400, reason ``bytesBilledLimitExceeded``).

The estimate of a query is the sum over the declared tables it names (``dataset.table``, with or without
project and backquotes) of: the declared partitions whose dates appear in the query (as ``'YYYY-MM-DD'``
literals or DATE/TIMESTAMP/STRING query parameter values: BigQuery's partition pruning, approximated), or all
of the table's bytes when no date of the query matches a declared partition. Tables not declared count 0.

The hook (JSON over HTTP on the proxy's own port)::

    POST   /_emulator/bytes  {"dataset": "raw", "table": "events", "bytes": 1073741824}
    POST   /_emulator/bytes  {"dataset": "raw", "table": "events", "partition": "2026-12-01", "bytes": 5368709120}
    GET    /_emulator/bytes  -> {"raw.events": {"bytes": ..., "partitions": {"20261201": ...}}}
    DELETE /_emulator/bytes  -> forget every size

Sizes are kept in a JSON file beside the server's data, so they survive a restart like the tables do.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import re
import signal
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HOOK_PATH = "/_emulator/bytes"
UPSTREAM_TIMEOUT_S = 300.0
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "accept-encoding"}
_JOBS_INSERT = re.compile(r"^/bigquery/v2/projects/[^/]+/jobs$")
_JOBS_QUERY = re.compile(r"^/bigquery/v2/projects/[^/]+/queries$")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATE_LITERAL = re.compile(r"'(\d{4})-(\d{2})-(\d{2})")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")

#: ``{"dataset.table": {"bytes": int | None, "partitions": {"YYYYMMDD": int}}}``
Sizes = dict[str, dict[str, Any]]


def partition_id(value: str) -> str:
    """``2026-12-01`` or ``20261201`` as BigQuery's partition id ``20261201``; ValueError otherwise."""
    compact = value.replace("-", "")
    if not re.fullmatch(r"\d{8}", compact):
        raise ValueError(f"partition {value!r} is not a date (YYYY-MM-DD)")
    return compact


def declare(sizes: Sizes, body: Mapping[str, Any]) -> str:
    """Apply one ``POST /_emulator/bytes`` body to ``sizes``; ValueError naming the problem."""
    dataset, table, size = body.get("dataset"), body.get("table"), body.get("bytes")
    if not isinstance(dataset, str) or not _NAME.match(dataset) or not isinstance(table, str) or not _NAME.match(table):
        raise ValueError("dataset and table must be BigQuery names (letters, digits, _ and -)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("bytes must be a non-negative integer")
    key = f"{dataset}.{table}".lower()
    entry = sizes.setdefault(key, {"bytes": None, "partitions": {}})
    partition = body.get("partition")
    if partition is None:
        entry["bytes"] = size
    else:
        entry["partitions"][partition_id(str(partition))] = size
    return key


def _parameter_values(parameters: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    for parameter in parameters:
        value = parameter.get("parameterValue") or {}
        if "value" in value:
            yield str(value["value"])
        for item in value.get("arrayValues") or ():
            if "value" in item:
                yield str(item["value"])


def query_dates(query: str, parameters: Iterable[Mapping[str, Any]]) -> set[str]:
    """The partition ids (``YYYYMMDD``) a query names: date literals and date-like parameter values."""
    found = {"".join(m.groups()) for m in _DATE_LITERAL.finditer(query)}
    for value in _parameter_values(parameters):
        match = _DATE.match(value)
        if match:
            found.add("".join(match.groups()))
    return found


def _names_table(query: str, key: str) -> bool:
    dataset, table = (re.escape(part) for part in key.split("."))
    pattern = rf"(?<![\w.-])(?:[\w-]+\.)?{dataset}\.{table}(?![\w-])"
    return re.search(pattern, query.replace("`", ""), flags=re.IGNORECASE) is not None


def estimate_bytes(sizes: Sizes, query: str, parameters: Iterable[Mapping[str, Any]] = ()) -> int:
    """The bytes a query would scan, from the declared sizes (see the module docstring for the rule)."""
    dates = query_dates(query, parameters)
    total = 0
    for key, entry in sizes.items():
        if not _names_table(query, key):
            continue
        partitions: dict[str, int] = entry.get("partitions") or {}
        pruned = [size for pid, size in partitions.items() if pid in dates]
        if pruned:
            total += sum(pruned)
        elif entry.get("bytes") is not None:
            total += int(entry["bytes"])
        else:
            total += sum(partitions.values())
    return total


def limit_error(estimate: int, maximum: int) -> dict[str, Any]:
    """BigQuery's answer to a query over its ``maximumBytesBilled``."""
    message = f"Query exceeded limit for bytes billed: {maximum}. {estimate} or higher required."
    return {
        "error": {
            "code": 400,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "bytesBilledLimitExceeded"}],
            "status": "INVALID_ARGUMENT",
        }
    }


class SizeStore:
    """The declared sizes, guarded by a lock and saved to ``path`` on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        try:
            self.sizes: Sizes = json.loads(path.read_text())
        except (OSError, ValueError):
            self.sizes = {}

    def snapshot(self) -> Sizes:
        with self.lock:
            return json.loads(json.dumps(self.sizes))

    def declare(self, body: Mapping[str, Any]) -> Sizes:
        with self.lock:
            declare(self.sizes, body)
            self._save()
            return json.loads(json.dumps(self.sizes))

    def reset(self) -> None:
        with self.lock:
            self.sizes = {}
            self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.sizes, indent=1, sort_keys=True))
        tmp.replace(self.path)


def _query_job(path: str, body: Mapping[str, Any]) -> tuple[str, list[Any], bool, int | None] | None:
    """(query, parameters, dry run, maximumBytesBilled) of a query job request, or None for anything else."""
    if _JOBS_INSERT.match(path):
        configuration = body.get("configuration") or {}
        query = configuration.get("query")
        if not isinstance(query, dict):
            return None
        dry_run = bool(configuration.get("dryRun"))
    elif _JOBS_QUERY.match(path):
        query, dry_run = body, bool(body.get("dryRun"))
    else:
        return None
    maximum = query.get("maximumBytesBilled")
    return (
        str(query.get("query", "")),
        list(query.get("queryParameters") or []),
        dry_run,
        int(maximum) if maximum is not None and maximum != "" else None,
    )


def _with_estimate(answer: dict[str, Any], estimate: int) -> dict[str, Any]:
    """A dry run's answer (a job resource or a jobs.query response) carrying ``estimate`` bytes."""
    if "statistics" in answer or answer.get("kind") == "bigquery#job":
        statistics = answer.setdefault("statistics", {})
        statistics["totalBytesProcessed"] = str(estimate)
        statistics.setdefault("query", {})["totalBytesProcessed"] = str(estimate)
    else:
        answer["totalBytesProcessed"] = str(estimate)
    return answer


def make_handler(upstream: str, store: SizeStore) -> type[http.server.BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes: without TCP_NODELAY each keep-alive answer waits for the
        # client's delayed ACK (up to 40 ms)
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return None  # one line per request would drown the log; errors are answered to the client

        def _send(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
            self.send_response(status)
            sent_type = False
            for name, value in headers:
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
                    sent_type = sent_type or name.lower() == "content-type"
            if not sent_type:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode())

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _hook(self, method: str, body: bytes) -> None:
            if method == "GET":
                self._json(200, store.snapshot())
            elif method == "DELETE":
                store.reset()
                self._json(200, {})
            elif method == "POST":
                try:
                    payload = json.loads(body or b"{}")
                    self._json(200, store.declare(payload if isinstance(payload, dict) else {}))
                except ValueError as exc:
                    self._json(400, {"error": str(exc)})
            else:
                self._json(405, {"error": f"{method} is not supported on {HOOK_PATH}"})

        def _forward(self, method: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(target.netloc, timeout=UPSTREAM_TIMEOUT_S)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                headers["Accept-Encoding"] = "identity"  # the answer may be rewritten: plain JSON, please
                conn.request(method, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            finally:
                conn.close()

        def _handle(self) -> None:
            method = self.command
            body = self._body()
            path = urlsplit(self.path).path
            if path == HOOK_PATH:
                self._hook(method, body)
                return
            job = None
            if method == "POST":
                with contextlib.suppress(ValueError):
                    payload = json.loads(body or b"{}")
                    job = _query_job(path, payload) if isinstance(payload, dict) else None
            estimate = estimate_bytes(store.snapshot(), job[0], job[1]) if job else 0
            if job and not job[2] and job[3] is not None and estimate > job[3]:
                self._json(400, limit_error(estimate, job[3]))
                return
            try:
                status, headers, answer = self._forward(method, body)
            except OSError as exc:
                self._json(502, {"error": {"code": 502, "message": f"local-bigquery did not answer: {exc}"}})
                return
            if job and job[2] and status == 200:
                with contextlib.suppress(ValueError):
                    answer = json.dumps(_with_estimate(json.loads(answer), estimate)).encode()
            self._send(status, answer, headers)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the client pools connections: the standard library's backlog of 5 refuses some

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that closed its pooled connection: nothing to report
        super().handle_error(request, client_address)


def serve(port: int, upstream: str, sizes_file: Path, host: str = "127.0.0.1") -> None:
    """Run the proxy in the foreground until SIGTERM."""
    server = _Server((host, port), make_handler(upstream, SizeStore(sizes_file)))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    sys.exit(0)
