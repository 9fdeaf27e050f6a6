#!/usr/bin/env bash
# A throwaway PostgreSQL for the server's tests (and for trying the server out), on 127.0.0.1 only.
#
#   scripts/postgres.sh start   # installs postgresql (Debian) if missing, creates and starts a cluster
#   scripts/postgres.sh url     # prints the export lines the tests read
#   scripts/postgres.sh stop    # stops the cluster and deletes its data directory
#
# Typical use:   scripts/postgres.sh start && eval "$(scripts/postgres.sh url)" && cargo test -p atlasbridge-server
#
# Environment: ATLASBRIDGE_PG_PORT (54329), ATLASBRIDGE_PG_DIR (/tmp/atlasbridge-pg-$PORT), and
# ATLASBRIDGE_PG_SETTINGS: postgresql.conf lines appended after the test settings below, which
# they override (scripts/bench.sh turns durability back on that way).
#
# Why this shape:
# - PostgreSQL refuses to run as root, and CI runs as root: the cluster belongs to the `postgres`
#   system user the Debian package creates, and every server-side command runs through `runuser`.
# - Password (SCRAM) authentication over TCP on 127.0.0.1 only, on a fixed uncommon port, so the
#   tests exercise the same login path as production and nothing listens beyond loopback.
# - Two roles: `atlasbridge_owner` owns the schema and runs migrations (CREATEDB, so each test gets
#   its own database); `atlasbridge_app` is what the server runs as: NOSUPERUSER and NOBYPASSRLS,
#   because superusers and BYPASSRLS roles skip row-level security, which is our tenant isolation.
set -euo pipefail

PORT="${ATLASBRIDGE_PG_PORT:-54329}"
BASE="${ATLASBRIDGE_PG_DIR:-/tmp/atlasbridge-pg-$PORT}"
DATA="$BASE/data"
OWNER_PASSWORD="${ATLASBRIDGE_PG_OWNER_PASSWORD:-owner-test-password}"
APP_PASSWORD="${ATLASBRIDGE_PG_APP_PASSWORD:-app-test-password}"
DATABASE=atlasbridge

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

ensure_installed() {
    if pg_bin >/dev/null; then
        return
    fi
    echo "postgresql is not installed; installing the Debian packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql openssl >&2
    # The package starts its own cluster on 5432; we do not use it.
    if command -v pg_ctlcluster >/dev/null; then
        for cluster in $(ls /etc/postgresql 2>/dev/null); do
            pg_ctlcluster "$cluster" main stop >/dev/null 2>&1 || true
        done
    fi
    pg_bin >/dev/null || { echo "postgresql installation failed" >&2; exit 2; }
}

as_postgres() {
    runuser -u postgres -- "$@"
}

psql_super() {
    # Over the Unix socket in $BASE as the cluster's superuser (peer authentication).
    as_postgres "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$BASE" -p "$PORT" -U postgres -d postgres "$@"
}

# A throwaway CA and a certificate for 127.0.0.1/localhost signed by it, so that tests can
# connect with TLS and verify it (ATLASBRIDGE_TEST_DATABASE_CA_FILE); plain connections keep
# working.
make_tls_certificates() {
    local tls="$BASE/tls"
    mkdir -p "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=AtlasBridge test database CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 30 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
    rm -f "$tls/ca.key" "$tls/server.csr" "$tls/server.ext" "$tls/ca.srl"
    chown -R postgres:postgres "$tls"
    chmod 0600 "$tls/server.key"
    chmod 0644 "$tls/ca.pem"
    chmod 0755 "$tls"
}

is_running() {
    [ -f "$DATA/postmaster.pid" ] && as_postgres "$(pg_bin)/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

start() {
    ensure_installed
    if is_running; then
        echo "postgresql already running on 127.0.0.1:$PORT ($DATA)" >&2
        return
    fi
    local bin
    bin=$(pg_bin)
    rm -rf "$BASE"
    mkdir -p "$BASE"
    chown postgres:postgres "$BASE"
    chmod 0700 "$BASE"
    local pwfile="$BASE/superuser-password"
    # The superuser logs in by peer authentication on the socket only; the TCP password is random.
    head -c 24 /dev/urandom | base64 >"$pwfile"
    chown postgres:postgres "$pwfile"
    as_postgres "$bin/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" \
        --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$BASE/initdb.log" 2>&1 \
        || { cat "$BASE/initdb.log" >&2; exit 2; }
    rm -f "$pwfile"
    make_tls_certificates
    # Loopback only, its own socket directory, small and fast: this is a test cluster (fsync off
    # speeds tests up; the durability the server relies on is COMMIT, which still holds).
    cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$BASE/tls/server.pem'
ssl_key_file = '$BASE/tls/server.key'
port = $PORT
unix_socket_directories = '$BASE'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
${ATLASBRIDGE_PG_SETTINGS:-}
EOF
    as_postgres "$bin/pg_ctl" -D "$DATA" -l "$BASE/server.log" -w -t 60 start >/dev/null \
        || { cat "$BASE/server.log" >&2; exit 2; }
    psql_super <<EOF
CREATE ROLE atlasbridge_owner LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS PASSWORD '$OWNER_PASSWORD';
CREATE ROLE atlasbridge_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '$APP_PASSWORD';
CREATE DATABASE $DATABASE OWNER atlasbridge_owner;
EOF
    echo "postgresql running on 127.0.0.1:$PORT (data in $DATA)" >&2
}

stop() {
    if pg_bin >/dev/null && is_running; then
        as_postgres "$(pg_bin)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
    rm -rf "$BASE"
    echo "postgresql on port $PORT stopped" >&2
}

url() {
    echo "export ATLASBRIDGE_TEST_DATABASE_URL=postgres://atlasbridge_owner:$OWNER_PASSWORD@127.0.0.1:$PORT/$DATABASE"
    echo "export ATLASBRIDGE_TEST_APP_DATABASE_URL=postgres://atlasbridge_app:$APP_PASSWORD@127.0.0.1:$PORT/$DATABASE"
    echo "export ATLASBRIDGE_TEST_DATABASE_CA_FILE=$BASE/tls/ca.pem"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) url ;;
    *)
        echo "usage: $0 start|stop|url" >&2
        exit 2
        ;;
esac
