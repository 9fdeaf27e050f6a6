#!/usr/bin/env bash
# Measures the daemon's idle memory and the whole-process time of `atlasbridge status`.
# Usage: scripts/bench-foundation.sh [runs]   (builds release binaries first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-500}
cargo build --release --workspace --bins -q
bin=target/release
dir=$(mktemp -d /tmp/ab-bench.XXXXXX)
trap '"$bin/atlasbridge" --socket "$dir/run/d.sock" daemon stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
export ATLASBRIDGE_SOCKET="$dir/run/d.sock" ATLASBRIDGE_DATA_DIR="$dir/data"
"$bin/atlasbridge" daemon start >/dev/null
pid=$("$bin/atlasbridge" status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
# Let the runtime settle, then read the resident set (the daemon is idle: no clients).
sleep 1
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
threads=$(awk '/Threads/ {print $2}' "/proc/$pid/status")

time_runs() { # prints mean microseconds per run of "$@"
  local start end
  start=$(date +%s%N)
  for _ in $(seq "$runs"); do "$@" >/dev/null; done
  end=$(date +%s%N)
  echo $(( (end - start) / runs / 1000 ))
}
status_us=$(time_runs "$bin/atlasbridge" status)
json_us=$(time_runs "$bin/atlasbridge" status --json)
true_us=$(time_runs /bin/true)

echo "machine: $(nproc) cores, $(uname -sr)"
echo "idle RSS: ${rss} KiB, ${threads} threads"
echo "atlasbridge status: ${status_us} us per run (mean of ${runs})"
echo "atlasbridge status --json: ${json_us} us per run"
echo "/bin/true (process start baseline): ${true_us} us per run"
