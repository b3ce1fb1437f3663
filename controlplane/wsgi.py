"""The WSGI application gunicorn serves (``gunicorn controlplane.wsgi``)."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from connectors.registry import connector_classes

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
application = get_wsgi_application()

# Import every view now instead of on the first request, then move what start-up built (Django, DRF, the
# connectors: hundreds of thousands of objects that live as long as the process) out of the garbage
# collector's sight. Otherwise each full collection walks all of them in the middle of whatever request
# triggered it, which sets the history pages' p99. https://docs.python.org/3/library/gc.html#gc.freeze
# The connectors too: importing them (the Airflow client's models above all) takes about a second of CPU,
# which the first launch of each process would otherwise pay while its other threads wait.
_ = get_resolver().url_patterns
connector_classes()
gc.freeze()
