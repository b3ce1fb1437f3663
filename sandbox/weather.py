"""Load the seed-004 weather warehouse (schemas raw, core, mart) into a Postgres database.

    python -m sandbox.weather postgresql://postgres@127.0.0.1:55432/dw [--days 14]

The SQL lives in ``weather.sql`` beside this file (runnable with ``psql -f`` too); this module runs it in
one transaction with the number of days set, and reports what it loaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

SQL_FILE = Path(__file__).with_name("weather.sql")
MAX_DAYS = 400

# What the loader reports, table by table (fixed names: nothing here comes from input).
_COUNTS = {
    "core.location": "select count(*) from core.location",
    "core.weather": "select count(*) from core.weather",
    "raw.weather_observations": "select count(*) from raw.weather_observations",
    "core.wikipedia_revision": "select count(*) from core.wikipedia_revision",
    "mart.daily_weather_aggregates": "select count(*) from mart.daily_weather_aggregates",
    "mart.daily_wikipedia_page_stats": "select count(*) from mart.daily_wikipedia_page_stats",
}


def load_weather(url: str, days: int = 14) -> dict[str, int]:
    """Create the warehouse in the database at ``url`` and fill ``days`` days of hourly data ending at
    the current hour, for Berlin, London, New York, Tokyo and Sydney; marts are created populated.

    Safe to re-run on the same database: it creates what is missing and skips existing rows (it does not
    refresh the marts: that is the refresh-mart verb's job). Returns each table's and mart's row count.
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    script = SQL_FILE.read_text()
    with psycopg.connect(url, connect_timeout=5, options="-c statement_timeout=300000") as conn:
        # A custom setting carries the parameter into the plain SQL script (psql users get the default).
        conn.execute("select set_config('sandbox.days', %s, true)", (str(days),))
        # No parameters: psycopg sends the multi-statement script as one simple query.
        conn.execute(script)
        counts = {table: _count(conn, query) for table, query in _COUNTS.items()}
        conn.commit()
    return counts


def _count(conn: psycopg.Connection[TupleRow], query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: load the warehouse into the database at URL and print the row counts."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.weather", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="postgresql:// URL of the (existing) database to load")
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args(argv)
    for table, count in load_weather(args.url, args.days).items():
        print(f"{table}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
