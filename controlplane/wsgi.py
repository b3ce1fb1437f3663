"""The WSGI application gunicorn serves (``gunicorn controlplane.wsgi``)."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from connectors.registry import connector_classes

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
application = get_wsgi_application()

# Import every view now instead of on the first request, then move what start-up built (Django, DRF, the
# connectors: about 200,000 objects that live as long as the process) out of the garbage collector's sight.
# Otherwise each full collection walks all of them, about 100 ms in the middle of whatever request triggered
# it: the incident page's p99 at 1,000 timeline entries was 190 ms against a 64 ms median
# (bench/history_pages.py). https://docs.python.org/3/library/gc.html#gc.freeze
# The connectors too: importing them (the Airflow client's models above all) is about 0.9 s of CPU that the
# first launch of each process would otherwise pay while its other threads wait (bench/launch_dispatch.py).
_ = get_resolver().url_patterns
connector_classes()
gc.freeze()
