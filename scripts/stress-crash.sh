#!/usr/bin/env bash
# The crash test of the trace, with more rounds than the suite runs (20): each round SIGKILLs
# atlasbridged at a random moment while 4 clients append in fsync mode, restarts it, and checks
# that every acknowledged entry is there, the chain verifies, and appends continue.
#
#   scripts/stress-crash.sh [ROUNDS]     (default 500)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-500}"
ATLASBRIDGE_CRASH_ROUNDS="$rounds" cargo test --release -p atlasbridge-e2e --test e2e -- \
    --exact trace::sigkill_at_random_moments_never_loses_an_acknowledged_entry --nocapture
