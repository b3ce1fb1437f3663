"""``python -m sandbox.bigquery start|stop|seed|venv|proxy``: see sandbox/bigquery/__init__.py."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.bigquery", description="the sandbox BigQuery")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start local-bigquery and its proxy (detached)")
    start.add_argument("--root", type=Path, required=True)
    start.add_argument("--port", type=int, default=None)
    sub.add_parser("stop", help="stop them (idempotent)").add_argument("--root", type=Path, required=True)
    seed = sub.add_parser("seed", help="create the seed-002 objects where missing")
    seed.add_argument("--url", default=os.environ.get("SANDBOX_BIGQUERY_URL"))
    seed.add_argument("--project", default=os.environ.get("SANDBOX_BIGQUERY_PROJECT", "sandbox"))
    seed.add_argument("--prefix", default="")
    sub.add_parser("venv", help="build the local-bigquery venv").add_argument("--force", action="store_true")
    proxy = sub.add_parser("proxy", help="run the byte-estimate proxy in the foreground")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--upstream", required=True)
    proxy.add_argument("--sizes-file", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "start":
        from sandbox.bigquery.server import start_bigquery
        from sandbox.services import free_port

        server = start_bigquery(args.root, args.port or free_port())
        print(f"SANDBOX_BIGQUERY_URL={server.url}\nSANDBOX_BIGQUERY_PROJECT={server.project}")
    elif args.command == "stop":
        from sandbox.bigquery.server import stop_bigquery

        print("stopped" if stop_bigquery(args.root) else "was not running")
    elif args.command == "seed":
        if not args.url:
            parser.error("--url or SANDBOX_BIGQUERY_URL is needed")
        from sandbox.bigquery.seed import seed as run_seed

        objects = run_seed(args.url, args.project, prefix=args.prefix)
        print(f"seeded {objects.raw} and {objects.marts} ({len(objects.days)} days, gap on {objects.missing_day})")
    elif args.command == "venv":
        from sandbox.bigquery.venv import ensure_bigquery_venv

        print(ensure_bigquery_venv(force=args.force))
    else:
        from sandbox.bigquery.proxy import serve

        serve(args.port, args.upstream, args.sizes_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
