#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ for SECONDS each (default 600) and says, per target, how many
# inputs were executed and whether anything was found. Exits non-zero on any finding.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]        (no TARGET: every target in fuzz/Cargo.toml)
#
# FUZZ_JOBS=N runs N targets at a time (default 1; each libFuzzer process uses one core).
# Seed corpora are built from the repository's vectors into fuzz/corpus/<target>/ when that
# directory is missing or empty; libFuzzer then adds what it learns there. Findings land in
# fuzz/artifacts/<target>/, the full libFuzzer output in fuzz/logs/<target>.log.
#
# Needs cargo-fuzz and a toolchain that builds with -Zsanitizer=address; on stable that means
# RUSTC_BOOTSTRAP=1, which this script sets (scripts/fuzz-smoke.sh checks for all of it first).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fuzz=$root/fuzz
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never

seconds=${1:-600}
if [[ ! $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
fi
shift $(($# > 0 ? 1 : 0))
all_targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$fuzz/Cargo.toml" | grep -v '^atlasbridge-fuzz$')
if (($# > 0)); then
    targets=("$@")
    for t in "${targets[@]}"; do
        grep -qx -- "$t" <<<"$all_targets" || {
            echo "unknown fuzz target '$t'; targets: $(echo $all_targets)" >&2
            exit 2
        }
    done
else
    mapfile -t targets <<<"$all_targets"
fi
jobs=${FUZZ_JOBS:-1}

# One seed file per input, named by its content so that rebuilding adds no duplicates.
seed() { # DIR (content on stdin)
    local tmp
    tmp=$(mktemp "$1/.seed.XXXXXX")
    cat >"$tmp"
    mv "$tmp" "$1/$(sha1sum <"$tmp" | cut -c1-40)"
}
seed_lines() { # DIR FILE... : every non-empty line of the files, without its newline
    local dir=$1 line
    shift
    for f in "$@"; do
        while IFS= read -r line || [[ -n $line ]]; do
            [[ -n $line ]] && printf '%s' "$line" | seed "$dir"
        done <"$f"
    done
}
seed_files() { # DIR FILE...
    local dir=$1
    shift
    for f in "$@"; do seed "$dir" <"$f"; done
}

# Lines a client sends (docs/protocol.md), valid and not.
requests() {
    cat <<'EOF'
{"jsonrpc":"2.0","id":1,"method":"hello","params":{"protocol":1,"client":"atlasbridge 0.1.0"}}
{"jsonrpc":"2.0","id":2,"method":"daemon.status"}
{"jsonrpc":"2.0","id":"a","method":"decision.evaluate","params":{"session_id":"s1","prompt_id":"p1","prompt_type":"yes_no","prompt_text":"Continue? [y/n]","confidence":"high","tool_id":"claude_code","repo":"/src/app","session_tags":["ci"]}}
{"jsonrpc":"2.0","id":3,"method":"decision.record","params":{"session_id":"s1","prompt_id":"p2","prompt_type":"free_text","action_taken":"require_human","human_actor":"alice"}}
{"jsonrpc":"2.0","id":4,"method":"trace.read","params":{"from_seq":0,"limit":10}}
{"jsonrpc":"2.0","id":5,"method":"policy.pin","params":{"scope":"session","id":"s1","policy_hash":"00"}}
{"jsonrpc":"2.0","method":"trace.subscribe","params":{"from_seq":3}}
{"jsonrpc":"2.0","id":null,"method":"session.start","params":{"session_id":"s2","agent_id":"a1","session_tags":["x"]}}
{"jsonrpc":"2.0","id":1.5e3,"method":"x","params":[1,-0,1e-7,"\u00e9\ud83d\ude00"]}
[{"jsonrpc":"2.0","id":1,"method":"hello"}]
{"jsonrpc":"1.0","id":7,"method":"x"}
{"jsonrpc":"2.0","id":{},"method":"x"}
{"jsonrpc":"2.0","result":{"ok":true},"id":9}
{"jsonrpc":"2.0","error":{"code":-32602,"message":"bad","data":{"field":"x"}},"id":"q"}
EOF
}

# JSON values that exercise the corners of RFC 8785.
json_values() {
    cat <<'EOF'
{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]}
[0,-0,-0.0,1.0,1e21,1e-7,9007199254740993,18446744073709551615,18446744073709551616,-9223372036854775808,5e-324,1.7976931348623157e308]
{"\ue000":1,"\ud83d\ude00":2,"a":3,"":4,"\u0000":5}
"\b\f\n\r\t\u0001\u001f\u007f\u2028"
{"a":{"a":{"a":[{"b":[]},{}]}}}
EOF
}

# Anchors and aliases, which no vector uses.
policy_aliases() {
    cat <<'EOF'
policy_version: "1"
rules:
  - id: a
    match: &m {any_of: [{prompt_type: [yes_no]}, {contains: "(?i)x+", contains_is_regex: yes}]}
    action: &act {type: deny, reason: r}
  - id: b
    match: {none_of: [*m], session_tag: ci}
    action: *act
EOF
}

# v1 decisions as the original runtime wrote them, and the later variant with a chain.
v1_lines() {
    cat <<'EOF'
{"timestamp":"2025-01-02T03:04:05.678901+00:00","idempotency_key":"k1","prompt_id":"p1","session_id":"s1","policy_hash":"abc123","matched_rule_id":"yes","action_type":"auto_reply","action_value":"y","confidence":"high","prompt_type":"yes_no","autonomy_mode":"full","explanation":"matched rule yes"}
{"timestamp":"2025-01-02T03:04:06Z","idempotency_key":"k2","prompt_id":"p2","session_id":"s1","policy_hash":"abc123","matched_rule_id":null,"action_type":"require_human","action_value":"","confidence":"low","prompt_type":"free_text","autonomy_mode":"assist","explanation":"no match"}
{"timestamp":"2025-01-02T03:04:07+02:00","idempotency_key":"k3","prompt_id":"p3","session_id":"s2","policy_hash":"abc123","matched_rule_id":"deny-rm","action_type":"deny","action_value":"","confidence":"medium","prompt_type":"confirm_enter","autonomy_mode":"full","explanation":"deny","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"1111111111111111111111111111111111111111111111111111111111111111","extra":1}
EOF
}

build_seeds() { # TARGET DIR
    local vectors=$root/tests/vectors trace
    trace=("$vectors"/trace-v2/*.jsonl "$vectors"/trace-v2/segmented/*.jsonl)
    case $1 in
    trace_line) seed_lines "$2" "${trace[@]}" ;;
    wire_frames)
        seed_files "$2" "${trace[@]}"
        requests | seed "$2"
        ;;
    v1_line)
        v1_lines | seed_lines "$2" /dev/stdin
        seed_lines "$2" "$vectors/trace-v2/valid.jsonl"
        ;;
    policy_yaml)
        seed_files "$2" "$vectors"/policies/*.yaml "$vectors"/policies/invalid/*.yaml \
            "$root"/examples/policies/*.yaml
        policy_aliases | seed "$2"
        ;;
    canonical_json)
        seed_lines "$2" "$vectors/trace-v2/valid.jsonl" "$vectors/trace-v2/reformatted.jsonl"
        seed_files "$2" "$vectors"/trace-v2/canonical-*.json "$vectors/trace-v2/expected.json"
        json_values | seed_lines "$2" /dev/stdin
        ;;
    jsonrpc)
        requests | seed_lines "$2" /dev/stdin
        seed_lines "$2" "$vectors/trace-v2/valid.jsonl"
        ;;
    *) printf '' | seed "$2" ;;
    esac
}

for t in "${targets[@]}"; do
    dir=$fuzz/corpus/$t
    if [[ ! -d $dir ]] || [[ -z $(ls -A "$dir") ]]; then
        mkdir -p "$dir"
        build_seeds "$t" "$dir"
        echo "== seeded fuzz/corpus/$t with $(ls "$dir" | wc -l) inputs"
    fi
done

mkdir -p "$fuzz/logs"
echo "== building the fuzz targets"
for t in "${targets[@]}"; do
    if ! (cd "$fuzz" && cargo fuzz build "$t") >"$fuzz/logs/build.log" 2>&1; then
        cat "$fuzz/logs/build.log" >&2
        echo "fuzz: building $t failed" >&2
        exit 1
    fi
done

run_one() { # TARGET
    local t=$1 log=$fuzz/logs/$1.log artifacts=$fuzz/artifacts/$1 before after rc=0 args
    mkdir -p "$artifacts"
    before=$(ls "$artifacts" | grep -cE '^(crash|oom|timeout|leak)-' || true)
    args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=30)
    [[ -f $fuzz/dicts/$t.dict ]] && args+=(-dict="$fuzz/dicts/$t.dict")
    (cd "$fuzz" && cargo fuzz run "$t" -- "${args[@]}") >"$log" 2>&1 || rc=$?
    after=$(ls "$artifacts" | grep -cE '^(crash|oom|timeout|leak)-' || true)
    local execs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if ((rc != 0 || after > before)); then
        printf '%s\t%s\tFOUND (exit %s; fuzz/artifacts/%s/, log fuzz/logs/%s.log)\n' \
            "$t" "${execs:-?}" "$rc" "$t" "$t" >"$fuzz/logs/$t.result"
        # What failed and how to reproduce it, for a CI log that keeps nothing else.
        grep -m 1 -A 3 -E 'panicked at|^==[0-9]+==ERROR|^ERROR: libFuzzer' "$log" >&2 || true
        grep -A 2 -E '^Reproduce with:' "$log" >&2 || true
    else
        printf '%s\t%s\tnothing found\n' "$t" "${execs:-?}" >"$fuzz/logs/$t.result"
    fi
    cat "$fuzz/logs/$t.result"
}

echo "== fuzzing ${#targets[@]} target(s) for ${seconds} s each, $jobs at a time"
for t in "${targets[@]}"; do
    rm -f "$fuzz/logs/$t.result"
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
    run_one "$t" &
done
wait

echo "== summary (target, executions, result)"
found=0
for t in "${targets[@]}"; do
    if [[ -f $fuzz/logs/$t.result ]]; then
        cat "$fuzz/logs/$t.result"
        grep -q FOUND "$fuzz/logs/$t.result" && found=1
    else
        printf '%s\t?\tFOUND (the run left no result)\n' "$t"
        found=1
    fi
done
exit "$found"
