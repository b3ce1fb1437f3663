"""The control plane operating a real Airflow 3: previews, clear, rerun, backfill, pause/resume, alerts."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.airflow import AirflowConnector
from connectors.airflow.config import AirflowConfig
from connectors.base import ConnectorError, ExecutionContext, TargetRef
from controlplane.actions import services
from controlplane.actions.models import ActionRun, ActionState
from controlplane.actions.tasks import execute_action
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.catalog import services as cs
from controlplane.incidents.models import Incident, IncidentEvent
from tests.conftest import AIRFLOW_JWT_LIFETIME_S, AIRFLOW_SECRET_ENV, airflow_set_variable, wait_for

BRONZE = "data_ingestion_bronze"
RETAIL = "retail_transformation_pipeline"
PAUSED = "retail_ingestion_pipeline"


def trigger(airflow: Any, dag_id: str) -> str:
    run_id = f"test__{uuid.uuid4().hex[:10]}"
    airflow.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
    return run_id


def run_state(airflow: Any, dag_id: str, run_id: str) -> str:
    return str(airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])


def finished_run(airflow: Any, dag_id: str, run_id: str, timeout: float = 90) -> str:
    return wait_for(
        lambda: (s := run_state(airflow, dag_id, run_id)) in ("success", "failed") and s,
        timeout=timeout,
        interval=0.2,
        what=f"{dag_id} {run_id} to finish",
    )


@pytest.fixture
def failed_bronze_run(airflow: Any) -> str:
    """A run of data_ingestion_bronze that failed at ingest_orders (the source is still broken)."""
    airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "false")
    run_id = trigger(airflow, BRONZE)
    assert finished_run(airflow, BRONZE, run_id) == "failed"
    return run_id


@pytest.fixture
def airflow_catalog(db: Any, airflow: Any) -> dict[str, Any]:
    """A dev Airflow connection (password by reference) and one DAG target per sandbox DAG."""
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        env = cs.environment_create(name="dev", protected=False)
        conn = cs.connection_create(
            name="airflow-dev",
            kind="airflow",
            environment=env,
            config={
                "base_url": airflow.url,
                "username": airflow.username,
                "poll_interval_s": 0.2,
                "wait_timeout_s": 120,
            },
            secret_refs={"password": f"env:{AIRFLOW_SECRET_ENV}"},
        )
        targets = {
            dag: cs.target_create(key=f"dev.airflow.{dag}", kind="dag", connection=conn, locator={"dag_id": dag})
            for dag in (BRONZE, RETAIL, PAUSED)
        }
    return {"env": env, "conn": conn, **targets}


def request(actor: Any, verb: str, dag: str, params: dict[str, Any]) -> ActionRun:
    with change_context(channel=Channel.API, user=actor):
        return services.action_request(
            actor=actor, verb=verb, target_key=f"dev.airflow.{dag}", params=params, reason="airflow test"
        ).action


def final(action: ActionRun, timeout: float = 120) -> ActionRun:
    def done() -> ActionRun | None:
        action.refresh_from_db()
        return action if action.state not in (ActionState.QUEUED, ActionState.RUNNING) else None

    return wait_for(done, timeout=timeout, interval=0.1, what=f"action {action.id}")


def connector_for(airflow: Any, **config: Any) -> AirflowConnector:
    cfg = AirflowConfig(base_url=config.pop("base_url", airflow.url), username=airflow.username, **config)
    return AirflowConnector(cfg, {"password": airflow.password})


# ----------------------------------------------------------------------------------------------- clear


def test_clear_preview_lists_the_failed_task_and_its_downstream(
    airflow: Any, airflow_catalog: Any, actors: Any, api_for: Any, failed_bronze_run: str
) -> None:
    body = {"verb": "clear", "target": f"dev.airflow.{BRONZE}", "params": {"dag_run_id": failed_bronze_run}}
    resp = api_for("responder").post("/api/v1/actions/preview", body)
    assert resp.status_code == 200, resp.content
    plan = resp.json()["plan"]
    cleared = {t["detail"]["task_id"]: t["detail"]["state"] for t in plan["touches"]}
    assert cleared == {"ingest_orders": "failed", "validate_ingestion": "upstream_failed"}
    assert plan["counts"] == {"task_instances": 2, "dag_runs": 1} and plan["settling"] is False
    assert run_state(airflow, BRONZE, failed_bronze_run) == "failed"  # the preview changed nothing


def test_a_clear_plan_of_a_run_still_going_says_it_is_settling_and_of_a_finished_run_not(airflow: Any) -> None:
    """A failure callback fires before the scheduler marks the downstream tasks: a plan made then may grow,
    and says so (a Slack button's count is planned again until it settles)."""
    from connectors.airflow.config import ClearParams

    clear = connector_for(airflow).verb("clear")
    stuck = TargetRef(key="stuck", kind="dag", locator={"dag_id": "stuck_report_pipeline"})
    run_id = trigger(airflow, "stuck_report_pipeline")
    params = ClearParams(
        dag_run_id=run_id, task_ids=["collect_delivery_metrics"], only_failed=False, include_downstream=False
    )

    def first_done_second_running() -> bool:
        tis = airflow.api("GET", f"/api/v2/dags/stuck_report_pipeline/dagRuns/{run_id}/taskInstances")
        states = {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}
        return states == {"collect_delivery_metrics": "success", "generate_report": "running"}

    try:
        # Until the hanging task runs, not just the first one's end: failing the run while the scheduler
        # schedules the next task can deadlock the two in Airflow's database (an HTTP 500, the run left going).
        wait_for(first_done_second_running, timeout=60, what="the first task done while the run goes on")
        plan = clear.plan(stuck, params)
        assert plan.settling and any("still going" in w for w in plan.warnings), plan
    finally:
        airflow.api("PATCH", f"/api/v2/dags/stuck_report_pipeline/dagRuns/{run_id}", {"state": "failed"})
    plan = clear.plan(stuck, params)
    assert not plan.settling and not any("still going" in w for w in plan.warnings), plan


@pytest.mark.worker
def test_clear_after_the_fix_makes_the_run_succeed_and_the_action_verified(
    airflow: Any, airflow_catalog: Any, actors: Any, worker_factory: Any, failed_bronze_run: str
) -> None:
    airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "true")  # fix the source where users would
    worker_factory()
    action = final(request(actors["responder"], "clear", BRONZE, {"dag_run_id": failed_bronze_run}))
    assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
    assert action.verification and "succeeded" in action.verification["summary"]
    assert run_state(airflow, BRONZE, failed_bronze_run) == "success"
    notes = {
        ti["task_id"]: ti["note"]
        for ti in airflow.api("GET", f"/api/v2/dags/{BRONZE}/dagRuns/{failed_bronze_run}/taskInstances")[
            "task_instances"
        ]
    }
    assert str(action.id) in (notes["ingest_orders"] or "")  # the clear is tagged with the action
    executed = list(AuditEvent.objects.filter(object_id=str(action.id), event="action.executed"))
    assert len(executed) == 1 and (executed[0].after or {})["summary"].startswith("cleared 2 task instances")
    run = airflow.api("GET", f"/api/v2/dags/{BRONZE}/dagRuns/{failed_bronze_run}")
    # Recorded once the clear was accepted, while Airflow ran the tasks: not after the wait for the run's end.
    assert executed[0].at < datetime.fromisoformat(run["end_date"])


def failed_bronze_run_at(airflow: Any, logical_date: datetime) -> str:
    run_id = f"test__{uuid.uuid4().hex[:10]}"
    body = {"dag_run_id": run_id, "logical_date": logical_date.isoformat()}
    airflow.api("POST", f"/api/v2/dags/{BRONZE}/dagRuns", body)
    assert finished_run(airflow, BRONZE, run_id) == "failed"
    return run_id


@pytest.mark.worker
def test_clear_clears_what_was_planned_and_leaves_later_failures_alone(
    airflow: Any, airflow_catalog: Any, actors: Any, worker_factory: Any
) -> None:
    airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "false")
    # A window of logical dates of this test's own (other tests' runs have no logical date in it).
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3, seconds=uuid.uuid4().int % 80_000)
    planned_run = failed_bronze_run_at(airflow, start + timedelta(minutes=1))
    window = {"start_date": start.isoformat(), "end_date": (start + timedelta(minutes=10)).isoformat()}
    # Requested with no worker running: it waits in the queue as an approved action would wait for one.
    action = request(actors["responder"], "clear", BRONZE, window)
    assert {t["detail"]["dag_run_id"] for t in action.plan["touches"]} == {planned_run}
    assert action.plan["counts"]["task_instances"] == 2

    later_run = failed_bronze_run_at(airflow, start + timedelta(minutes=2))  # the filter matches more now
    airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "true")
    worker_factory()
    action = final(action)

    assert action.state == ActionState.SUCCEEDED, action.error
    outcome: dict[str, Any] = action.outcome or {}
    cleared = {(ti["dag_run_id"], ti["task_id"]) for ti in outcome["details"]["cleared"]}
    assert cleared == {(planned_run, "ingest_orders"), (planned_run, "validate_ingestion")}
    left = {(ti["dag_run_id"], ti["task_id"]) for ti in outcome["details"]["left_alone"]}
    assert left == {(later_run, "ingest_orders"), (later_run, "validate_ingestion")}
    assert "2 task instances that came to match after the plan were left alone" in outcome["summary"]
    assert run_state(airflow, BRONZE, planned_run) == "success"
    assert run_state(airflow, BRONZE, later_run) == "failed"  # not approved, not touched


def test_rerun_with_a_conf_is_medium_risk_and_names_the_keys(airflow: Any, airflow_catalog: Any, api_for: Any) -> None:
    bot = api_for("responder", scopes=["actions:write"])
    body: dict[str, Any] = {"verb": "rerun", "target": f"dev.airflow.{BRONZE}", "params": {}}
    plain = bot.post("/api/v1/actions/preview", body).json()["plan"]
    assert plain["risk"] == "low"
    body["params"] = {"conf": {"source": "backup", "full_reload": True}}
    plan = bot.post("/api/v1/actions/preview", body).json()["plan"]
    assert plan["risk"] == "medium"
    assert any("check its keys: full_reload, source" in w for w in plan["warnings"])


# ----------------------------------------------------------------------------------------------- rerun


@pytest.mark.worker
def test_redelivered_rerun_starts_one_dag_run_not_two(
    airflow: Any, airflow_catalog: Any, actors: Any, worker_factory: Any
) -> None:
    action = request(actors["responder"], "rerun", RETAIL, {"conf": {"reason": "test"}})
    execute_action.apply_async(args=(str(action.id),))  # the same message delivered twice
    worker_factory()
    action = final(action)
    assert action.state == ActionState.SUCCEEDED, action.error
    # and a crashed attempt re-executing the verb finds its own run instead of triggering another
    connector = connector_for(airflow)
    ctx = ExecutionContext(action_id=str(action.id))
    target = TargetRef(key=f"dev.airflow.{RETAIL}", kind="dag", locator={"dag_id": RETAIL})
    again = connector.verb("rerun").execute(target, connector.verb("rerun").params_model(), ctx)
    assert again.already_done is True
    runs = airflow.api("GET", f"/api/v2/dags/{RETAIL}/dagRuns", params={"run_id_pattern": str(action.id)})
    assert [r["dag_run_id"] for r in runs["dag_runs"]] == [f"controlplane__{action.id}"]


# -------------------------------------------------------------------------------------------- backfill


def _days_ago(n: int) -> str:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=n)
    return day.isoformat()


@pytest.mark.worker
def test_three_day_backfill_creates_and_completes_three_runs_and_a_second_is_409(
    airflow: Any, airflow_catalog: Any, actors: Any, api_for: Any, worker_factory: Any
) -> None:
    params = {
        "from_date": _days_ago(30),
        "to_date": _days_ago(28),
        "reprocess_behavior": "completed",
        "max_active_runs": 3,
    }
    preview = api_for("responder").post(
        "/api/v1/actions/preview", {"verb": "backfill", "target": f"dev.airflow.{RETAIL}", "params": params}
    )
    assert preview.status_code == 200, preview.content
    assert preview.json()["plan"]["counts"] == {"dag_runs": 3}
    action = request(actors["responder"], "backfill", RETAIL, params)
    second = api_for("responder2").post(
        "/api/v1/actions",
        {"verb": "backfill", "target": f"dev.airflow.{RETAIL}", "params": params, "reason": "me too"},
    )
    assert second.status_code == 409 and str(action.id) in second.json()["error"]["message"]
    worker_factory()
    action = final(action, timeout=180)
    assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
    assert (action.progress_done, action.progress_total) == (3, 3)
    assert action.verification and action.verification["summary"].startswith("all 3 runs")


# ---------------------------------------------------------------------------------------- pause/resume


@pytest.mark.worker
def test_resume_and_pause_are_verified_by_reading_the_state_back(
    airflow: Any, airflow_catalog: Any, actors: Any, worker_factory: Any
) -> None:
    worker_factory()
    resumed = final(request(actors["responder"], "resume-task", PAUSED, {}))
    assert resumed.state == ActionState.SUCCEEDED, resumed.error
    assert airflow.api("GET", f"/api/v2/dags/{PAUSED}")["is_paused"] is False
    paused = final(request(actors["responder"], "pause", PAUSED, {}))
    assert paused.state == ActionState.SUCCEEDED, paused.error
    assert paused.verification and paused.verification["summary"].endswith("paused")
    assert airflow.api("GET", f"/api/v2/dags/{PAUSED}")["is_paused"] is True


# ------------------------------------------------------------------------------------ errors and tokens


def test_expired_token_is_renewed(airflow: Any) -> None:
    from connectors.airflow import client as airflow_client

    connector = connector_for(airflow)
    connector.dag(BRONZE)
    first = airflow_client._tokens[(airflow.url, airflow.username)]
    import time

    time.sleep(AIRFLOW_JWT_LIFETIME_S + 1)
    assert connector.dag(BRONZE).dag_id == BRONZE  # answered 401 once, then renewed
    assert airflow_client._tokens[(airflow.url, airflow.username)] != first


def test_airflow_4xx_is_permanent_with_airflows_message(airflow: Any) -> None:
    connector = connector_for(airflow)
    with pytest.raises(ConnectorError) as err:
        connector.dag("no_such_dag")
    assert not err.value.transient
    assert "404" in err.value.message and "no_such_dag" in err.value.message


def test_unreachable_airflow_is_transient_and_quick(airflow: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    connector = connector_for(airflow, base_url=f"http://127.0.0.1:{port}", connect_timeout_s=1, timeout_s=2)
    with pytest.raises(ConnectorError) as err:
        connector.dag(BRONZE)
    assert err.value.transient
    assert airflow.password not in err.value.message


class _Proxy:
    """A TCP forwarder to Airflow that the test can cut, as if Airflow went down mid-action."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open = True
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        self.server.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # the peers see the connection end, as when a server dies
            with contextlib.suppress(OSError):
                conn.close()
        self.conns = []

    def restore(self) -> None:
        """Airflow is reachable again, on the same address."""
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()


@pytest.mark.worker
def test_airflow_going_away_mid_action_leaves_the_triggered_run_owned_with_a_clear_message(
    airflow: Any, airflow_catalog: Any, actors: Any, worker_factory: Any
) -> None:
    from urllib.parse import urlsplit

    proxy = _Proxy(urlsplit(airflow.url).port or 80)
    _proxied_target(airflow, airflow_catalog, proxy, "dev.airflow.stuck", dag_id="stuck_report_pipeline")
    with change_context(channel=Channel.API, user=actors["responder"]):
        action = services.action_request(
            actor=actors["responder"], verb="rerun", target_key="dev.airflow.stuck", params={}, reason="hangs"
        ).action
    worker_factory()
    wait_for(
        lambda: ActionRun.objects.filter(id=action.id, progress_total=1).exists(),
        timeout=60,
        what="the rerun to be waiting for its run",
    )
    proxy.cut()
    action = final(action, timeout=60)
    # The run was triggered before Airflow went away: it exists, so the action holds the target for a person.
    assert action.state == ActionState.NEEDS_ATTENTION
    assert f"triggered run controlplane__{action.id}" in action.error
    assert f"127.0.0.1:{proxy.port}" in action.error
    assert any(
        word in action.error
        for word in ("Connection refused", "ConnectionRefused", "MaxRetryError", "NewConnectionError")
    )
    assert action.attempts == action.max_attempts  # transient: retried, then given up, within a bound
    # leave Airflow clean: the stuck run is ended
    for run in airflow.api("GET", "/api/v2/dags/stuck_report_pipeline/dagRuns")["dag_runs"]:
        if run["state"] in ("running", "queued"):
            airflow.api("PATCH", f"/api/v2/dags/stuck_report_pipeline/dagRuns/{run['dag_run_id']}", {"state": "failed"})


# ------------------------------------------------------------------------------------------- alerting


@pytest.mark.django_db(transaction=True)
@contextlib.contextmanager
def bronze_failure_alerted(airflow: Any, live_server: Any, api_for: Any) -> Iterator[tuple[str, Incident]]:
    """Airflow's failure callbacks post to the live server (a responder bot's alerts:write token); a run of
    the bronze DAG fails at ingest_orders; yields its run id and the incident the callback opened. The
    callbacks are pointed away again at the end."""
    bot = api_for("responder", scopes=["alerts:write"])
    airflow_set_variable(airflow, "controlplane_alert_url", f"{live_server.url}/api/v1/alerts/airflow")
    airflow_set_variable(airflow, "controlplane_alert_token", bot.token or "")
    airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "false")
    try:
        run_id = trigger(airflow, BRONZE)
        assert finished_run(airflow, BRONZE, run_id) == "failed"
        incident = wait_for(
            lambda: Incident.objects.filter(details__run_id=run_id, details__task_id="ingest_orders").first(),
            timeout=30,
            what="the incident the failure callback opens",
        )
        yield run_id, incident
    finally:
        airflow_set_variable(airflow, "controlplane_alert_url", "")
        _alerts_settled(run_id)


def _alerts_settled(run_id: str, quiet: float = 3.0, timeout: float = 30.0) -> None:
    """Wait until no alert of the run has arrived for ``quiet`` seconds: the DAG-level failure callback runs in
    Airflow's dag-processor seconds after the run failed, and one that read the URL before it was pointed away
    would otherwise write an incident while the next test's database flush runs (a deadlock, seen in CI)."""
    from django.db.models import Count, Sum

    def seen() -> tuple[Any, ...]:
        found = Incident.objects.filter(details__run_id=run_id).aggregate(n=Count("id"), alerts=Sum("alert_count"))
        return (found["n"], found["alerts"])

    last, since, deadline = seen(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.2)
        now = seen()
        if now != last:
            last, since = now, time.monotonic()


def test_failure_callback_opens_one_incident_and_a_repeat_does_not_open_a_second(
    airflow: Any, airflow_catalog: Any, actors: Any, api_for: Any, live_server: Any
) -> None:
    with bronze_failure_alerted(airflow, live_server, api_for) as (run_id, incident):
        assert incident.severity == "high" and incident.targets.get().key == f"dev.airflow.{BRONZE}"
        assert "503" in incident.summary
        # what a worker does once the alert is in: the end of the failed try's log joins the timeline
        from controlplane.incidents.services import incident_attach_log

        event = incident_attach_log(incident_id=incident.pk, alert=incident.details)
        assert event is not None and "503" in event.data["log"]
        detail = api_for("viewer", scopes=["incidents:read"]).get(f"/api/v1/incidents/{incident.pk}").json()
        assert "503" in detail["log_excerpt"]
        assert detail["log_url"].startswith(f"{airflow.url}/dags/{BRONZE}/runs/")  # the catalog's own Airflow
        assert {a["verb"] for a in detail["suggested_actions"]} >= {"clear", "rerun"}
        clear = next(a for a in detail["suggested_actions"] if a["verb"] == "clear")
        assert clear["params"] == {"dag_run_id": run_id, "task_ids": ["ingest_orders"]}
        # the same task fails again in the same run: the open incident takes the repeat
        airflow.api(
            "POST",
            f"/api/v2/dags/{BRONZE}/clearTaskInstances",
            {"dry_run": False, "dag_run_id": run_id, "task_ids": ["ingest_orders"], "only_failed": True},
        )
        assert finished_run(airflow, BRONZE, run_id) == "failed"
        wait_for(lambda: Incident.objects.get(pk=incident.pk).alert_count >= 2, timeout=30, what="the repeat alert")
        assert Incident.objects.filter(details__run_id=run_id, details__task_id="ingest_orders").count() == 1
        tries = IncidentEvent.objects.filter(incident=incident, kind="alert", data__has_key="alert")
        assert sorted(e.data["alert"]["try_number"] for e in tries) == [1, 2]  # a new try is listed, with its log


# ---------------------------------------------------------------------------------------------- checks


def test_checks_read_failures_logs_pause_state_and_import_errors(airflow: Any, failed_bronze_run: str) -> None:
    connector = connector_for(airflow)
    bronze = TargetRef(key="bronze", kind="dag", locator={"dag_id": BRONZE})
    failed = connector.check("failed_task_instances").run(
        bronze, connector.check("failed_task_instances").params_model(dag_run_id=failed_bronze_run)
    )
    assert not failed.passed
    assert [row[1] for row in failed.rows] == ["ingest_orders"]
    assert "503" in failed.rows[0][5]  # the end of the failed try's log says why
    state = connector.check("dag_run_state").run(
        bronze, connector.check("dag_run_state").params_model(dag_run_id=failed_bronze_run)
    )
    assert not state.passed and state.rows[0][1] == "failed"
    paused = connector.check("paused_state").run(
        TargetRef(key="p", kind="dag", locator={"dag_id": PAUSED}),
        connector.check("paused_state").params_model(expect_paused=True),
    )
    assert paused.passed
    errors = connector.check("import_errors").run(
        TargetRef(key="i", kind="instance", locator={}), connector.check("import_errors").params_model()
    )
    assert errors.passed and errors.rows == []
    assert {d["dag_id"] for d in connector.metadata("dags")} >= {BRONZE, RETAIL, PAUSED}
    assert {t["task_id"] for t in connector.metadata("tasks", dag_id=BRONZE)} == {
        "ingest_orders",
        "ingest_customers",
        "validate_ingestion",
    }
    assert failed_bronze_run in {r["dag_run_id"] for r in connector.metadata("failed_runs", dag_id=BRONZE)}


# --------------------------------------------------------------------------------------------- pickers


def test_forms_and_bots_pick_runs_and_tasks_from_airflow_instead_of_typing(
    airflow: Any, airflow_catalog: Any, actors: Any, api_for: Any, client: Any, failed_bronze_run: str
) -> None:
    bot = api_for("viewer", scopes=["catalog:read"])
    schema = next(v for v in bot.get(f"/api/v1/targets/dev.airflow.{BRONZE}").json()["verbs"] if v["name"] == "clear")
    assert schema["params_schema"]["properties"]["dag_run_id"]["x-choices"] == "failed_runs"
    runs = bot.get(f"/api/v1/targets/dev.airflow.{BRONZE}/choices/failed_runs").json()["choices"]
    assert failed_bronze_run in {r["value"] for r in runs}
    tasks = bot.get(f"/api/v1/targets/dev.airflow.{BRONZE}/choices/tasks").json()["choices"]
    assert {t["value"] for t in tasks} == {"ingest_orders", "ingest_customers", "validate_ingestion"}

    client.force_login(actors["responder"])
    page = client.get(f"/targets/dev.airflow.{BRONZE}/").content.decode()
    assert f'<option value="{failed_bronze_run}">' in page  # a datalist of failed runs for dag_run_id
    assert "<select multiple" in page and '<option value="ingest_orders"' in page  # tasks to tick
    preview = client.post(
        f"/targets/dev.airflow.{BRONZE}/verbs/clear/preview/",
        {
            "param-dag_run_id": failed_bronze_run,
            "param-task_ids": ["ingest_orders"],
            "param-include_downstream": "on",
            "param-only_failed": "on",
            "param-reset_dag_runs": "on",
            "param-wait_for_completion": "on",
        },
    )
    assert preview.status_code == 200, preview.content[:500]
    html = preview.content.decode()
    assert "ingest_orders" in html and "validate_ingestion" in html and "clear 2 task instances" in html


# ------------------------------------------------------------------------- dates, and what a backfill owns


def own_backfills(airflow: Any, dag_id: str, action_id: Any) -> list[dict[str, Any]]:
    listed = airflow.api("GET", "/api/v2/backfills", params={"dag_id": dag_id, "limit": 100})["backfills"]
    return [b for b in listed if (b.get("dag_run_conf") or {}).get("controlplane_action") == str(action_id)]


def cancel_open_backfills(airflow: Any, dag_id: str) -> None:
    """Leave the shared Airflow able to take the next backfill of the DAG (one open backfill per DAG)."""
    from sandbox.airflow import AirflowApiError

    for backfill in airflow.api("GET", "/api/v2/backfills", params={"dag_id": dag_id, "limit": 100})["backfills"]:
        if backfill["completed_at"] is None:
            with contextlib.suppress(AirflowApiError):  # 409: Airflow's own timer closed it meanwhile
                airflow.api("PUT", f"/api/v2/backfills/{backfill['id']}/cancel")


@pytest.mark.worker
def test_backfill_with_plain_dates_is_echoed_in_utc_and_completes(
    airflow: Any, airflow_catalog: Any, api_for: Any, worker_factory: Any
) -> None:
    cancel_open_backfills(airflow, RETAIL)
    body = {
        "verb": "backfill",
        "target": f"dev.airflow.{RETAIL}",
        "params": {"from_date": "2025-01-01", "to_date": "2025-01-03", "reprocess_behavior": "completed"},
    }
    preview = api_for("responder").post("/api/v1/actions/preview", body)
    assert preview.status_code == 200, preview.content
    assert preview.json()["params"]["from_date"] == "2025-01-01T00:00:00Z"
    assert preview.json()["params"]["to_date"] == "2025-01-03T00:00:00Z"
    assert preview.json()["plan"]["details"]["logical_dates"][0].startswith("2025-01-01T00:00:00")
    created = api_for("responder").post("/api/v1/actions", {**body, "reason": "reprocess the first days of 2025"})
    assert created.status_code == 202, created.content
    action = ActionRun.objects.get(id=created.json()["id"])
    assert action.params["from_date"] == "2025-01-01T00:00:00Z"  # stored as it will be used
    worker_factory()
    action = final(action, timeout=180)
    assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
    assert action.attempts == 1 and (action.progress_done, action.progress_total) == (3, 3)
    assert len(own_backfills(airflow, RETAIL, action.id)) == 1


def test_airflow_refusing_a_naive_date_is_permanent_and_a_proxy_5xx_is_transient(airflow: Any) -> None:
    import http.server

    connector = connector_for(airflow)
    client = connector.client
    with pytest.raises(ConnectorError) as refused:
        # Airflow 3.3.2 answers 500 "Database error" to a naive datetime in a query (its database refuses it).
        client.call("listing runs", client.runs.get_dag_runs, RETAIL, logical_date_gte=datetime(2025, 1, 1))
    assert "HTTP 500" in refused.value.message and "Database error" in refused.value.message
    assert not refused.value.transient

    class BadGateway(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # a proxy in front of Airflow whose upstream is gone
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>502 Bad Gateway</body></html>")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BadGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        behind = AirflowConnector(
            AirflowConfig(base_url=f"http://127.0.0.1:{server.server_port}", timeout_s=3), {"token": "t"}
        )
        with pytest.raises(ConnectorError) as gateway:
            behind.dag(RETAIL)
        assert "HTTP 502" in gateway.value.message and gateway.value.transient
    finally:
        server.shutdown()


def _proxied_target(airflow: Any, airflow_catalog: Any, proxy: _Proxy, key: str, *, dag_id: str = RETAIL) -> None:
    """A catalog target ``key`` on ``dag_id`` whose Airflow connection goes through ``proxy``."""
    with change_context(channel=Channel.SYSTEM):
        conn = cs.connection_create(
            name=f"airflow-via-proxy-{proxy.port}",
            kind="airflow",
            environment=airflow_catalog["env"],
            config={
                "base_url": f"http://127.0.0.1:{proxy.port}",
                "username": airflow.username,
                "poll_interval_s": 0.2,
                "connect_timeout_s": 1,
                "timeout_s": 3,
            },
            secret_refs={"password": f"env:{AIRFLOW_SECRET_ENV}"},
        )
        cs.target_create(key=key, kind="dag", connection=conn, locator={"dag_id": dag_id})


def executed_event(action: ActionRun) -> Any:
    return AuditEvent.objects.filter(object_id=str(action.id), event="action.executed").first()


@pytest.mark.worker
def test_backfill_whose_follow_up_fails_after_creation_needs_attention_and_keeps_the_target(
    airflow: Any, airflow_catalog: Any, actors: Any, api_for: Any, worker_factory: Any
) -> None:
    from urllib.parse import urlsplit

    cancel_open_backfills(airflow, RETAIL)
    proxy = _Proxy(urlsplit(airflow.url).port or 80)
    key = "dev.airflow.retail_via_proxy"
    _proxied_target(airflow, airflow_catalog, proxy, key)
    params = {"from_date": "2025-02-01", "to_date": "2025-02-06", "reprocess_behavior": "completed"}
    body = {"verb": "backfill", "target": key, "params": {**params, "max_active_runs": 1}}
    created = api_for("responder").post("/api/v1/actions", {**body, "reason": "reprocess February"})
    assert created.status_code == 202, created.content
    action = ActionRun.objects.get(id=created.json()["id"])
    try:
        worker_factory()
        wait_for(lambda: executed_event(action), timeout=60, what="the backfill to be created")
        proxy.cut()  # Airflow's API goes away after the create: the runs cannot be followed any more
        action = final(action, timeout=90)
        assert action.state == ActionState.NEEDS_ATTENTION, action.error
        [backfill] = own_backfills(airflow, RETAIL, action.id)
        assert action.outcome and action.outcome["details"]["backfill_id"] == backfill["id"]
        assert f"backfill {backfill['id']} of {RETAIL}" in action.error
        assert f"http://127.0.0.1:{proxy.port}/dags/{RETAIL}/backfills" in action.error

        proxy.restore()  # Airflow is back: the target is still held by the action that needs attention
        second = api_for("responder2").post("/api/v1/actions", {**body, "reason": "me too"})
        assert second.status_code == 409, second.content
        assert second.json()["error"]["details"]["active_action"] == str(action.id)
        resolved = api_for("responder").post(
            f"/api/v1/actions/{action.id}/resolve", {"note": f"backfill {backfill['id']} runs fine in Airflow"}
        )
        assert resolved.status_code == 200, resolved.content
        assert len(own_backfills(airflow, RETAIL, action.id)) == 1  # no retry made a second one
    finally:
        proxy.cut()
        cancel_open_backfills(airflow, RETAIL)


@pytest.mark.worker
def test_worker_killed_after_creating_a_backfill_leads_to_one_backfill_followed_to_the_end(
    airflow: Any, airflow_catalog: Any, actors: Any, worker_factory: Any
) -> None:
    cancel_open_backfills(airflow, RETAIL)
    params = {"from_date": "2025-03-01", "to_date": "2025-03-04", "reprocess_behavior": "completed"}
    action = request(actors["responder"], "backfill", RETAIL, {**params, "max_active_runs": 1})
    first = worker_factory()
    wait_for(lambda: executed_event(action), timeout=60, what="the backfill to be created")
    first.kill()  # the worker dies while it follows the backfill's runs
    worker_factory(beat=True)  # the reaper re-queues the lapsed lease; the next attempt adopts the backfill
    try:
        action = final(action, timeout=240)
        assert action.state == ActionState.SUCCEEDED, (action.error, action.verification)
        assert action.attempts == 2
        assert len(own_backfills(airflow, RETAIL, action.id)) == 1
        assert action.log_lines.filter(attempt=2, message__contains="already created by this action").exists()
        assert AuditEvent.objects.filter(object_id=str(action.id), event="action.reaped").count() == 1
    finally:
        cancel_open_backfills(airflow, RETAIL)
