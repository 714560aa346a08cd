#!/usr/bin/env bash
# The test command: lints, every Rust test tier, the official MCP clients against a
# freshly started `warden serve`, then `warden scan`. Installs what it needs (pip/npm packages) into ignored
# folders under interop/. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The benchmarks' allocation-counting and layer-skipping builds, so that they cannot
# rot unseen.
cargo clippy --workspace --features warden/count-allocations,warden/bench-layers --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== the gateway suites for notes, keys, audit, held calls, pins, costs and traces, on a PostgreSQL store"
WARDEN_TEST_STORE=postgres cargo test -p warden --locked --test notes_both_eras --test front_door \
    --test audit --test injection --test rate_limits --test telemetry

echo "== the PostgreSQL store's tests on a throwaway server (the path taken where none runs)"
# --workspace keeps the features resolved above: `-p warden-store` alone would resolve
# others and compile some fifty crates again.
WARDEN_TEST_POSTGRES=throwaway cargo test --workspace --locked --test postgres

# The instrumented fuzz build is CPU work; the suites from here on mostly wait on
# clients and servers, so it runs beside them and is waited for before the fuzz runs.
echo "== fuzz targets: building in the background (log: fuzz/build.log)"
mkdir -p fuzz
scripts/fuzz.sh build >fuzz/build.log 2>&1 &
fuzz_build=$!
trap 'kill "$fuzz_build" 2>/dev/null || true' EXIT

# The binary the integration suites ran (`cargo build --bin warden` would resolve other
# features and compile some ninety crates again for the same code).
warden="${CARGO_TARGET_DIR:-target}/debug/warden"
if [ ! -x "$warden" ]; then
    cargo build --locked --bin warden
fi

echo "== interop: official clients against warden serve"
scripts/interop.sh "$warden"

echo "== conformance: the official suite against warden fronting a stdio fixture"
scripts/conformance.sh "$warden"

echo "== upstreams: official clients through warden to server-everything (stdio and HTTP)"
scripts/upstreams.sh "$warden"

echo "== scan: warden scan against server-everything and the HTTP fixture, direct and behind Warden"
scripts/scan.sh "$warden"

echo "== fuzz: every target for 20 s (docs/FUZZING.md)"
if ! wait "$fuzz_build"; then
    echo "FAIL [fuzz]: the fuzz targets did not build" >&2
    tail -n 60 fuzz/build.log >&2
    exit 1
fi
trap - EXIT
scripts/fuzz.sh 20

echo "== cargo deny: bans, licenses, sources (deny.toml)"
scripts/deny.sh
