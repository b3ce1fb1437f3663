#!/usr/bin/env python3
"""A small ChatOps bot for the control plane, using only its public HTTP API and the standard library.

It does what a chat bot does when a monitoring alert arrives: post the alert, then either walk the runbook
the control plane suggests for the incident, step by step, or launch one of the suggested actions, and
follow it to the end. Where a real bot would ask a person in the chat (tick a checklist, pick a choice),
this one answers with ``--confirm`` or stops and says what is needed.

    export CONTROLPLANE_URL=http://127.0.0.1:8000 CONTROLPLANE_TOKEN=cpt_...
    python examples/chatops_bot.py --source grafana --target dev.weather.daily_weather_aggregates \\
        --alert-type freshness --summary "daily_weather_aggregates is stale" --confirm
    python examples/chatops_bot.py ... --prefer action --verb refresh-mart

The token comes from the environment, not the command line (where ``ps`` shows it). It needs the scopes
``alerts:write incidents:read runbooks:read runbooks:write actions:read actions:write`` on a responder.
Exit status: 0 when the runbook completed or the action succeeded, 1 when it ended otherwise or needs a
person, 2 on an API error. docs/chatops.md explains each call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

WAIT = 30  # seconds one ?wait= request may hold (the API's maximum)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ControlPlane:
    """The API over urllib: JSON in and out, a bearer token, a timeout on every call, and patience with
    429 and 503 (it waits for Retry-After, a few times)."""

    def __init__(self, url: str, token: str) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"the control plane's URL must be http(s)://, not {url!r}")
        self.url, self.token = url.rstrip("/"), token

    def call(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None, timeout: float = 15) -> Any:  # fmt: skip
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(4):
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http(s) only, above)
            request.add_header("Authorization", f"Bearer {self.token}")
            request.add_header("Accept", "application/json")
            if data is not None:
                request.add_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                request.add_header(name, value)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                    return json.load(answer)
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 503) and attempt < 3:
                    time.sleep(min(float(exc.headers.get("Retry-After") or 2), 10))
                    continue
                try:
                    message = json.load(exc)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = exc.reason
                raise ApiError(exc.code, str(message)) from None
        raise AssertionError("unreachable")

    def get(self, path: str, **query: Any) -> Any:
        wait = int(query.get("wait") or 0)
        return self.call("GET", path, query=query or None, timeout=wait + 15)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.call("POST", path, body if body is not None else {}, **kwargs)


def say(text: str) -> None:
    """What a chat bot would post to the channel."""
    print(text, flush=True)  # noqa: T201 (the bot's chat messages)


def post_alert(api: ControlPlane, args: argparse.Namespace) -> dict[str, Any]:
    body = {"source": args.source, "severity": args.severity, "summary": args.summary, "alert_type": args.alert_type}
    body.update({k: v for k, v in (("target", args.target), ("pipeline", args.pipeline)) if v})
    incident = api.post("/api/v1/alerts", body)
    verb = "opened" if incident["created"] else f"counted on (alert #{incident['alert_count']})"
    say(f"INC-{incident['id']} {verb}: {incident['title']} [{incident['severity']}]")
    return incident


def follow_action(api: ControlPlane, action_id: str, deadline: float) -> dict[str, Any]:
    """Wait for an action's end with ?wait= (no polling loop of our own beyond the waits)."""
    while True:
        action = api.get(f"/api/v1/actions/{action_id}", wait=WAIT)
        if action["finished_at"] or action["state"] in ("succeeded", "failed", "cancelled", "rejected", "expired",
                                                           "needs_attention"):  # fmt: skip
            return action
        if action["state"] == "awaiting_approval":
            say(f"action {action_id} awaits approval by a second person: {action['approval_reason']}")
        if time.monotonic() > deadline:
            return action


def walk_runbook(api: ControlPlane, incident: dict[str, Any], runbook: str, args: argparse.Namespace) -> bool:
    """Start (or join) the runbook's run for the incident and walk it: each time, read what the current step
    needs (``next``) and do it, or wait while the control plane works. True when the run completed."""
    open_runs = api.get("/api/v1/runbook-runs", incident=incident["id"], runbook=runbook)["results"]
    active = [r for r in open_runs if r["state"] not in ("completed", "abandoned")]
    if active:
        run = api.get(f"/api/v1/runbook-runs/{active[0]['id']}")
        say(f"joining run {run['id']} of {runbook}")
    else:
        run = api.post("/api/v1/runbook-runs", {"runbook": runbook, "incident": incident["id"]})
        say(f"started run {run['id']} of {runbook} v{run['version']}")
    deadline = time.monotonic() + args.timeout
    base = f"/api/v1/runbook-runs/{run['id']}"
    while run["next"] is not None:
        if time.monotonic() > deadline:
            say(f"gave up after {args.timeout} s: run {run['id']} is {run['state']}")
            return False
        need = run["next"]
        if need["by"] == "system":  # a check or notification in the worker's hands
            run = api.get(base, wait=WAIT)
            continue
        if need["by"] == "action":
            action = follow_action(api, need["action"], deadline)
            say(f"  {need['title']}: action {action['id']} {action['state']}")
            run = api.get(base, wait=WAIT)
            continue
        step, commands = need["step"], need["commands"]
        if "approve" in commands:
            say(f"  {need['title']}: needs an approval by a {need['role']} other than the starter; waiting")
            run = api.get(base, wait=WAIT)
            continue
        if "retry" in commands:
            say(f"  {need['title']} failed: {need.get('error')}; retry or skip it, then run me again")
            return False
        if "act" in commands:
            act = need["act"]
            say(f"  {need['title']}: {act['verb']} on {act['target']} {json.dumps(act['params'])}")
            run = api.post(f"{base}/steps/{step}/act", {})
            continue
        # complete: a manual step; a real bot asks the channel here
        if not args.confirm:
            say(f"  {need['title']}: needs a person (checklist {need['checklist']}, choices {need['choices']})")
            return False
        body = {"checked": need["checklist"], "choice": need["choices"][0] if need["choices"] else "",
                "note": f"confirmed in chat via {args.source} bot"}  # fmt: skip
        say(f"  {need['title']}: done" + (f" ({body['choice']})" if body["choice"] else ""))
        run = api.post(f"{base}/steps/{step}/complete", body)
    say(f"run {run['id']} {run['state']}")
    return bool(run["state"] == "completed")


def launch_action(api: ControlPlane, incident: dict[str, Any], args: argparse.Namespace) -> bool:
    """Launch the first suggested action (of ``--verb``) for the incident with an Idempotency-Key, so running
    the bot again for the same incident returns the same action instead of a second one; follow it."""
    detail = api.get(f"/api/v1/incidents/{incident['id']}")
    offered = [a for a in detail["suggested_actions"] if args.verb in (None, a["verb"])]
    if not offered:
        say("no suggested action fits; nothing launched")
        return False
    choice = offered[0]
    body = {"verb": choice["verb"], "target": choice["target"], "params": choice["params"],
            "reason": f"INC-{incident['id']}: {incident['title']}", "incident": incident["id"]}  # fmt: skip
    key = f"chatops-inc-{incident['id']}-{choice['verb']}-{choice['target']}"
    action = api.post("/api/v1/actions", body, headers={"Idempotency-Key": key})
    say(f"launched {choice['verb']} on {choice['target']}: action {action['id']} {action['state']}")
    action = follow_action(api, action["id"], time.monotonic() + args.timeout)
    summary = (action.get("verification") or {}).get("summary") or action.get("error") or ""
    say(f"action {action['id']} {action['state']}: {summary}")
    return bool(action["state"] == "succeeded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("CONTROLPLANE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--source", default="chatops")
    parser.add_argument("--target", help="a catalog target key")
    parser.add_argument("--pipeline", help="a catalog pipeline name")
    parser.add_argument("--severity", default="medium", choices=["low", "medium", "high", "critical"])
    parser.add_argument("--summary", required=True)
    parser.add_argument("--alert-type", default="freshness")
    parser.add_argument("--prefer", choices=["runbook", "action"], default="runbook")
    parser.add_argument("--runbook", help="which suggested runbook to walk (default: the best fit)")
    parser.add_argument("--verb", help="which suggested action to launch (default: the first)")
    parser.add_argument("--confirm", action="store_true", help="answer manual steps as done (a demo; ask people)")
    parser.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    args = parser.parse_args(argv)
    token = os.environ.get("CONTROLPLANE_TOKEN")
    if not token:
        parser.error("set CONTROLPLANE_TOKEN to an API token (python manage.py create_api_token ...)")
    api = ControlPlane(args.url, token)
    try:
        incident = post_alert(api, args)
        if args.prefer == "action":
            return 0 if launch_action(api, incident, args) else 1
        suggested = [r["id"] for r in api.get(f"/api/v1/incidents/{incident['id']}")["suggested_runbooks"]]
        runbook = args.runbook or (suggested[0] if suggested else None)
        if runbook is None or runbook not in suggested:
            say(f"runbook {runbook} is not suggested for INC-{incident['id']} (suggested: {suggested})")
            return 1
        return 0 if walk_runbook(api, incident, runbook, args) else 1
    except ApiError as exc:
        say(f"the control plane refused: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
