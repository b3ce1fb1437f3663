"""Benchmark: Slack button presses, the ack and the time to the action row, beside a bare Django view.

    uv run python bench/slack_ack.py [--rounds 10] [--concurrency 20] [--run-actions] [--quick] [--keep]

Starts what it needs in a temp dir and stops it at the end (also on Ctrl-C / SIGTERM): sandbox Postgres and
Redis, a migrated control-plane database, the seed-004 weather warehouse with one matview target per press,
the web tier as shipped (nginx in front of gunicorn 2x4), Slack's Celery worker as shipped (its own queue:
presses, commands, the outbox) and the Slack stand-in (sandbox/slack.py) with a bot token and a signing
secret. The actions' worker does not run unless ``--run-actions``: the launched actions stay queued and the
figures are the press path itself (as launch_dispatch.py's launch phase); with it, each round's refreshes run
beside the presses and end before the next round. A responder is linked to a Slack user; the stand-in
holds one message per target with an ``action.launch`` button (refresh-mart on that target).

Each round, ``--concurrency`` threads press their buttons at the same instant, as the stand-in sends a press:
the ``block_actions`` payload form-encoded, signed v0, one new connection each, to nginx's /slack/interactions.
Figures (DESIGN.md section 9's Slack budget and issue 14's):
- ack: the server's time for the press, gunicorn's own request time (its access log's ``%(D)s``, from the
  request read to the answer written): p99 <= 50 ms; beside it the same at the client over loopback, which
  adds nginx and the wait for a free gunicorn thread (20 presses at once meet 8 threads);
- press -> action row: from sending the press to the ActionRun's ``requested_at`` (same machine clock): p50
  <= 100 ms (the press is queued, a worker runs it as the linked user through the request service);
- baseline: the same rounds of GET /healthz (a bare Django view) through the same nginx, in the same run.
Exit status 1 when a press was not answered 200 or its action never appeared (or, with ``--run-actions``, did
not succeed); the budgets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.launch_dispatch import (  # noqa: E402 (needs the repo root on sys.path when run as a file)
    BOT_USER,
    TERMINAL,
    BenchError,
    World,
    _raise_interrupt,
    bring_up,
    fmt,
    ms,
    pct,
    print_table,
    start_web_tier,
    start_worker,
    step,
    verdict,
)
from sandbox import slack as standin  # noqa: E402

BUDGET_ACK_P99_MS = 50.0
BUDGET_ROW_P50_MS = 100.0
SLACK_USER = "U0BENCH"
CHANNEL = "#bench-incidents"


@dataclass
class Options:
    rounds: int
    concurrency: int
    keep: bool
    run_actions: bool = False


@dataclass
class Figures:
    ack: list[float] = field(default_factory=list)  # seconds, at the client
    to_row: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    server_ack: list[float] = field(default_factory=list)  # gunicorn's request time
    server_baseline: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench/slack_ack.py", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds of simultaneous presses (10; quick 2)")
    parser.add_argument("--concurrency", type=int, default=20, help="presses sent at the same instant (20)")
    parser.add_argument(
        "--run-actions", action="store_true", help="run the actions' worker too: the refreshes beside the presses"
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 10)
    if rounds < 1 or args.concurrency < 1:
        parser.error("--rounds and --concurrency must be at least 1")
    return Options(rounds=rounds, concurrency=args.concurrency, keep=args.keep, run_actions=args.run_actions)


def at_once(n: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` for i < n in n threads released together by a barrier."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise BenchError(f"a client thread failed: {errors[0]!r}")


def post_buttons(slack: standin.SlackStandIn, token: str, targets: list[str]) -> dict[str, str]:
    """One message per target with its ``action.launch`` button, as the incident message offers one; returns
    target -> the message's ts."""
    from slack_sdk import WebClient

    from controlplane.slack.blocks import button

    client = WebClient(token=token, base_url=slack.api_url, timeout=5)
    where: dict[str, str] = {}
    for key in targets:
        value: dict[str, Any] = {"incident": None, "verb": "refresh-mart", "target": key, "params": {}}
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{key}* is stale"}},
            {"type": "actions", "elements": [button("action.launch", "Refresh the mart", value, style="danger")]},
        ]
        where[key] = client.chat_postMessage(channel=CHANNEL, text=f"{key} is stale", blocks=blocks)["ts"]
    return where


def wait_rows(targets: list[str], *, ended: bool, timeout: float = 60.0) -> dict[str, Any]:
    """target -> its action (requested_at, state) once every target has one (that ended, with ``ended``)."""
    from django.db import connections

    from controlplane.actions.models import ActionRun

    deadline = time.monotonic() + timeout
    while True:
        rows = {a.target.key: a for a in ActionRun.objects.filter(target__key__in=targets).select_related("target")}
        if len(rows) == len(targets) and (not ended or all(a.state in TERMINAL for a in rows.values())):
            connections.close_all()
            return rows
        if time.monotonic() > deadline:
            missing = sorted(set(targets) - set(rows))
            running = sorted(k for k, a in rows.items() if a.state not in TERMINAL)
            raise BenchError(f"after {timeout:.0f} s: no action for {missing[:5]}, not ended: {running[:5]}")
        time.sleep(0.05)


def run_rounds(
    opts: Options, slack: standin.SlackStandIn, nginx_port: int, targets: list[str], where: dict[str, str]
) -> Figures:
    figures = Figures()
    healthz = f"http://127.0.0.1:{nginx_port}/healthz"
    for r in range(opts.rounds):
        chunk = targets[r * opts.concurrency : (r + 1) * opts.concurrency]
        sent: dict[str, float] = {}

        def press(i: int, chunk: list[str] = chunk, sent: dict[str, float] = sent) -> None:
            key = chunk[i]
            sent[key] = time.time()
            t0 = time.perf_counter()
            record = standin.press(
                slack.state,
                base_url=slack.base_url,
                user_id=SLACK_USER,
                channel=CHANNEL,
                ts=where[key],
                action_id="action.launch",
            )
            elapsed = time.perf_counter() - t0
            if record["status"] != 200:
                figures.failures.append(f"{key}: {record['status']} {record['error']} {record['answer'][:200]}")
            else:
                figures.ack.append(elapsed)

        def bare(i: int) -> None:
            t0 = time.perf_counter()
            with urllib.request.urlopen(healthz, timeout=5) as answer:
                answer.read()
            figures.baseline.append(time.perf_counter() - t0)

        at_once(len(chunk), bare)
        at_once(len(chunk), press)
        rows = wait_rows(chunk, ended=opts.run_actions)
        expected = "succeeded" if opts.run_actions else "queued"
        for key, action in rows.items():
            figures.to_row.append(action.requested_at.timestamp() - sent[key])
            if action.state != expected:
                figures.failures.append(f"{key}: action {action.id} is {action.state}: {action.error}")
        step(f"round {r + 1}/{opts.rounds}: {len(chunk)} presses")
    return figures


def server_times(access_log: Path, figures: Figures, n: int) -> None:
    """gunicorn's request times (µs, the last field of each access log line) of the last ``n`` presses and
    views: the measured rounds (the warm-up round and the start-up's health checks came before)."""
    presses, views = [], []
    for line in access_log.read_text().splitlines():
        request, _, micros = line.rpartition(" ")
        if request.startswith("POST /slack/interactions"):
            presses.append(int(micros) / 1e6)
        elif request.startswith("GET /healthz"):
            views.append(int(micros) / 1e6)
    figures.server_ack, figures.server_baseline = presses[-n:], views[-n:]


def report(opts: Options, figures: Figures) -> None:
    def row(name: str, values: list[float]) -> list[str]:
        return [name, *(fmt(ms(pct(values, p))) for p in (50, 95, 99)), fmt(ms(max(values))), str(len(values))]

    print_table(
        f"Slack presses: {opts.rounds} rounds of {opts.concurrency} simultaneous signed presses through nginx, ms "
        + ("(the actions run beside them)" if opts.run_actions else "(the actions stay queued: no actions' worker)"),
        ["figure", "p50", "p95", "p99", "max", "n"],
        [
            row("ack, server: gunicorn's request time of a press", figures.server_ack),
            row("baseline, server: GET /healthz, a bare Django view", figures.server_baseline),
            row("ack, client: press sent -> answer (200, empty body)", figures.ack),
            row("baseline, client: GET /healthz", figures.baseline),
            row("press sent -> action row (requested_at)", figures.to_row),
        ],
    )
    ack_p99, row_p50 = ms(pct(figures.server_ack, 99)), ms(pct(figures.to_row, 50))
    base_p99 = ms(pct(figures.server_baseline, 99))
    print(
        f"\n  ratio server ack p99 / bare view p99 = {fmt(ack_p99)} / {fmt(base_p99)} = {fmt(ack_p99 / base_p99, 2)}x"
    )
    print_table(
        "Budgets (DESIGN.md section 9, issue 14)",
        ["budget", "measured", "budget", "verdict"],
        [
            [
                "Slack ack p99 (server)",
                f"{fmt(ack_p99)} ms",
                f"<= {BUDGET_ACK_P99_MS:.0f} ms",
                verdict(ack_p99 <= BUDGET_ACK_P99_MS),
            ],
            [
                "button press -> action row p50",
                f"{fmt(row_p50)} ms",
                f"<= {BUDGET_ROW_P50_MS:.0f} ms",
                verdict(row_p50 <= BUDGET_ROW_P50_MS),
            ],
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-slack-"))
    tmp.chmod(0o755)  # the postgres user runs the cluster below it when we are root
    world = World(tmp=tmp, keep=opts.keep, sandbox_root=tmp / "sandbox")
    slack: standin.SlackStandIn | None = None
    try:
        info = bring_up(world, (opts.rounds + 1) * opts.concurrency)  # + the warm-up round
        token, signing_secret = "xoxb-bench-" + secrets.token_hex(8), secrets.token_hex(16)
        world.env.update(
            {
                "BENCH_SLACK_TOKEN": token,
                "BENCH_SLACK_SECRET": signing_secret,
                "SLACK_BOT_TOKEN_REF": "env:BENCH_SLACK_TOKEN",
                "SLACK_SIGNING_SECRET_REF": "env:BENCH_SLACK_SECRET",
            }
        )
        from django.contrib.auth import get_user_model

        from controlplane.audit.context import Channel, change_context
        from controlplane.slack.identity import slack_link_set

        with change_context(channel=Channel.SYSTEM, actor_name="bench-setup"):
            bot = get_user_model().objects.get(username=BOT_USER)
            slack_link_set(user=bot, slack_user_id=SLACK_USER, via="admin")
        slack = standin.start(token=token, signing_secret=signing_secret, users=[{"id": SLACK_USER, "name": BOT_USER}])
        world.env["SLACK_API_URL"] = slack.api_url
        step("starting the web tier (nginx + gunicorn 2x4) and the Celery worker")
        access_log = world.tmp / "gunicorn-access.log"
        _gunicorn, _nginx, port = start_web_tier(
            world, extra=("--access-logfile", str(access_log), "--access-logformat", "%(m)s %(U)s %(s)s %(D)s")
        )
        slack.state.interactions_url = f"http://127.0.0.1:{port}/slack/interactions"
        start_worker(world, queue="slack")  # as shipped: Slack's tasks on a worker of their own
        if opts.run_actions:
            start_worker(world)
        targets: list[str] = list(info["targets"])
        where = post_buttons(slack, token, targets)
        step("warm-up: one round, not measured")
        warm = Options(1, min(opts.concurrency, len(targets)), opts.keep, opts.run_actions)
        run_rounds(warm, slack, port, targets[: warm.concurrency], where)
        figures = run_rounds(opts, slack, port, targets[warm.concurrency :], where)
        server_times(access_log, figures, n=len(figures.baseline))
        report(opts, figures)
        if figures.failures:
            print("\nFAILED presses:\n  " + "\n  ".join(figures.failures[:20]))
            return 1
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        if slack is not None:
            slack.stop()
        world.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
