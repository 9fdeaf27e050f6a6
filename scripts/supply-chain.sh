#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (configured in deny.toml): known advisories against the
# RustSec snapshot in supply-chain/advisory-db/, licences, banned crates and duplicate versions,
# and crates.io as the only source. Checked twice, like the lints in .ci/run: the default build,
# and the build with the optional `keyring` feature of the daemon and the CLI.
#
#   scripts/supply-chain.sh
#
# Installs the pinned cargo-deny when it is missing or another version (about 2.5 to 6.5 minutes
# on two cores). Apart from that and `cargo fetch`, it works offline: the advisory database is
# never fetched. Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# 0.20.2 builds with `--locked` on Rust 1.88 and later, and reads our Cargo.lock (version 4).
deny_version="0.20.2"

if [[ "$(cargo deny --version 2>/dev/null || true)" != "cargo-deny $deny_version" ]]; then
    echo "== installing cargo-deny $deny_version"
    cargo install --locked cargo-deny --version "$deny_version"
fi
cargo deny --version

# cargo-deny reads the database from a git repository under the `db-path` of deny.toml, in a
# folder named after the hash of the database's URL (the default RustSec URL gives the name
# below). The snapshot is made into such a repository afresh on every run, so what is checked is
# always exactly what is committed.
snapshot="supply-chain/advisory-db"
db_root="target/supply-chain/advisory-dbs"
db="$db_root/advisory-db-3157b0e258782691"
snapshot_line="$(head -n 1 "$snapshot/SNAPSHOT")"
snapshot_date="$(grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}' <<<"$snapshot_line" | head -n 1)"
echo "== advisory database: $snapshot_line"
# (u+w first: a snapshot copied from a read-only tree leaves read-only folders behind.)
if [[ -d "$db" ]]; then chmod -R u+w "$db"; fi
rm -rf "$db"
mkdir -p "$db"
cp -R "$snapshot/." "$db/"
git -C "$db" -c init.defaultBranch=main init -q --template=
git -C "$db" add -A
GIT_AUTHOR_DATE="${snapshot_date}T00:00:00Z" GIT_COMMITTER_DATE="${snapshot_date}T00:00:00Z" \
    git -C "$db" -c user.name=supply-chain -c user.email=supply-chain@localhost \
    -c commit.gpgsign=false commit -q --no-verify -m "$snapshot_line"

# cargo-deny cannot judge the snapshot's age (the repository above is always new), so say it
# here. An old snapshot is not a finding: refreshing it needs the network (see
# supply-chain/README.md), and CI must not turn red by the calendar alone.
age_days=$((($(date -u +%s) - $(date -u -d "$snapshot_date" +%s)) / 86400))
if ((age_days > 90)); then
    echo "warning: the advisory snapshot is $age_days days old; refresh it (supply-chain/README.md)"
else
    echo "the advisory snapshot is $age_days days old"
fi

echo "== cargo fetch --locked"
cargo fetch --locked

# --offline: cargo metadata reads only what `cargo fetch` brought, and the database is not fetched.
deny=(cargo deny --offline --locked)
check=(check --show-stats --hide-inclusion-graph)

echo "== cargo deny check (default features)"
# Every allowed licence must be used by some crate, but some are used only by the keyring build:
# that is judged by the next run, over the larger graph.
"${deny[@]}" "${check[@]}" --allow license-not-encountered

echo "== cargo deny check (features atlasbridged/keyring, atlasbridge/keyring)"
"${deny[@]}" --features atlasbridged/keyring,atlasbridge/keyring "${check[@]}"

echo "supply chain: no findings"
