"""Slack end to end, against the real Airflow: a task fails, its failure callback opens an incident, Slack gets
the message with a Clear button whose confirm shows the plan; a linked on-call engineer presses it (the
stand-in sends the press signed and shaped as Slack does, to the live server's /slack/interactions); the clear
runs, is verified, the thread tells each step and the parent message shows the verified state; the audit
trail says the request came through Slack from that person."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.actions.models import ActionRun, ActionState
from controlplane.audit.context import Channel, change_context
from controlplane.audit.models import AuditEvent
from controlplane.slack.identity import slack_link_set
from controlplane.slack.models import SlackUserLink
from runbooks import services as runbook_services
from runbooks.loader import LIBRARY, parse_file
from tests.conftest import airflow_set_variable, wait_for
from tests.test_airflow import BRONZE, airflow_catalog, bronze_failure_alerted, finished_run  # noqa: F401 (a fixture)
from tests.test_slack_outbound import (
    all_text,
    buttons,
    final,
    outbox_settled,
    replies,
    slack,  # noqa: F401 (a fixture)
    slack_env,
    top_level,
)

SECRET_ENV = "CP_TEST_SLACK_E2E_SECRET"
SECRET = "e2e-signing-secret"
RITA = "U0RITA"


@pytest.mark.worker
def test_a_failed_task_is_cleared_from_slack_and_followed_to_verified(
    slack: Any,  # noqa: F811 (the fixture imported above)
    airflow: Any,
    airflow_catalog: Any,  # noqa: F811
    actors: Any,
    api_for: Any,
    live_server: Any,
    worker_factory: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings.SLACK = {**settings.SLACK, "SIGNING_SECRET_REF": f"env:{SECRET_ENV}"}
    slack.state.signing_secret = SECRET
    slack.state.interactions_url = f"{live_server.url}/slack/interactions"
    slack.state.users[RITA] = {"id": RITA, "name": "rita", "email": ""}
    with change_context(channel=Channel.SYSTEM, actor_name="test-setup"):
        runbook_services.runbooks_load(parsed=[parse_file(LIBRARY / "000-ingestion-dag-failure.yaml")])
        slack_link_set(user=actors["responder"], slack_user_id=RITA, via=SlackUserLink.Via.ADMIN)
    worker_factory(**slack_env(slack, SLACK_SIGNING_SECRET_REF=f"env:{SECRET_ENV}", **{SECRET_ENV: SECRET}))

    # The task fails; Airflow's failure callback posts the alert to the live server.
    with bronze_failure_alerted(airflow, live_server, api_for) as (run_id, incident):

        def message() -> dict[str, Any]:
            """This incident's message (a scheduled run of the DAG may have failed and been posted too)."""
            ours = [
                m
                for m in top_level(slack, "#data-incidents")
                if json.loads(
                    buttons(m).get("incident.ack", buttons(m).get("action.launch", {"value": "{}"}))["value"]
                ).get("incident")
                == incident.pk
            ]
            return ours[0] if ours else {}

        def offered() -> dict[str, Any] | None:
            launch = buttons(message()).get("action.launch") if message() else None
            return launch if launch and "(" in launch["text"]["text"] and "```" in all_text(message()) else None

        # the callback fires before the scheduler marks the downstream task: the count settles a moment later
        launch = wait_for(
            lambda: (o := offered()) and o["text"]["text"] == "Clear failed tasks (2)" and o,
            timeout=60,
            what="the message with the settled plan and the log",
        )
        assert launch["text"]["text"] == "Clear failed tasks (2)" and launch["style"] == "danger"
        assert launch["confirm"]["text"]["text"].startswith(
            f"clear 2 task instances in 1 run(s) of {BRONZE} (1 failed, 1 upstream_failed)"
        )
        assert json.loads(launch["value"])["params"] == {"dag_run_id": run_id, "task_ids": ["ingest_orders"]}
        assert "503" in all_text(message()).split("```")[1]  # the log's last lines

        # The engineer fixes the source, then presses Clear (the confirm dialog is Slack's, before the press).
        airflow_set_variable(airflow, "data_ingestion_bronze_fixed", "true")
        parent = message()
        from sandbox import slack as standin

        press = standin.press(
            slack.state,
            base_url=slack.base_url,
            user_id=RITA,
            channel="#data-incidents",
            ts=parent["ts"],
            action_id="action.launch",
        )
        assert press["status"] == 200, press
        action = wait_for(lambda: ActionRun.objects.filter(incident=incident).first(), what="the action")
        assert final(action, timeout=120).state == ActionState.SUCCEEDED, action.error
        assert (action.verb, action.channel, action.requested_by_id) == ("clear", "slack", actors["responder"].pk)

        wait_for(lambda: "verified" in all_text(message()) and outbox_settled(), what="the parent updated")
        lines = replies(slack, message())
        assert "requested" in lines[0] and any("is running" in line for line in lines) and "verified" in lines[-1]
        answers = [m for m in slack.state.messages if m["type"] != "message" and m.get("to_user", RITA) == RITA]
        assert any("Requested" in m["text"] for m in answers), answers  # the presser's own answer

        requested = AuditEvent.objects.get(event="action.requested", object_id=str(action.id))
        assert (requested.channel, requested.actor_name) == ("slack", actors["responder"].get_username())
        assert finished_run(airflow, BRONZE, run_id) == "success"
