"""The seed-001 retail warehouse on the Snowflake emulator (idempotent: every statement replaces or skips).

``seed(url)`` runs through the real connector, like any client: databases DEV_RAW / DEV_STAGING / DEV_DW and their
schemas, the warehouse WH_TRANS (MEDIUM).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import snowflake.connector

DATABASES = {
    "DEV_RAW": ("BRONZE",),
    "DEV_STAGING": ("TASKS", "STREAMS", "SILVER"),
    "DEV_DW": ("DIMENSIONS", "FACTS"),
}


def seed(url: str) -> str:
    """Create the seed's objects on the emulator at ``url``; a one-line summary."""
    parts = urlsplit(url)
    conn = snowflake.connector.connect(
        host=parts.hostname,
        port=parts.port,
        protocol="http",
        account="sandbox",
        user="seed",
        password="seed",
        login_timeout=10,
        network_timeout=60,
        session_parameters={"QUERY_TAG": "seed-001"},
    )
    try:
        cur = conn.cursor()
        cur.execute("CREATE WAREHOUSE IF NOT EXISTS WH_TRANS WITH WAREHOUSE_SIZE = 'MEDIUM'")
        for database, schemas in DATABASES.items():
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
            for schema in schemas:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {database}.{schema}")
    finally:
        conn.close()
    return f"seeded {', '.join(DATABASES)} and WH_TRANS on {url}"
