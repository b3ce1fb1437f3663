"""gunicorn's settings for the control plane's web processes (gunicorn reads this file from the working
directory; command-line options override it).

gunicorn runs behind nginx (deploy/nginx/controlplane.conf.template; the demo and docker-compose.yml run
both): nginx reads each request whole, however slowly a client sends it, before passing it on, so a
gunicorn thread is only ever busy with a complete request. gunicorn on its own has no time limit on reading
a request once its first byte came: a few clients trickling requests hold every thread.
"""

# One process per core; a process's threads serve the requests that wait on something outside the control
# plane (a connector's plan or check, ``?wait`` for an action's end) while the others go on.
workers = 2
threads = 4
worker_class = "gthread"

# A worker whose main loop has not checked in for this long is killed and replaced (with gthread this is
# not a per-request limit: it catches a process stuck in one place, such as a C call that never returns).
timeout = 30
# On SIGTERM or a reload, requests under way get this long to finish: the longest one, ``?wait=30``
# (api/waiting.py, MAX_WAIT_SECONDS), plus a margin; docker-compose.yml's stop_grace_period is longer.
graceful_timeout = 35
# Seconds an idle keep-alive connection is kept. nginx opens a new connection per request (no upstream
# keep-alive), so this only concerns clients that talk to gunicorn directly (compose's health check).
keepalive = 5
