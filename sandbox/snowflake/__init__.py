"""The Snowflake test system: fakesnow (in its own venv) behind a stateful layer of the project's own code.

The real ``snowflake-connector-python`` connects to the layer (``host``/``port``/``protocol="http"``); the layer
answers what fakesnow cannot (tasks, pipes, stages and COPY INTO, streams, procedures, warehouses, query tags and
history, clone with data) and forwards the rest. See docs/snowflake-emulator.md.

    start_snowflake(root, port) / stop_snowflake(root) / snowflake_running(root)   (sandbox.services calls them)
    python -m sandbox.snowflake seed [--url URL]                                   the seed-001 objects
"""

from __future__ import annotations

from sandbox.snowflake.server import snowflake_running, start_snowflake, stop_snowflake

__all__ = ["snowflake_running", "start_snowflake", "stop_snowflake"]
