"""``python -m sandbox.snowflake serve ...`` (the layer, foreground: what ``start_snowflake`` runs detached) and
``python -m sandbox.snowflake seed [--url URL]`` (the seed-001 objects; URL defaults to ``$SANDBOX_SNOWFLAKE_URL``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path


def serve(port: int, directory: Path, fakesnow_url: str) -> None:
    """Run the layer in the foreground until SIGTERM."""
    from sandbox.snowflake.layer import LayerServer

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    server = LayerServer(port, directory, fakesnow_url)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.emulator.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.snowflake", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the layer in the foreground")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--dir", type=Path, required=True)
    run.add_argument("--fakesnow-url", required=True)
    seed = sub.add_parser("seed", help="create the seed-001 objects (idempotent)")
    seed.add_argument("--url", default=os.environ.get("SANDBOX_SNOWFLAKE_URL"))
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.dir, args.fakesnow_url)
        return 0
    if not args.url:
        parser.error("--url or SANDBOX_SNOWFLAKE_URL is required")
    from sandbox.snowflake.seed import seed as run_seed

    print(run_seed(args.url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
