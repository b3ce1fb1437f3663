"""The stateful part of the Snowflake emulator: what fakesnow cannot do, done in front of it.

:class:`Emulator` receives every statement a client sends (``execute``), answers the statements of
:data:`Emulator.HANDLERS` itself and forwards everything else to fakesnow in the client's own fakesnow session (so
transactions span both). It is the core (``core.py``: state, sessions, dispatch, histories, the rewrite of table and
``SYSTEM$`` functions) with one mixin per family of objects: ``warehouses.py``, ``tasks.py``, ``loading.py``
(stages, file formats, COPY INTO, pipes), ``streams.py``, ``clone.py``, ``procedures.py``.
"""

from __future__ import annotations

from sandbox.snowflake.clone import Clone
from sandbox.snowflake.core import Session
from sandbox.snowflake.loading import COPY_INTO, Loading
from sandbox.snowflake.procedures import Procedures
from sandbox.snowflake.sqltext import NAME, STRING
from sandbox.snowflake.tasks import Tasks
from sandbox.snowflake.warehouses import Warehouses

__all__ = ["Emulator", "Session"]


class Emulator(Warehouses, Tasks, Loading, Clone, Procedures):
    """The layer: every family of statements on the core (thread-safe: one lock around state changes)."""


Emulator.HANDLERS = [
    (
        rf"CREATE\s+(OR\s+REPLACE\s+)?DATABASE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})\s+CLONE\s+({NAME})",
        Emulator.create_database_clone,
    ),
    (r"(BEGIN(?:\s+(?:TRANSACTION|WORK))?|START\s+TRANSACTION)", Emulator.begin),
    (r"COMMIT(?:\s+WORK)?", Emulator.commit),
    (r"ROLLBACK(?:\s+WORK)?", Emulator.rollback),
    (rf"ALTER\s+SESSION\s+SET\s+QUERY_TAG\s*=\s*({STRING})", Emulator.set_query_tag),
    (r"ALTER\s+SESSION\s+UNSET\s+QUERY_TAG", Emulator.unset_query_tag),
    (rf"USE\s+WAREHOUSE\s+({NAME})", Emulator.use_warehouse),
    (
        rf"CREATE\s+(OR\s+REPLACE\s+)?WAREHOUSE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})(?:\s+WITH)?(.*)",
        Emulator.create_warehouse,
    ),
    (
        rf"ALTER\s+WAREHOUSE\s+(IF\s+EXISTS\s+)?({NAME})\s+(SUSPEND|RESUME(?:\s+IF\s+SUSPENDED)?|SET\s+.*)",
        Emulator.alter_warehouse,
    ),
    (rf"DROP\s+WAREHOUSE\s+(IF\s+EXISTS\s+)?({NAME})", Emulator.drop_warehouse),
    (rf"SHOW\s+WAREHOUSES(?:\s+LIKE\s+({STRING}))?", Emulator.show_warehouses),
    (rf"CREATE\s+(OR\s+REPLACE\s+)?TASK\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})\s+(.*)", Emulator.create_task),
    (rf"ALTER\s+TASK\s+(IF\s+EXISTS\s+)?({NAME})\s+(RESUME|SUSPEND|SET\s+.*|MODIFY\s+AS\s+.*)", Emulator.alter_task),
    (rf"DROP\s+TASK\s+(IF\s+EXISTS\s+)?({NAME})", Emulator.drop_task),
    (
        rf"SHOW\s+TASKS(?:\s+LIKE\s+({STRING}))?(?:\s+IN\s+(ACCOUNT|DATABASE|SCHEMA)(?:\s+({NAME}))?)?",
        Emulator.show_tasks,
    ),
    (rf"EXECUTE\s+TASK\s+({NAME})(\s+RETRY\s+LAST)?", Emulator.execute_task),
    (rf"CREATE\s+(OR\s+REPLACE\s+)?STAGE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})(.*)", Emulator.create_stage),
    (r"(?:LIST|LS)\s+(@[^\s;]+)(.*)", Emulator.list_stage),
    (rf"CREATE\s+(OR\s+REPLACE\s+)?FILE\s+FORMAT\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})(.*)", Emulator.create_file_format),
    (COPY_INTO, Emulator.copy_into),
    (rf"CREATE\s+(OR\s+REPLACE\s+)?PIPE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})(.*)", Emulator.create_pipe),
    (rf"ALTER\s+PIPE\s+(IF\s+EXISTS\s+)?({NAME})\s+(SET\s+.*|REFRESH.*)", Emulator.alter_pipe),
    (rf"DROP\s+PIPE\s+(IF\s+EXISTS\s+)?({NAME})", Emulator.drop_pipe),
    (
        rf"SHOW\s+PIPES(?:\s+LIKE\s+({STRING}))?(?:\s+IN\s+(ACCOUNT|DATABASE|SCHEMA)(?:\s+({NAME}))?)?",
        Emulator.show_pipes,
    ),
    (
        rf"CREATE\s+(OR\s+REPLACE\s+)?STREAM\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})\s+ON\s+TABLE\s+({NAME})(.*)",
        Emulator.create_stream,
    ),
    (rf"DROP\s+STREAM\s+(IF\s+EXISTS\s+)?({NAME})", Emulator.drop_stream),
    (
        rf"SHOW\s+STREAMS(?:\s+LIKE\s+({STRING}))?(?:\s+IN\s+(ACCOUNT|DATABASE|SCHEMA)(?:\s+({NAME}))?)?",
        Emulator.show_streams,
    ),
    (
        rf"CREATE\s+(OR\s+REPLACE\s+)?(?:SECURE\s+)?PROCEDURE\s+(IF\s+NOT\s+EXISTS\s+)?({NAME})\s*\((.*?)\)\s+"
        r"RETURNS\s+(.*?)\s+LANGUAGE\s+SQL\b.*?\bAS\s+(\$\$.*\$\$|'.*')",
        Emulator.create_procedure,
    ),
    (rf"CALL\s+({NAME})\s*\((.*)\)", Emulator.call),
    (rf"DROP\s+PROCEDURE\s+(IF\s+EXISTS\s+)?({NAME})\s*(?:\([^)]*\))?", Emulator.drop_procedure),
]
