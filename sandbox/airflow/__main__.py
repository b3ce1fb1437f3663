"""``python -m sandbox.airflow start|status|stop|venv``: see sandbox/airflow/server.py."""

import sys

from sandbox.airflow.server import main

sys.exit(main())
