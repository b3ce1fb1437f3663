#!/bin/sh
# Run once by the postgres image when it initialises an empty data directory (docker-compose.yml mounts this
# folder at /docker-entrypoint-initdb.d): creates the role web, worker and beat log in as. It owns nothing;
# `manage.py migrate`, run by the tables' owner with DATABASE_APP_ROLE set, grants it what the app needs.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set app_password="$POSTGRES_APP_PASSWORD" <<'SQL'
CREATE ROLE controlplane_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
SQL
