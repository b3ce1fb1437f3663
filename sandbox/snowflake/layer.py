"""The emulator's HTTP server: the Snowflake connector's endpoints in front of fakesnow, plus the test hooks.

    POST /session/v1/login-request     forwarded to fakesnow; the layer keeps the session (user, QUERY_TAG, ...)
    POST /queries/v1/query-request     one statement: answered by :class:`Emulator` (handled or forwarded)
    POST /session, /session/heartbeat, /queries/v1/abort-request, GET /monitoring/...   forwarded
    GET  /_emulator/health             {"ok": true}
    POST /_emulator/...                the test hooks (docs/snowflake-emulator.md)

Standard library only (``ThreadingHTTPServer``): one thread per connection; the emulator's lock orders changes.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.snowflake import protocol as p
from sandbox.snowflake.emulator import Emulator
from sandbox.snowflake.protocol import Fakesnow, SqlError

log = logging.getLogger("sandbox.snowflake")
FORWARDED_HEADERS = ("Content-Type", "Content-Encoding", "Authorization", "Accept")


class Handler(BaseHTTPRequestHandler):
    server: LayerServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without NODELAY the second waits for the client's delayed ACK
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, payload: Any, status: int = 200) -> None:
        self._send(status, json.dumps(payload, default=str).encode())

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        headers = {k: v for k in FORWARDED_HEADERS if (v := self.headers.get(k))}
        return self.server.fakesnow.post(self.path, body, headers)

    def do_GET(self) -> None:
        if self.path == "/_emulator/health":
            self._json({"ok": True})
            return
        headers = {k: v for k in FORWARDED_HEADERS if (v := self.headers.get(k))}
        request = urllib.request.Request(self.server.fakesnow.url + self.path, headers=headers)
        with urllib.request.urlopen(request, timeout=p.HTTP_TIMEOUT_S) as response:
            self._send(response.status, response.read())

    def do_POST(self) -> None:
        body = self._body()
        path = urlsplit(self.path).path
        try:
            if path == "/session/v1/login-request":
                self._login(body)
            elif path == "/queries/v1/query-request":
                self._query(body)
            elif path.startswith("/_emulator/"):
                self._hook(path.removeprefix("/_emulator/"), json.loads(body or b"{}"))
            else:
                if path == "/session" and "delete=true" in self.path:
                    self.server.emulator.sessions.pop(self._token(), None)
                self._send(*self._forward(body))
        except SqlError as exc:
            self._json(p.error_body(exc), 400 if path.startswith("/_emulator/") else 200)
        except (ValueError, KeyError) as exc:
            self._json({"success": False, "message": f"bad request: {exc}"}, 400)

    def _token(self) -> str:
        return (self.headers.get("Authorization") or "")[17:-1]

    def _login(self, body: bytes) -> None:
        status, raw = self._forward(body)
        answer = json.loads(raw)
        if status == 200 and answer.get("success"):
            request = p.read_body(body, self.headers.get("Content-Encoding"))["data"]
            query = dict(parse_qsl(urlsplit(self.path).query))
            self.server.emulator.login(
                answer["data"]["token"],
                str(request.get("LOGIN_NAME") or ""),
                request.get("SESSION_PARAMETERS") or {},
                query,
            )
        self._send(status, raw)

    def _query(self, body: bytes) -> None:
        session = self.server.emulator.sessions.get(self._token())
        if session is None:  # unknown to the layer (it restarted): fakesnow answers with its login error
            self._send(*self._forward(body))
            return
        request = p.read_body(body, self.headers.get("Content-Encoding"))
        if request.get("bindings") or request.get("describeOnly"):
            self._send(*self._forward(body))  # server-side bindings and describe: fakesnow's own work
            return
        data = self.server.emulator.execute(session, str(request["sqlText"]))
        data.setdefault("finalDatabaseName", session.database)
        data.setdefault("finalSchemaName", session.schema)
        self._json({"data": data, "success": True})

    def _hook(self, name: str, args: dict[str, Any]) -> None:
        emulator = self.server.emulator
        if name == "reset":
            emulator.reset()
            self._json({"ok": True})
        elif name == "scheduler/run":
            only = args.get("tasks")
            self._json({"ran": emulator.run_scheduler([str(t) for t in only] if only is not None else None)})
        elif name == "tasks/fail-next":
            emulator.fail_next(str(args["task"]), int(args.get("times", 1)), str(args.get("error", "Task failed")))
            self._json({"ok": True})
        elif name == "stages/put":
            notify = bool(args.get("notify", True))
            self._json(emulator.put_file(str(args["stage"]), str(args["name"]), str(args["content"]), notify))
        else:
            self._json({"success": False, "message": f"no hook {name}"}, 404)


class LayerServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int, directory: Path, fakesnow_url: str) -> None:
        self.fakesnow = Fakesnow(fakesnow_url)
        self.emulator = Emulator(directory, self.fakesnow)
        super().__init__(("127.0.0.1", port), Handler)
