"""The sandbox BigQuery: local-bigquery (BigQuery's REST API on DuckDB, in its own Python 3.13 venv) behind a
small proxy of ours that gives dry runs byte estimates and enforces ``maximumBytesBilled`` (the byte-estimate
hook), with the seed-002 logistics objects. docs/bigquery.md says what it emulates and what it does not.

    python -m sandbox.bigquery start --root ROOT [--port P]   (sandbox.services starts it with the others)
    python -m sandbox.bigquery seed [--url URL] [--project P] [--prefix X]
    python -m sandbox.bigquery venv [--force]
"""

from __future__ import annotations

from sandbox.bigquery.server import PROJECT, BigQueryServer, bigquery_running, start_bigquery, stop_bigquery

__all__ = ["PROJECT", "BigQueryServer", "bigquery_running", "start_bigquery", "stop_bigquery"]
