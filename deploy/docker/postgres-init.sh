#!/bin/sh
# Run once by the postgres image on an empty data directory: the two roles of docs/server.md.
# The owner owns the schema and migrates; the app role is what the server serves as, without
# superuser or BYPASSRLS, because those skip row-level security, which keeps organisations apart.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$ATLASBRIDGE_OWNER_PASSWORD" \
    -v app_password="$ATLASBRIDGE_APP_PASSWORD" <<'SQL'
CREATE ROLE atlasbridge_owner LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD :'owner_password';
CREATE ROLE atlasbridge_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
CREATE DATABASE atlasbridge OWNER atlasbridge_owner;
SQL
