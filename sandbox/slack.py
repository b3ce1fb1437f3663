"""A local stand-in for Slack's Web API, for the demo and the tests (the real one needs a workspace).

It answers the methods the control plane calls the way Slack does (bearer token, form, query or JSON
bodies, HTTP 200 with ``{"ok": false, "error": ...}`` for errors), records every message, and can be told to
fail a method a number of times: with an ``ok: false`` error, or with HTTP 429 and ``Retry-After`` as Slack's
rate limiter answers. slack_sdk's ``WebClient`` talks to it over HTTP with ``base_url`` pointed here.

    python -m sandbox.slack --port 8091 --token xoxb-demo

Endpoints that are not Slack's, for the demo's channel page and the tests:
    GET  /_standin/messages          every message (posts, thread replies, ephemerals, response_url answers)
    POST /_standin/users             {"users": [{"id", "name", "email"}]}: who users.info knows
    POST /_standin/faults            {"method", "error"} or {"method", "status": 429, "retry_after"}, "times"
    POST /_standin/reset             forget messages and faults
    POST /_standin/respond/<id>      a response_url: records what the app answers to an interaction
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOT_USER_ID = "UCONTROLBOT"
TEAM_ID = "T0DEMO"


@dataclass
class Fault:
    error: str = ""
    status: int = 200
    retry_after: int = 1
    times: int = 1


@dataclass
class SlackState:
    """What the stand-in knows; every access holds ``lock`` (the server is threaded)."""

    token: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_ts(self) -> str:
        # Slack's ts is "<unix seconds>.<6 digits>", unique per channel; a counter keeps them ordered.
        return f"{int(time.time())}.{next(self._clock):06d}"

    def find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["channel"] == channel and m["ts"] == ts), None)


def _blocks(value: Any) -> list[Any]:
    if isinstance(value, str):  # form-encoded calls carry blocks as a JSON string
        value = json.loads(value) if value else []
    return list(value or [])


def _post_message(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    channel = str(args.get("channel") or "")
    if not channel:
        return {"ok": False, "error": "channel_not_found"}
    if not args.get("text") and not args.get("blocks"):
        return {"ok": False, "error": "no_text"}
    thread_ts = str(args.get("thread_ts") or "")
    if thread_ts and state.find(channel, thread_ts) is None:
        return {"ok": False, "error": "thread_not_found"}
    message = {
        "type": "message",
        "channel": channel,
        "ts": state.next_ts(),
        "thread_ts": thread_ts,
        "user": BOT_USER_ID,
        "text": str(args.get("text") or ""),
        "blocks": _blocks(args.get("blocks")),
        "edits": 0,
    }
    state.messages.append(message)
    return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}


def _update(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    message = state.find(str(args.get("channel") or ""), str(args.get("ts") or ""))
    if message is None:
        return {"ok": False, "error": "message_not_found"}
    if "text" in args:
        message["text"] = str(args["text"] or "")
    if "blocks" in args:
        message["blocks"] = _blocks(args["blocks"])
    message["edits"] += 1
    return {"ok": True, "channel": message["channel"], "ts": message["ts"], "text": message["text"]}


def _post_ephemeral(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    if not args.get("user"):
        return {"ok": False, "error": "user_not_in_channel"}
    ts = state.next_ts()
    state.messages.append(
        {
            "type": "ephemeral",
            "channel": str(args.get("channel") or ""),
            "ts": ts,
            "thread_ts": str(args.get("thread_ts") or ""),
            "to_user": str(args["user"]),
            "text": str(args.get("text") or ""),
            "blocks": _blocks(args.get("blocks")),
            "edits": 0,
        }
    )
    return {"ok": True, "message_ts": ts}


def _users_info(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    user = state.users.get(str(args.get("user") or ""))
    if user is None:
        return {"ok": False, "error": "user_not_found"}
    name = user.get("name", "")
    profile = {"email": user.get("email", ""), "real_name": name, "display_name": name}
    return {"ok": True, "user": {"id": user["id"], "team_id": TEAM_ID, "name": name, "profile": profile}}


def _open_dm(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    users = str(args.get("users") or "")
    if not users or "," in users:
        return {"ok": False, "error": "not_enough_users" if not users else "not_implemented"}
    return {"ok": True, "channel": {"id": f"D{users}"}}


METHODS: dict[str, Callable[[SlackState, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": lambda state, args: {"ok": True, "user_id": BOT_USER_ID, "team_id": TEAM_ID, "team": "demo"},
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _post_ephemeral,
    "users.info": _users_info,
    "conversations.open": _open_dm,
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        args = self._args(url.query)
        state = self.server.state
        path = url.path.rstrip("/")
        if path.startswith("/_standin/"):
            self._control(path.removeprefix("/_standin/"), args)
            return
        method = path.rsplit("/", 1)[-1]
        handler = METHODS.get(method)
        if handler is None:
            self._send(HTTPStatus.NOT_FOUND, {"ok": False, "error": "unknown_method"})
            return
        with state.lock:
            state.calls.append(method)
            fault = state.faults.get(method)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del state.faults[method]
                if fault.status == 429:
                    self._send(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(fault.retry_after)})
                    return
                self._send(HTTPStatus.OK, {"ok": False, "error": fault.error or "internal_error"})
                return
            if self.headers.get("Authorization", "") != f"Bearer {state.token}":
                self._send(HTTPStatus.OK, {"ok": False, "error": "invalid_auth"})
                return
            answer = handler(state, args)
        self._send(HTTPStatus.OK, answer)

    def _control(self, what: str, args: dict[str, Any]) -> None:
        state = self.server.state
        with state.lock:
            if what == "messages":
                self._send(HTTPStatus.OK, {"ok": True, "messages": state.messages, "calls": state.calls})
            elif what == "users":
                for user in args.get("users", []):
                    state.users[str(user["id"])] = dict(user)
                self._send(HTTPStatus.OK, {"ok": True})
            elif what == "faults":
                state.faults[str(args["method"])] = Fault(
                    error=str(args.get("error", "")),
                    status=int(args.get("status", 200)),
                    retry_after=int(args.get("retry_after", 1)),
                    times=int(args.get("times", 1)),
                )
                self._send(HTTPStatus.OK, {"ok": True})
            elif what == "reset":
                state.messages.clear()
                state.faults.clear()
                state.calls.clear()
                self._send(HTTPStatus.OK, {"ok": True})
            elif what.startswith("respond/"):
                state.messages.append(
                    {
                        "type": "response",
                        "channel": "",
                        "ts": state.next_ts(),
                        "thread_ts": "",
                        "response_url": what.removeprefix("respond/"),
                        "text": str(args.get("text") or ""),
                        "blocks": _blocks(args.get("blocks")),
                        "replace_original": bool(args.get("replace_original")),
                        "response_type": str(args.get("response_type") or "ephemeral"),
                        "edits": 0,
                    }
                )
                self._send(HTTPStatus.OK, {"ok": True})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"ok": False, "error": "unknown_method"})

    def _args(self, query: str) -> dict[str, Any]:
        args: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not body:
            return args
        if self.headers.get("Content-Type", "").startswith("application/json"):
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                args.update(parsed)
        else:
            args.update(urllib.parse.parse_qsl(body.decode()))
        return args

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: SlackState) -> None:
        super().__init__(address, _Handler)
        self.state = state


@dataclass
class SlackStandIn:
    """A running stand-in: ``api_url`` for ``SLACK_API_URL``, ``respond_url(id)`` for response_url."""

    server: _Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def state(self) -> SlackState:
        return self.server.state

    def respond_url(self, name: str) -> str:
        return f"{self.base_url}/_standin/respond/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start(*, token: str, port: int = 0, host: str = "127.0.0.1") -> SlackStandIn:
    """Serve the stand-in from a thread of this process (port 0: any free one)."""
    server = _Server((host, port), SlackState(token=token))
    thread = threading.Thread(target=server.serve_forever, name="slack-standin", daemon=True)
    thread.start()
    return SlackStandIn(server, thread)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.slack", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--token", required=True, help="the bot token the control plane must present")
    args = parser.parse_args(argv)
    server = _Server((args.host, args.port), SlackState(token=args.token))
    print(f"Slack stand-in on http://{args.host}:{server.server_address[1]}/api/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
