"""The API fuzzed against its own OpenAPI schema with schemathesis: a short run in tests/test_api_fuzz.py, a long
one in bench/api_fuzz.py, both through ``fuzz_api``.

Every operation of ``/api/schema/`` gets ``examples`` generated requests (valid by the schema: types, ranges,
enums, required fields), sent with an admin's all-scopes token over HTTP to a running server. Each answer is
checked: no 5xx (``not_a_server_error``), a status the schema lists, the content type and the body the schema
gives for that status. Random ids rarely name a real object, so half the requests of an operation with path
parameters use ids that exist (``known``), and ``bodies`` mixes real request bodies in (actions on dev targets
only: the run touches nothing a person would mind).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class FuzzResult:
    cases: int = 0
    server_errors: int = 0
    violations: int = 0
    seconds: float = 0.0
    by_status: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # the first few, with the request that caused each

    def line(self) -> str:
        statuses = " ".join(f"{code}:{n}" for code, n in sorted(self.by_status.items()))
        return (
            f"cases={self.cases} server_errors={self.server_errors} schema_violations={self.violations} "
            f"seconds={self.seconds:.1f} statuses[{statuses}]"
        )


def _strategy(
    operation: Any,
    known: Mapping[str, Sequence[Any]],
    bodies: Mapping[str, Sequence[Any]],
    known_query: Mapping[str, dict[str, Any]],
) -> Any:
    generated = operation.as_strategy()
    options = [generated]
    names = [p.name for p in operation.path_parameters]
    if names and all(known.get(name) for name in names):
        real_ids = st.fixed_dictionaries({name: st.sampled_from(list(known[name])) for name in names})
        query = known_query.get(operation.label)
        options.append(real_ids.flatmap(lambda ids: operation.as_strategy(path_parameters=ids, query=query)))
    if bodies.get(operation.label):
        real_body = st.sampled_from(list(bodies[operation.label]))
        options.append(real_body.flatmap(lambda body: operation.as_strategy(body=body)))
    return st.one_of(*options)


def fuzz_api(
    schema_url: str,
    *,
    token: str,
    examples: int,
    seed: int = 12,
    known: Mapping[str, Sequence[Any]] | None = None,
    bodies: Mapping[str, Sequence[Any]] | None = None,
    known_query: Mapping[str, dict[str, Any]] | None = None,
    keep_failures: int = 20,
) -> FuzzResult:
    """Run ``examples`` cases per operation against the server whose schema is at ``schema_url``.
    ``known_query`` fixes the query of the requests that name real objects (``?wait=0``: an action that
    waits for approval would hold each such read for the whole ``wait``)."""
    schema = schemathesis.openapi.from_url(schema_url)
    headers = {"Authorization": f"Bearer {token}"}
    result = FuzzResult()
    started = time.monotonic()

    for loaded in schema.get_all_operations():
        if isinstance(loaded, Err):  # the schema itself is broken: nothing to fuzz against
            raise loaded.err()
        operation = loaded.ok()

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=False,
            phases=[hypothesis.Phase.generate],  # count every failure; no shrinking towards one of them
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.seed(seed)
        @hypothesis.given(case=_strategy(operation, known or {}, bodies or {}, known_query or {}))
        def run(case: Any) -> None:
            response = case.call(headers=headers, timeout=60)
            result.cases += 1
            result.by_status[response.status_code] += 1
            if response.status_code >= 500:
                result.server_errors += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except FailureGroup as exc:  # the checks that failed for this answer
                if response.status_code < 500:
                    result.violations += 1
                if len(result.failures) < keep_failures:
                    request = f"{case.method} {case.formatted_path} query={case.query} body={case.body!r}"[:500]
                    result.failures.append(f"{request}\n  -> {response.status_code}: {str(exc)[:1500]}")

        run()
    result.seconds = time.monotonic() - started
    return result


def fuzz_world(
    *, admin: Any, responder: Any, action_target: str, run_mart: str, keys: Sequence[str], launch_targets: Sequence[str]
) -> dict[str, Any]:
    """What ``fuzz_api`` needs beside the schema: an admin's all-scopes token, one real object of each kind
    whose ids are mixed into paths (an incident, an action ``responder`` requested on ``action_target``, a run
    of 004-rehydrate-mart on ``run_mart``) and real launch and preview bodies on ``launch_targets`` (dev
    targets only). Runs in a configured Django process."""
    from controlplane.actions import services as action_services
    from controlplane.api.models import SCOPES
    from controlplane.api.services import api_token_create
    from controlplane.audit.context import Channel, change_context
    from controlplane.incidents.services import alert_ingest_airflow
    from runbooks import services as runbook_services
    from runbooks.loader import LIBRARY, parse_file

    with change_context(channel=Channel.SYSTEM, actor_name="fuzz-setup"):
        runbook_services.runbooks_load(parsed=[parse_file(LIBRARY / "004-rehydrate-mart.yaml")])
        incident = alert_ingest_airflow(
            payload={
                "source": "airflow",
                "dag_id": "data_ingestion_bronze",
                "task_id": "ingest_orders",
                "run_id": "scheduled__2026-11-20T00:00:00+00:00",
                "try_number": 1,
                "state": "failed",
                "exception": "orders API answered HTTP 503",
            }
        ).incident
    action = action_services.action_request(
        actor=responder, verb="refresh-mart", target_key=action_target, params={}, reason="fuzz", idempotency_key=None
    ).action
    run = runbook_services.run_start(actor=responder, runbook="004-rehydrate-mart", params={"mart": run_mart})
    _, token = api_token_create(user=admin, name="fuzz", scopes=sorted(SCOPES))
    return {
        "token": token,
        "known": {
            "incident_id": [incident.pk],
            "move": ["acknowledge", "mitigate", "resolve"],
            "action_id": [str(action.id)],
            "key": list(keys),
            "what": ["tasks", "failed_runs"],
            "slug": ["004-rehydrate-mart"],
            "run_id": [run.pk],
            "step_id": [s.step_id for s in run.steps.all()],
            "command": ["complete", "approve", "act", "skip", "retry"],
        },
        "bodies": {
            "POST /api/v1/actions": [
                {"verb": "refresh-mart", "target": key, "params": {}, "reason": "fuzz"} for key in launch_targets
            ],
            "POST /api/v1/actions/preview": [{"verb": "refresh-mart", "target": launch_targets[0], "params": {}}],
            "POST /api/v1/alerts": [
                {"source": "fuzz", "target": key, "severity": "low", "summary": "fuzz"} for key in launch_targets
            ],
        },
        # A wait holds the request up to 30 s while the action runs or the run is busy: not what fuzzing is for.
        "known_query": {
            "GET /api/v1/actions/{action_id}": {"wait": 0},
            "GET /api/v1/runbook-runs/{run_id}": {"wait": 0},
        },
    }
