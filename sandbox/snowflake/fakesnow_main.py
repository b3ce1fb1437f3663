"""Run fakesnow's HTTP server on loopback with its databases in files (``-d``), in the fakesnow venv.

    <fakesnow venv>/bin/python fakesnow_main.py --port P --db-path DIR

``fakesnow -s`` ignores ``-d`` (its server keeps every session in one in-memory instance, ``shared_fs``), so this
launcher gives the server a file-backed instance instead: every session shares it and the databases survive a
restart (a ``CREATE DATABASE IF NOT EXISTS`` re-attaches a database's file). It imports fakesnow only: it runs
in fakesnow's venv, not the project's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fakesnow.server  # type: ignore[import-not-found]
import uvicorn  # type: ignore[import-not-found]
from fakesnow.instance import FakeSnow  # type: ignore[import-not-found]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db-path", type=Path, required=True)
    args = parser.parse_args()
    args.db_path.mkdir(parents=True, exist_ok=True)
    fakesnow.server.shared_fs = FakeSnow(db_path=args.db_path)
    uvicorn.run(fakesnow.server.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
