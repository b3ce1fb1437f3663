"""The WSGI application gunicorn serves (``gunicorn controlplane.wsgi``)."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from connectors.registry import connector_classes

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
application = get_wsgi_application()

# Import every view and the connectors now instead of on the first request (that request would pay for
# importing them while the process's other threads wait), then move what start-up built (Django, DRF, the
# connectors: objects that live as long as the process) out of the garbage collector's sight, so a full
# collection does not walk them in the middle of a request. https://docs.python.org/3/library/gc.html#gc.freeze
_ = get_resolver().url_patterns
connector_classes()
gc.freeze()
