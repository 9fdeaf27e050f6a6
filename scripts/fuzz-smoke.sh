#!/usr/bin/env bash
# CI smoke for the fuzz targets: every target for FUZZ_SMOKE_SECONDS (default 30) through
# scripts/fuzz.sh, when this machine can build them.
#
# Fuzzing needs cargo-fuzz, a C++ compiler (libFuzzer is built from source), nightly features
# (RUSTC_BOOTSTRAP=1 on a stable toolchain) and AddressSanitizer. When any of that is missing
# this prints why and exits 0: a machine without support must never fail CI. It fails only
# when a target finds something, or when the fuzz crate no longer builds against the library.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SMOKE_SECONDS:-30}

skip() {
    echo "fuzz smoke: skipped: $*"
    exit 0
}

command -v cargo >/dev/null 2>&1 || skip "cargo is not installed"
command -v rustc >/dev/null 2>&1 || skip "rustc is not installed"
cargo fuzz --version >/dev/null 2>&1 ||
    skip "cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
cxx=${CXX:-}
if [[ -z $cxx ]]; then
    for c in c++ clang++ g++; do
        command -v "$c" >/dev/null 2>&1 && cxx=$c && break
    done
fi
[[ -n $cxx ]] || skip "no C++ compiler to build libFuzzer with (c++, clang++, g++ or \$CXX)"

host=$(rustc -vV | sed -n 's/^host: //p')
case $host in
x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu | x86_64-apple-darwin | aarch64-apple-darwin) ;;
*) skip "libFuzzer with AddressSanitizer is not supported on $host" ;;
esac

# A two-line program built the way cargo-fuzz builds: nightly flags unlocked, ASan linked in.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'fn main() {\n    let v = vec![1u8; 4];\n    std::process::exit(i32::from(v[3]) - 1);\n}\n' >"$probe/p.rs"
if ! RUSTC_BOOTSTRAP=1 rustc --edition 2021 -Zsanitizer=address --target "$host" \
    -o "$probe/p" "$probe/p.rs" >"$probe/log" 2>&1; then
    skip "rustc $(rustc -V | cut -d' ' -f2) cannot build with RUSTC_BOOTSTRAP=1 -Zsanitizer=address: $(head -n 2 "$probe/log" | tr '\n' ' ')"
fi
"$probe/p" >"$probe/log" 2>&1 ||
    skip "a program built with AddressSanitizer does not run here: $(head -n 2 "$probe/log" | tr '\n' ' ')"

# The fuzz crate has its own lock file and dependencies (libfuzzer-sys); no network, no smoke.
cargo fetch --manifest-path fuzz/Cargo.toml >"$probe/log" 2>&1 ||
    skip "cannot fetch the fuzz crate's dependencies: $(tail -n 2 "$probe/log" | tr '\n' ' ')"

echo "fuzz smoke: $seconds s per target on $host ($(rustc -V), $(cargo fuzz --version))"
exec scripts/fuzz.sh "$seconds"
