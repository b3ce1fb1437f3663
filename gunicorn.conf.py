"""gunicorn's settings for the control plane's web processes (gunicorn reads this file from the working
directory; command-line options override it). See controlplane/webgate.py for the layout's reasons."""

# One process per core; the threads take turns (controlplane.webworker), so a process runs one request's
# Python at a time while its other threads hold connections and the requests that wait on something
# outside the control plane (a connector, ``?wait`` for an action's end).
workers = 2
threads = 4
worker_class = "controlplane.webworker.GatedThreadWorker"
