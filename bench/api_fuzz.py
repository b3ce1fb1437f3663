"""The REST API fuzzed against its own OpenAPI schema with schemathesis, 5,000+ cases (a figure, not a test;
tests/test_api_fuzz.py runs ~500 of the same cases in the suite).

    uv run python bench/api_fuzz.py                    # 250 cases per operation (about 5,250), a few minutes
    uv run python bench/api_fuzz.py --examples 20      # a smoke run

It starts, in a fresh temp dir, everything it uses and stops all of it at the end: sandbox Postgres and Redis,
a migrated control-plane database with a dev-only catalog (bench/launch_dispatch.py ``bring_up``), the weather
warehouse, and gunicorn with the repo's gunicorn.conf.py. It adds an admin with an all-scopes token, an
incident, a queued action and a runbook run, whose ids the fuzzer mixes into its requests. No Celery worker
runs, so the actions the run requests (dev targets only) stay queued: the run changes nothing outside its
temp dir. It prints one line: cases, server errors (5xx), answers that break the schema, seconds, and the
answers by status; then the first failures, if any.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.launch_dispatch import (  # noqa: E402 (needs the repo root on sys.path when run as a file)
    World,
    _raise_interrupt,
    bring_up,
    flush_redis,
    free_port,
    step,
    wait_http_ok,
)
from tests.fuzzing import fuzz_api, fuzz_world  # noqa: E402

N_TARGETS = 20


def seed_objects(targets: list[str]) -> dict[str, Any]:
    """An admin's all-scopes token and one real object of each kind (dev targets only)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    users = get_user_model().objects
    admin = users.create_user(username="fuzz-admin", password=None)
    admin.groups.add(Group.objects.get_or_create(name="admin")[0])
    responder = users.create_user(username="fuzz-responder", password=None)
    responder.groups.add(Group.objects.get_or_create(name="responder")[0])
    return fuzz_world(
        admin=admin,
        responder=responder,
        action_target=targets[0],
        run_mart=targets[1],
        keys=targets[:3],
        launch_targets=targets[2:],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=250, help="cases per operation (250)")
    parser.add_argument("--seed", type=int, default=12, help="hypothesis seed (12)")
    opts = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="cp-fuzz-"))
    tmp.chmod(0o755)  # the postgres user runs the cluster below it when we are root
    world = World(tmp=tmp, keep=False, sandbox_root=tmp / "sandbox")
    try:
        info = bring_up(world, N_TARGETS)
        seeded = seed_objects(list(info["targets"]))
        from django.db import connections

        connections.close_all()
        flush_redis(world.redis_url)
        port = free_port()
        step(f"gunicorn --workers 1 --threads 2 on :{port}")
        server = world.start(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "controlplane.wsgi",
                "--config",
                str(ROOT / "gunicorn.conf.py"),
                "-b",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "2",
                "--log-level",
                "warning",
            ],
            world.env,
        )
        wait_http_ok(server, port, "/healthz")
        step(f"fuzzing: {opts.examples} cases per operation, seed {opts.seed}")
        result = fuzz_api(
            f"http://127.0.0.1:{port}/api/schema/",
            token=seeded["token"],
            examples=opts.examples,
            seed=opts.seed,
            known=seeded["known"],
            bodies=seeded["bodies"],
            known_query=seeded["known_query"],
        )
        print(f"api_fuzz: {result.line()}")
        for failure in result.failures:
            print(f"\n{failure}")
        if server.alive() and (result.server_errors or result.violations):
            print(f"\nserver log (tail):\n{server.tail()}")
        return 1 if result.server_errors or result.violations else 0
    finally:
        world.close()


if __name__ == "__main__":
    sys.exit(main())
