# The control plane image: one image for the web app (the default command), the Celery worker and beat.
#   docker build -t controlplane .
# Configuration comes from the environment (see docker-compose.yml): DATABASE_URL, REDIS_URL,
# SECRET_KEY_FILE (or SECRET_KEY), ALLOWED_HOSTS ...
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/app/var

RUN pip install --no-cache-dir "uv==0.13.9" \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --no-cache

# Only what the app needs: never the local .venv, var/ (the demo's state and secret key) or .git.
COPY manage.py gunicorn.conf.py ./
COPY controlplane ./controlplane
COPY connectors ./connectors
COPY runbooks ./runbooks
COPY templates ./templates
COPY static ./static
# collectstatic reads the settings, which require a DATABASE_URL; it connects to no database.
RUN uv sync --frozen --no-dev --no-cache \
 && python -m compileall -q controlplane connectors runbooks \
 && SECRET_KEY=collectstatic-only DATABASE_URL=postgres://collectstatic@localhost/none \
    python manage.py collectstatic --noinput >/dev/null \
 && mkdir -p "$DATA_DIR" \
 && chown app:app "$DATA_DIR"

USER app
EXPOSE 8000
# Behind nginx (docker-compose.yml); gunicorn.conf.py sets the processes, threads and timeouts.
CMD ["gunicorn", "controlplane.wsgi", "--config", "gunicorn.conf.py", "--bind", "0.0.0.0:8000", \
     "--access-logfile", "-", "--no-control-socket"]
