#!/usr/bin/env bash
# The "Governance server" section of docs/benchmarks.md on stdout (scripts/bench.sh runs it with
# the others): starts a PostgreSQL cluster of its own with production durability, runs the
# bench-server load generator against the release server, and stops the cluster, deleting its
# data (gigabytes at full size), whatever happens.
#
# Usage: scripts/bench-server.sh [bench-server arguments]   (after `cargo build --release`)
#   e.g. --entries 100000 --rows 200000 --samples 30 for a quick check.
# The cluster listens on 127.0.0.1:$ATLASBRIDGE_PG_PORT (54339 unless set) in $ATLASBRIDGE_PG_DIR
# (scripts/postgres.sh's default for that port unless set); it refuses to reuse a running one.
set -euo pipefail
cd "$(dirname "$0")/.."
export ATLASBRIDGE_PG_PORT="${ATLASBRIDGE_PG_PORT:-54339}"
export ATLASBRIDGE_PG_DIR="${ATLASBRIDGE_PG_DIR:-/tmp/atlasbridge-pg-$ATLASBRIDGE_PG_PORT}"
if [ -e "$ATLASBRIDGE_PG_DIR/data/postmaster.pid" ]; then
  echo "bench-server: a cluster already runs in $ATLASBRIDGE_PG_DIR; the benchmark starts and" \
    "deletes its own: stop that one or set ATLASBRIDGE_PG_PORT and ATLASBRIDGE_PG_DIR" >&2
  exit 2
fi
# The test cluster turns durability off; a benchmark of an ack that follows COMMIT must not.
# wal_level = minimal (a server without replicas) lets the bulk load of the search's rows skip
# the WAL; the server's own inserts are logged in full either way.
export ATLASBRIDGE_PG_SETTINGS="fsync = on
synchronous_commit = on
full_page_writes = on
wal_level = minimal
max_wal_senders = 0
shared_buffers = 1GB
max_wal_size = 2GB"
trap 'scripts/postgres.sh stop' EXIT
scripts/postgres.sh start
eval "$(scripts/postgres.sh url)"
cargo bench --locked --quiet -p atlasbridge-server --bench bench-server -- "$@"
