#!/usr/bin/env bash
# The daemon's idle footprint and the whole-process time of `atlasbridge status`: the
# "Daemon footprint and CLI latency" section of docs/benchmarks.md on stdout (scripts/bench.sh
# runs it with the others). Baseline in the same run: starting /bin/true, the cost of any process.
# Usage: scripts/bench-foundation.sh [runs]   (after `cargo build --release --workspace`)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
bin=target/release
dir=$(mktemp -d "${TMPDIR:-/tmp}/ab-bench.XXXXXX")
trap '"$bin/atlasbridge" --socket "$dir/run/d.sock" daemon stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
export ATLASBRIDGE_SOCKET="$dir/run/d.sock" ATLASBRIDGE_DATA_DIR="$dir/data"
echo "bench-foundation: $runs runs each" >&2
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
true_us=$(time_runs /bin/true)
status_us=$(time_runs "$bin/atlasbridge" status)
json_us=$(time_runs "$bin/atlasbridge" status --json)

ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }

cat <<MD
## Daemon footprint and CLI latency

Script: \`scripts/bench-foundation.sh $runs\`. The daemon with its embedded defaults (no config
file), idle, no clients; each command run $runs times in a loop, mean per run.

| figure | value | × \`/bin/true\` |
|---|---|---|
| idle RSS of \`atlasbridged\` | $(awk -v k="$rss" 'BEGIN { printf "%.1f MiB (%d KiB)", k / 1024, k }'), $threads threads | — |
| \`atlasbridge status\` (whole process: start, connect, 2 requests, print, exit) | $(ms "$status_us") | $(ratio "$status_us" "$true_us") |
| \`atlasbridge status --json\` (1 request) | $(ms "$json_us") | $(ratio "$json_us" "$true_us") |
| \`/bin/true\` (baseline: starting any process) | $(ms "$true_us") | 1.0 |
MD
