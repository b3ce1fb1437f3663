"""Benchmark: history pages at 1 M rows (incident, runbook run, action history, audit, incident list, bot API).

    uv run python bench/history_pages.py [--quick] [--requests N] [--warmup N] [--rows N] [--keep]

Starts its own sandbox Postgres + Redis in a temp dir (and stops them at the end, also on Ctrl-C / SIGTERM),
creates and migrates a control-plane database, and configures Django in this process as the server does
(``import controlplane.wsgi``). Users, catalog, the runbook library, the incident and its run are made
through the services; the history is filled with ``INSERT ... SELECT generate_series``. Every page is then
measured twice with ``django.test.Client`` (server time = the wall time of the in-process request; the
query count from ``CaptureQueriesContext``):

1. small: 1,000 history actions, audit events and resolved incidents; an incident with 10 timeline entries
   and 5 actions; a run of 004-rehydrate-mart on it;
2. large: the same after filling the history to 1,000,000 actions, audit events and resolved incidents,
   and the incident to 1,000 timeline entries and 200 actions (with approvals and log lines).

The table shows each page's median and p99 in both, the ratio, the query counts, and PASS/OVER against the
DESIGN.md section 9 budget (<= 100 ms server time, the same number of queries at 1 M rows as at 1,000).
Informational: the exit status is 0 unless something broke. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import gc
import math
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.launch_dispatch import (  # noqa: E402 (needs the repo root on sys.path when run as a file)
    BenchError,
    World,
    _raise_interrupt,
    control_plane_env,
    fmt,
    migrating,
    pct,
    print_table,
    step,
)
from bench.launch_dispatch import machine as launch_machine  # noqa: E402
from sandbox import services as sandbox  # noqa: E402

BUDGET_MS = 100.0  # DESIGN.md section 9: incident and history pages, server time
CP_DB = "cp_history_bench"
PAGE_SIZE = 50
HISTORY_STEP_S = 15.5  # history rows are this far apart: 1 M rows span about six months
N_TARGETS_PER_ENV = 100
VERBS = ["refresh-mart", "clear", "rerun", "backfill", "pause"]
CHANNELS = ["web", "api", "slack", "runbook", "schedule"]
# Terminal states only (the partial unique index allows one *active* action per target), in these shares.
HISTORY_STATES = ["succeeded"] * 40 + ["failed"] * 6 + ["cancelled"] * 2 + ["rejected"] + ["needs_attention"]
RARE_TARGET = "prod.archive.rare-mart"
RARE_VERB = "quarantine-review"
RARE_ROWS = 60
AUDIT_EVENTS = ["action.requested", "action.planned", "action.started", "action.executed", "action.succeeded"]


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    requests: int
    warmup: int
    small: int
    rows: int
    events: int
    incident_actions: int
    keep: bool
    quick: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench/history_pages.py", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=None, help="measured requests per page and data set (100; quick 20)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured requests per page first (5; quick 2)")
    parser.add_argument("--small", type=int, default=1000, help="history rows of each kind in the small set (1000)")
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="history rows of each kind in the large set (1000000)"
    )
    parser.add_argument("--events", type=int, default=1000, help="timeline entries of the incident, large set (1000)")
    parser.add_argument("--incident-actions", type=int, default=200, help="actions of the incident, large set (200)")
    parser.add_argument("--quick", action="store_true", help="fewer requests per page (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, the cluster) after the run")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    opts = Options(
        requests=args.requests if args.requests is not None else (20 if quick else 100),
        warmup=args.warmup if args.warmup is not None else (2 if quick else 5),
        small=args.small,
        rows=args.rows,
        events=args.events,
        incident_actions=args.incident_actions,
        keep=bool(args.keep),
        quick=quick,
    )
    if opts.requests < 1 or opts.warmup < 0:
        parser.error("--requests must be >= 1 and --warmup >= 0")
    if not 4 * PAGE_SIZE <= opts.small <= opts.rows:
        parser.error(f"need {4 * PAGE_SIZE} <= --small <= --rows")
    if opts.events < 10 or opts.incident_actions < 5:
        parser.error("--events must be >= 10 and --incident-actions >= 5 (the small set's)")
    return opts


# ------------------------------------------------------------------------------------------ the world


def bring_up(world: World) -> str:
    """Sandbox Postgres + Redis, a migrated database, and Django configured in this process on it."""
    step("starting sandbox Postgres and Redis")
    world.sandbox_started = True
    sb_env = sandbox.start_all(world.sandbox_root, emulators=False)
    pg_url, redis_url = sb_env["SANDBOX_PG_URL"], sb_env["REDIS_URL"]
    sandbox.drop_database(pg_url, CP_DB)
    cp_url = sandbox.create_database(pg_url, CP_DB)
    env = control_plane_env(world.tmp, cp_url, redis_url, LOG_LEVEL="WARNING")
    step("manage.py migrate")
    with migrating(env, world.tmp / "migrate.log"):
        pass
    os.environ.update(env)
    # Configure Django as the server process does: controlplane/wsgi.py sets it up, imports the URLconf and
    # freezes the start-up objects out of the garbage collector's sight.
    import controlplane.wsgi  # noqa: F401

    return pg_url


# ---------------------------------------------------------------------------------------- the data


@dataclass
class Data:
    """What the set-up created, by id, and how much of each kind of history the database holds."""

    users: dict[str, Any]
    token: str
    mart_key: str
    incident_id: int
    run_id: int
    run_action_id: str
    t0: dt.datetime  # the history's newest instant; older rows go back from here
    actions: int = 0  # history ActionRun rows (the incident's actions come on top)
    audit: int = 0  # filled audit events (the set-up's own real events come on top)
    incidents: int = 0  # resolved incidents
    events: int = 0  # the incident's timeline entries
    incident_actions: int = 0
    fill_seconds: dict[str, float] = field(default_factory=dict)


def seed(opts: Options) -> Data:
    """Users with roles, a catalog (2 environments, 201 targets), the runbook library's 004-rehydrate-mart,
    an API token, and the incident with its run: through the services, under a system change context."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import transaction
    from django.utils import timezone

    from controlplane.api.services import api_token_create
    from controlplane.audit.context import Channel, change_context
    from controlplane.catalog import services as cs
    from controlplane.incidents.models import Incident
    from runbooks import services as runbook_services
    from runbooks.loader import library_files, parse_file

    user_model = get_user_model()
    users: dict[str, Any] = {}
    for name, role in (("vera", "viewer"), ("rita", "responder"), ("rob", "responder"), ("alice", "approver")):
        user = user_model.objects.create_user(username=name, password=secrets.token_urlsafe(16))
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        users[name] = user
    with change_context(channel=Channel.SYSTEM, actor_name="bench-setup"), transaction.atomic():
        mart_key = ""
        for env_name, protected in (("dev", False), ("prod", True)):
            env = cs.environment_create(name=env_name, protected=protected, description="benchmark")
            conn = cs.connection_create(
                name=f"warehouse-{env_name}",
                kind="postgres",
                environment=env,
                config={"host": "127.0.0.1", "port": 1, "dbname": "warehouse", "user": "bench"},
                secret_refs={},
            )
            pipeline = cs.pipeline_create(name=f"mart_refresh_{env_name}", environment=env, layer="mart")
            for i in range(N_TARGETS_PER_ENV):
                cs.target_create(
                    key=f"{env_name}.bench.mart-{i:03d}",
                    kind="matview",
                    connection=conn,
                    locator={"schema": "mart", "name": f"view_{i:03d}"},
                )
            if env_name == "prod":  # the rare target: only a few old actions (make_rare)
                cs.target_create(
                    key=RARE_TARGET, kind="matview", connection=conn, locator={"schema": "mart", "name": "archive"}
                )
            if env_name == "dev":
                mart = cs.target_create(
                    key="dev.weather.daily_weather_aggregates",
                    kind="matview",
                    connection=conn,
                    locator={"schema": "mart", "name": "daily_weather_aggregates"},
                    pipeline=pipeline,
                )
                mart_key, mart_pipeline = mart.key, pipeline
        # The whole library, as a deployment has it: the incident page ranks every runbook for the incident.
        runbook_services.runbooks_load(parsed=[parse_file(path) for path in library_files()])
        _, token = api_token_create(user=users["vera"], name="bench", scopes=["actions:read"])
        now = timezone.now()
        incident = Incident.objects.create(
            title="mart.daily_weather_aggregates is stale",
            severity=Incident.Severity.HIGH,
            status=Incident.Status.ACKNOWLEDGED,
            fingerprint="postgres.mart_stale:dev.weather.daily_weather_aggregates",
            alert_type="postgres.mart_stale",
            source="postgres",
            summary="no refresh for 26 hours (SLA 2 h)",
            details={"log_excerpt": "ERROR: canceling statement due to lock timeout\n" * 5},
            pipeline=mart_pipeline,
            alert_count=3,
            last_alert_at=now,
            acknowledged_at=now,
        )
        incident.targets.add(mart)
        # Opened a day ago (auto_now_add stamps now): its actions and timeline come after that.
        Incident.objects.filter(pk=incident.pk).update(created_at=now - dt.timedelta(days=1))
    with change_context(channel=Channel.WEB, user=users["rita"]):
        run = runbook_services.run_start(
            actor=users["rita"], runbook="004-rehydrate-mart", params={"mart": mart_key}, incident=incident
        )
    data = Data(
        users=users,
        token=token,
        mart_key=mart_key,
        incident_id=incident.pk,
        run_id=run.pk,
        run_action_id="",
        t0=now - dt.timedelta(days=1, minutes=1),
    )
    return data


def _insert_select(model: Any, exprs: dict[str, str], source: str, params: dict[str, Any]) -> int:
    """``INSERT INTO <model's table> (every column) SELECT <exprs> FROM <source>``. Columns without an
    expression get NULL or the field's default, so a column added later does not break the benchmark."""
    from django.db import connection
    from django.db.models.fields import AutoFieldMixin

    columns, values, params = [], [], dict(params)
    for f in model._meta.concrete_fields:
        if f.column not in exprs and isinstance(f, AutoFieldMixin):
            continue  # the sequence numbers it
        if f.column in exprs:
            values.append(exprs[f.column])
        elif f.null:
            values.append("NULL")
        elif f.has_default():
            params[f"_default_{f.column}"] = f.get_db_prep_save(f.get_default(), connection)
            values.append(f"%(_default_{f.column})s")
        else:
            raise BenchError(f"no value for {model._meta.db_table}.{f.column} in the benchmark's fill")
        columns.append(connection.ops.quote_name(f.column))
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {source}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


@contextlib.contextmanager
def bulk_load() -> Any:
    """One transaction with foreign-key and other triggers off (``session_replication_role = replica``, a
    standard bulk-load switch; the rows are consistent by construction), as a restore would load them."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        yield


def fill_history_actions(data: Data, upto: int) -> None:
    """History actions numbered ``data.actions .. upto - 1``, each HISTORY_STEP_S older than the one before,
    terminal, spread over the 200 bench targets, five verbs, five channels and the four users."""
    from controlplane.actions.models import ActionRun
    from controlplane.catalog.models import Target

    if upto <= data.actions:
        return
    t = time.perf_counter()
    targets = list(
        Target.objects.filter(key__contains=".bench.").order_by("key").values_list("id", "connection__environment_id")
    )
    users = [u.pk for u in data.users.values()]
    exprs = {
        "id": "gen_random_uuid()",
        "verb": "(%(verbs)s::text[])[1 + g %% 5]",
        "target_id": "(%(targets)s::bigint[])[1 + g %% %(n_targets)s]",
        "environment_id": "(%(envs)s::bigint[])[1 + g %% %(n_targets)s]",
        "params": "'{\"concurrently\": true}'::jsonb",
        "reason": "'history row ' || g || ': the mart was stale after the nightly load'",
        "channel": "(%(channels)s::text[])[1 + (g / 7) %% 5]",
        "requested_by_id": "(%(users)s::bigint[])[1 + (g / 3) %% %(n_users)s]",
        "requested_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second'",
        "request_id": "'req-' || g",
        "request_fingerprint": "md5(g::text)",
        "plan": '\'{"summary": "refresh 1 view", "risk": "low"}\'::jsonb',
        "risk": "'low'",
        "requires_approval": "false",
        "approval_reason": "''",
        "idempotent": "true",
        "state": "(%(states)s::text[])[1 + (g * 7) %% %(n_states)s]",
        "attempts": "1",
        "max_attempts": "3",
        "queued_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second'",
        "started_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second' + interval '1 second'",
        "finished_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second' + interval '9 seconds'",
        # History: an action that needed attention was resolved long ago (else it would still hold its target).
        "resolved_at": "CASE WHEN (%(states)s::text[])[1 + (g * 7) %% %(n_states)s] = 'needs_attention' "
        "THEN %(t0)s::timestamptz - g * %(step)s * interval '1 second' + interval '1 hour' END",
        "worker": "'celery@bench'",
        "cancel_requested": "false",
        "outcome": '\'{"summary": "done"}\'::jsonb',
        "error": "''",
    }
    params = {
        "verbs": VERBS,
        "targets": [t_id for t_id, _ in targets],
        "envs": [env_id for _, env_id in targets],
        "n_targets": len(targets),
        "channels": CHANNELS,
        "users": users,
        "n_users": len(users),
        "t0": data.t0,
        "step": HISTORY_STEP_S,
        "states": HISTORY_STATES,
        "n_states": len(HISTORY_STATES),
        "start": data.actions,
        "stop": upto - 1,
    }
    with bulk_load():
        _insert_select(ActionRun, exprs, "generate_series(%(start)s::bigint, %(stop)s::bigint) AS g", params)
    data.fill_seconds["actions"] = data.fill_seconds.get("actions", 0.0) + time.perf_counter() - t
    data.actions = upto


def make_rare(data: Data) -> None:
    """The oldest RARE_ROWS history actions go to the rare target with the rare verb (those of an earlier
    call go back to a common target and verb): a filter on either then looks for a few rows at the very end
    of the history, the case a (column, requested_at, id) index is for."""
    from django.db import connection

    from controlplane.catalog.models import Target

    rare = Target.objects.get(key=RARE_TARGET).pk
    common = Target.objects.get(key="prod.bench.mart-000").pk
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE actions_actionrun SET target_id = %s, verb = 'refresh-mart' WHERE target_id = %s",
            [common, rare],
        )
        cursor.execute(
            "UPDATE actions_actionrun SET target_id = %s, verb = %s WHERE id IN "
            "(SELECT id FROM actions_actionrun WHERE incident_id IS NULL ORDER BY requested_at, id LIMIT %s)",
            [rare, RARE_VERB, RARE_ROWS],
        )


def fill_incident(data: Data, actions_upto: int, events_upto: int) -> None:
    """The incident's actions (refresh-mart on the mart, every third approved by alice, 5 log lines each)
    and its timeline entries (alerts, action outcomes linking an action, markdown comments, status changes,
    runbook steps linking the run), one every 20 s after the incident opened."""
    from controlplane.actions.models import ActionLogLine, ActionRun, Approval
    from controlplane.catalog.models import Target
    from controlplane.incidents.models import Incident, IncidentEvent

    t = time.perf_counter()
    incident = Incident.objects.get(pk=data.incident_id)
    mart = Target.objects.select_related("connection").get(key=data.mart_key)
    users = data.users
    with bulk_load():
        if actions_upto > data.incident_actions:
            exprs = {
                "id": "gen_random_uuid()",
                "verb": "'refresh-mart'",
                "target_id": "%(target)s",
                "environment_id": "%(env)s",
                "params": "'{\"concurrently\": true}'::jsonb",
                "reason": "'Rehydrate the mart (INC-' || %(incident)s || '), attempt ' || g",
                "channel": "CASE WHEN g %% 2 = 0 THEN 'web' ELSE 'runbook' END",
                "requested_by_id": "CASE WHEN g %% 2 = 0 THEN %(rita)s ELSE %(rob)s END",
                "requested_at": "%(created)s::timestamptz + g * interval '30 seconds'",
                "request_id": "'inc-req-' || g",
                "request_fingerprint": "md5('inc' || g)",
                "incident_id": "%(incident)s",
                "plan": '\'{"summary": "REFRESH MATERIALIZED VIEW CONCURRENTLY", "risk": "low"}\'::jsonb',
                "risk": "'low'",
                "requires_approval": "g %% 3 = 0",
                "approval_reason": "CASE WHEN g %% 3 = 0 THEN 'protected environment' ELSE '' END",
                "idempotent": "true",
                "state": "CASE WHEN g %% 4 = 0 THEN 'failed' ELSE 'succeeded' END",
                "attempts": "1",
                "max_attempts": "3",
                "finished_at": "%(created)s::timestamptz + g * interval '30 seconds' + interval '20 seconds'",
                "worker": "'celery@bench'",
                "cancel_requested": "false",
                "outcome": '\'{"summary": "refreshed"}\'::jsonb',
                "verification": '\'{"summary": "populated, 1,234 rows"}\'::jsonb',
                "error": "''",
            }
            params = {
                "target": mart.pk,
                "env": mart.connection.environment_id,
                "incident": incident.pk,
                "rita": users["rita"].pk,
                "rob": users["rob"].pk,
                "created": incident.created_at,
                "start": data.incident_actions,
                "stop": actions_upto - 1,
            }
            _insert_select(ActionRun, exprs, "generate_series(%(start)s::bigint, %(stop)s::bigint) AS g", params)
            new = "(SELECT id, row_number() OVER (ORDER BY requested_at) AS n FROM actions_actionrun "
            new += "WHERE incident_id = %(incident)s AND requires_approval AND NOT EXISTS "
            new += "(SELECT 1 FROM actions_approval ap WHERE ap.action_id = actions_actionrun.id)) AS a"
            approval = {
                "action_id": "a.id",
                "approver_id": "%(alice)s",
                "decision": "'approved'",
                "comment": "'checked the plan: one view, CONCURRENTLY'",
                "channel": "'web'",
                "decided_at": "%(created)s::timestamptz + a.n * interval '1 second'",
            }
            _insert_select(Approval, approval, new, {**params, "alice": users["alice"].pk})
            lines = "(SELECT id, requested_at FROM actions_actionrun WHERE incident_id = %(incident)s "
            lines += (
                "AND NOT EXISTS (SELECT 1 FROM actions_actionlogline l WHERE l.action_id = actions_actionrun.id)) a "
            )
            lines += "CROSS JOIN generate_series(1, 5) AS i"
            line = {
                "action_id": "a.id",
                "at": "a.requested_at + i * interval '1 second'",
                "attempt": "1",
                "level": "'info'",
                "message": "'step ' || i || ': REFRESH MATERIALIZED VIEW CONCURRENTLY mart.daily_weather_aggregates'",
            }
            _insert_select(ActionLogLine, line, lines, params)
            data.incident_actions = actions_upto
        if events_upto > data.events:
            action_ids = [
                str(a)
                for a in ActionRun.objects.filter(incident_id=incident.pk)
                .order_by("requested_at")
                .values_list("id", flat=True)
            ]
            comment = (
                "**Checked** the view: `1,234` rows, last refresh 26 h ago.\n\n"
                "- the nightly load finished at 02:10\n- a lock held by the BI extract blocked the refresh\n\n"
                "See <https://wiki.example.org/runbooks/004>"
            )
            exprs = {
                "incident_id": "%(incident)s",
                "at": "%(created)s::timestamptz + g * interval '20 seconds'",
                "kind": "(%(kinds)s::text[])[1 + g %% 10]",
                "message": (
                    "CASE WHEN g %% 10 IN (2, 8) THEN %(comment)s || ' (note ' || g || ')' ELSE CASE g %% 10 "
                    "WHEN 1 THEN 'refresh-mart on ' || %(mart)s || ' succeeded: populated, 1,234 rows' "
                    "WHEN 6 THEN 'refresh-mart on ' || %(mart)s || ' failed: lock timeout' "
                    "WHEN 0 THEN 'alert again: no refresh for 26 hours' WHEN 3 THEN 'acknowledged by rita' "
                    "ELSE 'Check the current state of the mart view: passed: populated, 1,234 rows' END END"
                ),
                "actor_id": "CASE WHEN g %% 10 IN (2, 3, 8) THEN %(rita)s END",
                "actor_name": "CASE WHEN g %% 10 IN (2, 3, 8) THEN 'rita' ELSE '' END",
                "data": (
                    "CASE WHEN g %% 10 IN (1, 6) THEN jsonb_build_object('action', "
                    "(%(actions)s::text[])[1 + g %% %(n_actions)s]) "
                    "WHEN g %% 10 IN (4, 5, 7, 9) THEN jsonb_build_object('run', %(run)s, 'step', 'current_state') "
                    "ELSE '{}'::jsonb END"
                ),
            }
            params = {
                "incident": incident.pk,
                "created": incident.created_at,
                "comment": comment,
                "mart": data.mart_key,
                "rita": users["rita"].pk,
                "actions": action_ids,
                "n_actions": len(action_ids),
                "run": data.run_id,
                "kinds": ["alert", "action", "comment", "status", "step", "step", "action", "step", "comment", "step"],
                "start": data.events,
                "stop": events_upto - 1,
            }
            _insert_select(IncidentEvent, exprs, "generate_series(%(start)s::bigint, %(stop)s::bigint) AS g", params)
            data.events = events_upto
    data.fill_seconds["incident"] = data.fill_seconds.get("incident", 0.0) + time.perf_counter() - t


def shape_run(data: Data) -> None:
    """Put the run where a responder would have it: the current-state check done with findings, the
    blocking check skipped, the refresh done and linked to the incident's first action (verified), the
    after-refresh check done, and the manual "last seven days" step waiting (the current one)."""
    from django.utils import timezone

    from controlplane.actions.models import ActionRun
    from runbooks.models import RunbookRun, StepRun

    action = ActionRun.objects.filter(incident_id=data.incident_id, state="succeeded").order_by("requested_at").first()
    if action is None:
        raise BenchError("the incident has no succeeded action to link the run's refresh step to")
    data.run_action_id = str(action.id)
    now = timezone.now()
    findings = {
        "target": data.mart_key,
        "check": "matview_status",
        "passed": True,
        "summary": "populated, 1,234 rows, 48 MB, last refreshed 26 h ago",
        "expectation": "populated",
        "columns": ["schema", "name", "populated", "rows", "size", "last_refresh"],
        "rows": [["mart", "daily_weather_aggregates", True, 1234, "48 MB", "2026-11-20 02:10:00"]] * 3,
    }
    results = {
        "current_state": ("done", dict(findings)),
        "blocking": ("skipped", {"reason": "when: params.database was false"}),
        "refresh": (
            "done",
            {
                "action": str(action.id),
                "action_state": "succeeded",
                "target": data.mart_key,
                "verb": "refresh-mart",
                "verification": {"summary": "populated, 1,240 rows, refreshed just now"},
                "summary": "populated, 1,240 rows, refreshed just now",
                "passed": True,
            },
        ),
        "after_refresh": ("done", {**findings, "summary": "populated, 1,240 rows", "outputs": {"rows": "1240"}}),
        "last_days": ("waiting", {}),
    }
    for row in StepRun.objects.filter(run_id=data.run_id):
        state, result = results.get(row.step_id, ("pending", {}))
        row.state, row.result = state, result
        row.action = action if row.step_id == "refresh" else None
        row.started_at = now if state != "pending" else None
        row.finished_at = now if state in ("done", "skipped") else None
        row.actor_name = "rita" if state != "pending" else ""
        row.save()
    current = StepRun.objects.get(run_id=data.run_id, step_id="last_days").index
    RunbookRun.objects.filter(pk=data.run_id).update(current=current, state=RunbookRun.State.WAITING)


def fill_audit(data: Data, upto: int) -> None:
    """Audit events ``data.audit .. upto - 1`` appended to the chain (seq after the head), five action
    events in turn, spread over the users. Their hashes are placeholders (sha256 of the seq, each linking
    to the previous), the head is moved to the last one, and the verdict the periodic full verification
    would leave is stored as the checkpoint: each page view then verifies only newer events (none), which is
    the steady state. Walking 1 M events (the beat task) is not what the page does and is not measured."""
    from django.core.cache import cache
    from django.db import connection
    from django.utils import timezone

    from controlplane.audit import services as audit_services
    from controlplane.audit.models import AuditChainHead, AuditEvent

    if upto <= data.audit:
        return
    t = time.perf_counter()
    head = AuditChainHead.objects.get(id=1)
    n = upto - data.audit
    users = [(u.pk, u.username) for u in data.users.values()]
    exprs = {
        "seq": "%(seq0)s + i",
        "at": "%(t0)s::timestamptz - (%(n)s - i) * %(step)s * interval '1 second'",
        "actor_id": "(%(user_ids)s::bigint[])[1 + i %% %(n_users)s]",
        "actor_name": "(%(user_names)s::text[])[1 + i %% %(n_users)s]",
        "channel": "(%(channels)s::text[])[1 + (i / 5) %% 5]",
        "request_id": "'req-' || ((%(seq0)s + i) / 5)",
        "event": "(%(events)s::text[])[1 + i %% 5]",
        "object_type": "'actions.actionrun'",
        "object_id": "md5('action-' || ((%(seq0)s + i) / 5))::uuid::text",
        "object_repr": "'refresh-mart dev.bench.mart-' || lpad((i %% 100)::text, 3, '0') || ' (succeeded)'",
        "before": 'CASE WHEN i %% 5 = 0 THEN NULL ELSE \'{"state": "queued", "attempts": 0}\'::jsonb END',
        "after": '\'{"state": "running", "attempts": 1}\'::jsonb',
        "reason": "CASE WHEN i %% 5 = 1 THEN 'the mart was stale after the nightly load' ELSE '' END",
        "prev_hash": (
            "CASE WHEN i = 1 THEN %(head_hash)s ELSE encode(sha256(('bench-' || (%(seq0)s + i - 1))::bytea), 'hex') END"
        ),
        "hash": "encode(sha256(('bench-' || (%(seq0)s + i))::bytea), 'hex')",
    }
    params = {
        "seq0": head.seq,
        "t0": data.t0,
        "n": n,
        "step": HISTORY_STEP_S,
        "user_ids": [u for u, _ in users],
        "user_names": [name for _, name in users],
        "n_users": len(users),
        "channels": CHANNELS,
        "events": AUDIT_EVENTS,
        "head_hash": head.hash,
    }
    with bulk_load():
        _insert_select(AuditEvent, exprs, f"generate_series(1, {int(n)}) AS i", params)
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        assert last is not None
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {AuditChainHead._meta.db_table} SET seq = %s, hash = %s WHERE id = 1", list(last))
    verdict = audit_services.ChainVerdict(True, int(last[0]), last_hash=str(last[1]))
    cache.set(audit_services._VERDICT_KEY, {"verdict": verdict, "full_at": timezone.now()}, timeout=None)
    data.fill_seconds["audit"] = data.fill_seconds.get("audit", 0.0) + time.perf_counter() - t
    data.audit = upto


def fill_incidents(data: Data, upto: int) -> None:
    """Resolved incidents ``data.incidents .. upto - 1``, one every HISTORY_STEP_S going back from a day
    before the set-up, an hour long each, on the two bench pipelines."""
    from controlplane.catalog.models import Pipeline
    from controlplane.incidents.models import Incident

    if upto <= data.incidents:
        return
    t = time.perf_counter()
    pipelines = list(Pipeline.objects.order_by("name").values_list("id", flat=True))
    exprs = {
        "title": "'mart view ' || (g %% 100) || ' is stale'",
        "severity": "(ARRAY['low','medium','high','critical'])[1 + g %% 4]",
        "status": "'resolved'",
        "fingerprint": "'postgres.mart_stale:bench-' || g",
        "alert_type": "'postgres.mart_stale'",
        "source": "'postgres'",
        "summary": "'no refresh for 3 hours (SLA 2 h)'",
        "details": "'{}'::jsonb",
        "pipeline_id": "(%(pipelines)s::bigint[])[1 + g %% %(n_pipelines)s]",
        "alert_count": "1 + g %% 3",
        "last_alert_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second'",
        "created_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second'",
        "updated_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second' + interval '1 hour'",
        "acknowledged_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second' + interval '5 minutes'",
        "resolved_at": "%(t0)s::timestamptz - g * %(step)s * interval '1 second' + interval '1 hour'",
    }
    params = {
        "pipelines": pipelines,
        "n_pipelines": len(pipelines),
        "t0": data.t0,
        "step": HISTORY_STEP_S,
        "start": data.incidents,
        "stop": upto - 1,
    }
    with bulk_load():
        _insert_select(Incident, exprs, "generate_series(%(start)s::bigint, %(stop)s::bigint) AS g", params)
    data.fill_seconds["incidents"] = data.fill_seconds.get("incidents", 0.0) + time.perf_counter() - t
    data.incidents = upto


def analyze() -> float:
    """VACUUM ANALYZE the filled tables, as autovacuum would have by the time anyone reads them."""
    from django.db import connection

    t = time.perf_counter()
    tables = [
        "actions_actionrun",
        "actions_approval",
        "actions_actionlogline",
        "audit_auditevent",
        "incidents_incident",
        "incidents_incidentevent",
    ]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - t


# ----------------------------------------------------------------------------------------- the pages


@dataclass(frozen=True)
class Page:
    """One page to measure: its URL (with the cursor of a deep page), whether it is the bot API, and a
    check of the answer (an error message, or "" when it shows what it should)."""

    label: str
    url: str
    api: bool = False
    key: str = ""  # the same page in both data sets (labels of deep pages name their depth)
    check: Callable[[Any], str] = lambda response: ""


@dataclass
class Figures:
    median_ms: float
    p99_ms: float
    queries: int
    sql_ms: float
    kb: float
    error: str = ""
    label: str = ""


def _rows_check(marker: str, expected: int) -> Callable[[Any], str]:
    def check(response: Any) -> str:
        found = response.content.decode().count(marker)
        return "" if found == expected else f"{found} rows shown, expected {expected}"

    return check


def _api_check(expected: int) -> Callable[[Any], str]:
    def check(response: Any) -> str:
        found = len(response.json().get("results", []))
        return "" if found == expected else f"{found} results, expected {expected}"

    return check


def _contains(text: str) -> Callable[[Any], str]:
    def check(response: Any) -> str:
        return "" if text in response.content.decode() else f"{text!r} not on the page"

    return check


def _keyset_cursor(values: Sequence[Any], number: int) -> str:
    """The web lists' cursor for the page after the row with these ordering values (page ``number``)."""
    from controlplane.web.pagination import encode_cursor

    return encode_cursor(values, older=True, number=number)


def _drf_cursor(position: Any) -> str:
    """DRF's CursorPagination cursor for the page after a row whose ordering field is ``position``."""
    return base64.b64encode(urllib.parse.urlencode({"p": str(position)}).encode()).decode()


def pages(data: Data) -> list[Page]:
    """The pages, with deep cursors computed for the data as it is now (half-way down each list)."""
    from controlplane.actions.models import ActionRun
    from controlplane.audit.models import AuditEvent
    from controlplane.incidents.models import Incident

    def deep(qs: Any, fields: tuple[str, ...], depth: int) -> tuple[list[Any], int]:
        row = qs.order_by(*[f"-{f}" for f in fields]).values_list(*fields)[depth - 1]
        return list(row), depth // PAGE_SIZE + 1

    all_actions = ActionRun.objects.count()
    failed = ActionRun.objects.filter(state="failed").count()
    on_target = ActionRun.objects.filter(target__key="dev.bench.mart-007").count()
    audit_total = AuditEvent.objects.count()
    incidents_total = Incident.objects.count()
    a_row, a_page = deep(ActionRun.objects.all(), ("requested_at", "id"), all_actions // 2)
    f_row, f_page = deep(ActionRun.objects.filter(state="failed"), ("requested_at", "id"), failed // 2)
    au_row, au_page = deep(AuditEvent.objects.all(), ("seq",), audit_total // 2)
    i_row, i_page = deep(Incident.objects.all(), ("created_at", "id"), incidents_total // 2)
    action_row = "<td><code>"
    audit_row = '<td class="mono">'
    incident_row = '<td class="mono nowrap">INC-'
    half = ActionRun.objects.order_by("-requested_at", "-id").values_list("requested_at", flat=True)[
        all_actions // 2 - 1
    ]
    q = urllib.parse.urlencode
    return [
        Page("incident page", f"/incidents/{data.incident_id}/", check=_contains("Actions taken")),
        Page("runbook run page", f"/runs/{data.run_id}/", check=_contains("The last seven days")),
        Page("actions, first page", "/actions/", check=_rows_check(action_row, PAGE_SIZE)),
        Page(
            f"actions, after {all_actions // 2:,} rows",
            "/actions/?" + q({"cursor": _keyset_cursor(a_row, a_page)}),
            key="actions, deep page",
            check=_rows_check(action_row, PAGE_SIZE),
        ),
        Page("actions state=failed, first", "/actions/?state=failed", check=_rows_check(action_row, PAGE_SIZE)),
        Page(
            f"actions state=failed, after {failed // 2:,}",
            "/actions/?" + q({"state": "failed", "cursor": _keyset_cursor(f_row, f_page)}),
            key="actions state=failed, deep",
            check=_rows_check(action_row, PAGE_SIZE),
        ),
        Page("actions environment=prod, first", "/actions/?environment=prod", check=_rows_check(action_row, PAGE_SIZE)),
        Page(
            "actions target=..mart-007, first",
            "/actions/?target=dev.bench.mart-007",
            check=_rows_check(action_row, min(PAGE_SIZE, on_target)),
        ),
        Page(
            f"actions target=<rare> ({RARE_ROWS} oldest rows)",
            "/actions/?" + q({"target": RARE_TARGET}),
            check=_rows_check(action_row, PAGE_SIZE),
        ),
        Page(
            f"actions verb={RARE_VERB} (the same)",
            "/actions/?" + q({"verb": RARE_VERB}),
            check=_rows_check(action_row, PAGE_SIZE),
        ),
        Page("audit, first page", "/audit/", check=_rows_check(audit_row, PAGE_SIZE)),
        Page(
            f"audit, after {audit_total // 2:,} events",
            "/audit/?" + q({"cursor": _keyset_cursor(au_row, au_page)}),
            key="audit, deep page",
            check=_rows_check(audit_row, PAGE_SIZE),
        ),
        Page("audit event=action.started", "/audit/?event=action.started", check=_rows_check(audit_row, PAGE_SIZE)),
        Page(
            "audit actor=bench-setup (oldest events)",
            "/audit/?actor=bench-setup",
            check=_rows_check(audit_row, PAGE_SIZE),
        ),
        Page(
            "audit event=catalog.target.created (oldest)",
            "/audit/?event=catalog.target.created",
            check=_rows_check(audit_row, PAGE_SIZE),
        ),
        Page("incidents, open (default)", "/incidents/", check=_rows_check(incident_row, 1)),
        Page("incidents status=all, first", "/incidents/?status=all", check=_rows_check(incident_row, PAGE_SIZE)),
        Page(
            f"incidents status=all, after {incidents_total // 2:,}",
            "/incidents/?" + q({"status": "all", "cursor": _keyset_cursor(i_row, i_page)}),
            key="incidents status=all, deep",
            check=_rows_check(incident_row, PAGE_SIZE),
        ),
        Page("API GET /api/v1/actions", "/api/v1/actions", api=True, check=_api_check(PAGE_SIZE)),
        Page(
            f"API actions, after {all_actions // 2:,}",
            "/api/v1/actions?" + q({"cursor": _drf_cursor(half)}),
            api=True,
            key="API actions, deep page",
            check=_api_check(PAGE_SIZE),
        ),
        Page(
            "API actions target=<rare>",
            "/api/v1/actions?" + q({"target": RARE_TARGET}),
            api=True,
            check=_api_check(PAGE_SIZE),
        ),
        Page("dashboard (informational)", "/", check=_contains('id="dashboard"')),
    ]


def measure_page(client: Any, api: Any, page: Page, n: int, warmup: int) -> Figures:
    """``warmup`` unmeasured requests, ``n`` timed ones, then one more with the queries captured."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    get = api if page.api else client
    url = page.url

    def fetch() -> Any:
        response = get.get(url)
        if response.status_code != 200:
            raise BenchError(f"{page.label}: {page.url} answered {response.status_code}: {response.content[:500]!r}")
        return response

    for _ in range(warmup):
        fetch()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fetch()
        times.append((time.perf_counter() - t) * 1000)
    with CaptureQueriesContext(connection) as captured:
        response = fetch()
    sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
    return Figures(
        median_ms=statistics.median(times),
        p99_ms=pct(times, 99),
        queries=len(captured.captured_queries),
        sql_ms=sql_ms,
        kb=len(response.content) / 1024,
        error=page.check(response),
    )


def measure_all(data: Data, opts: Options, what: str) -> dict[str, Figures]:
    from django.test import Client

    # The benchmark's own set-up (seeding, filling) left objects behind that a server process would not
    # hold: put them out of the garbage collector's way, as controlplane/wsgi.py does with start-up objects.
    gc.collect()
    gc.freeze()
    client = Client()
    client.force_login(data.users["alice"])  # approver: sees every control a page offers
    api = Client(headers={"Authorization": f"Bearer {data.token}"})
    out: dict[str, Figures] = {}
    for page in pages(data):
        step(f"{what}: {page.label}")
        figures = measure_page(client, api, page, opts.requests, opts.warmup)
        figures.label = page.label
        out[page.key or page.label] = figures
        figures_label = f"{figures.median_ms:.1f} ms median, {figures.p99_ms:.1f} ms p99, {figures.queries} queries"
        step(f"  {figures_label}" + (f"  CHECK: {figures.error}" if figures.error else ""))
    return out


# ------------------------------------------------------------------------------------------- report


def machine() -> list[str]:
    """launch_dispatch's header (date, commit, machine, versions) and the load average."""
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return [*launch_machine(), f"load        {load}"]


def pg_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        row = cursor.fetchone()
    return str(row[0]) if row else "?"


def report(
    opts: Options, data: Data, small: dict[str, Figures], large: dict[str, Figures], sizes: dict[str, str]
) -> bool:
    """Print the figures; True when every page is within budget."""
    print("\n" + "=" * 110)
    print("Control plane: history pages at scale (bench/history_pages.py)")
    print("=" * 110)
    for line in machine():
        print(line)
    print(
        f"services    sandbox PostgreSQL {pg_version()} (fsync off), Redis; DEBUG=false; in-process django.test.Client"
    )
    print(
        f"run         {'--quick ' if opts.quick else ''}{opts.requests} requests per page and data set "
        f"(+{opts.warmup} warm-up); server time = wall time of the in-process request"
    )
    print(f"small set   {sizes['small']}")
    print(f"large set   {sizes['large']}")
    fills = ", ".join(f"{k} {v:.1f} s" for k, v in data.fill_seconds.items())
    print(f"fill        {fills}")
    header = ["page", "small med", "p99", "q", "large med", "p99", "q", "sql ms", "KB", "x med", "budget"]
    rows, ok = [], True
    for label, big in large.items():
        little = small.get(label)
        if little is None:
            continue
        ratio = big.median_ms / little.median_ms if little.median_ms else math.nan
        within = big.p99_ms <= BUDGET_MS and big.queries <= little.queries and not big.error
        informational = "informational" in label
        if not informational:
            ok = ok and within
        verdict = ("PASS" if within else "OVER") + (" (info)" if informational else "")
        if big.queries > little.queries:
            verdict += " q grew"
        if big.error or little.error:
            verdict += " CHECK"
        rows.append(
            [
                big.label or label,
                fmt(little.median_ms),
                fmt(little.p99_ms),
                str(little.queries),
                fmt(big.median_ms),
                fmt(big.p99_ms),
                str(big.queries),
                fmt(big.sql_ms),
                fmt(big.kb, 0),
                fmt(ratio, 2),
                verdict,
            ]
        )
    print_table(
        f"Server time in ms (median, p99), queries (q) per request; budget: large p99 <= {BUDGET_MS:.0f} ms and q "
        "not above the small set's",
        header,
        rows,
    )
    problems = [
        f"{label} ({which}): {f.error}"
        for which, figs in (("small", small), ("large", large))
        for label, f in figs.items()
        if f.error
    ]
    if problems:
        print("\nPages that did not show what they should (their figures are suspect):")
        for problem in problems:
            print(f"  {problem}")
    print(
        "\nsql ms: the time the captured request spent in the database driver (large set); x med: large median /"
        " small median."
    )
    return ok and not problems


def _sizes(data: Data) -> str:
    return (
        f"{data.actions:,} history actions, {data.audit:,} filled audit events, {data.incidents:,} resolved incidents; "
        f"the incident: {data.events:,} timeline entries, {data.incident_actions:,} actions"
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-history-"))
    tmp.chmod(0o755)  # the postgres user runs the cluster below it when we are root
    world = World(tmp=tmp, keep=opts.keep, sandbox_root=tmp / "sandbox")
    step(f"temp dir {tmp}")
    broke = False
    started = time.monotonic()
    try:
        bring_up(world)
        step("seeding users, catalog, runbook, incident and run")
        data = seed(opts)
        step(f"small set: {opts.small:,} of each history kind")
        fill_history_actions(data, opts.small)
        make_rare(data)
        fill_incident(data, 5, 10)
        shape_run(data)
        fill_audit(data, opts.small)
        fill_incidents(data, opts.small)
        analyze()
        sizes = {"small": _sizes(data)}
        small = measure_all(data, opts, "small")
        step(f"large set: filling to {opts.rows:,} of each history kind")
        fill_history_actions(data, opts.rows)
        make_rare(data)
        step(f"  actions {data.fill_seconds['actions']:.1f} s")
        fill_incident(data, opts.incident_actions, opts.events)
        fill_audit(data, opts.rows)
        step(f"  audit {data.fill_seconds['audit']:.1f} s")
        fill_incidents(data, opts.rows)
        step(f"  incidents {data.fill_seconds['incidents']:.1f} s")
        data.fill_seconds["vacuum analyze"] = analyze()
        sizes["large"] = _sizes(data)
        large = measure_all(data, opts, "large")
        within = report(opts, data, small, large, sizes)
        print(f"\nall pages within budget: {'yes' if within else 'NO'}; run took {time.monotonic() - started:.0f} s")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        broke = True
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        broke = True
    except Exception:
        traceback.print_exc()
        broke = True
    finally:
        step("stopping the sandbox" + (f" (keeping {tmp})" if opts.keep else ""))
        world.close()
    return 1 if broke else 0


if __name__ == "__main__":
    sys.exit(main())
