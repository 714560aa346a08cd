#!/usr/bin/env bash
# A flame graph of Warden's hot path: the echo benchmark's `tools/call` through Warden
# (the configuration of scripts/bench-upstream.sh), sampled by perf with DWARF call
# graphs while the load runs, folded and drawn by inferno.
#   scripts/flamegraph.sh [requests] [concurrency] [era]     (defaults 20000 16 legacy)
# Writes docs/images/flamegraph-tools-call.svg. Needs perf (Debian: linux-perf) and
# inferno (`cargo install --locked inferno`). WARDEN_BIN=path profiles another build
# (it needs symbols: the `profiling` profile, which this script builds, has them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requests="${1:-20000}"
concurrency="${2:-16}"
era="${3:-legacy}"
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || { echo "needs inferno (cargo install --locked inferno)" >&2; exit 1; }
if [ -z "${WARDEN_BIN:-}" ]; then
    cargo build --profile profiling --locked -p warden
    WARDEN_BIN="${CARGO_TARGET_DIR:-target}/profiling/warden"
fi
# Built as scripts/bench-upstream.sh builds it.
source scripts/lib/release.sh
build_release
bench="${CARGO_TARGET_DIR:-target}/release/warden-bench"
source scripts/lib/warden.sh
source scripts/lib/bench-echo.sh
start_echo_upstream "$bench"
write_bench_config "$WARDEN_WORK/warden.toml"
start_warden "$WARDEN_BIN" --config "$WARDEN_WORK/warden.toml"

load() { "$bench" load --url "$WARDEN_URL" --era "$era" --concurrency "$concurrency" "$@"; }
load --requests 2000 --warmup 0 >/dev/null
perf record -F 499 --call-graph dwarf,16384 -p "$warden_pid" -o "$WARDEN_WORK/perf.data" 2>"$WARDEN_WORK/perf.log" &
perf_pid=$!
sleep 1
load --requests "$requests" --warmup 0
kill -INT "$perf_pid"
wait "$perf_pid" || true
svg=docs/images/flamegraph-tools-call.svg
# The folded stacks stay in target/ for a closer look (e.g. grep a function, sum counts).
folded="${CARGO_TARGET_DIR:-target}/flamegraph.folded"
perf script -i "$WARDEN_WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$folded"
# Frames under 0.5 px wide are left out: the picture keeps what costs something, and
# stays small enough to keep in the repository.
inferno-flamegraph --minwidth 0.5 <"$folded" \
    --title "warden: tools/call of echo ($era, concurrency $concurrency, $requests calls)" \
    --subtitle "scripts/flamegraph.sh $requests $concurrency $era on $(nproc) cores; $(git rev-parse --short HEAD)" \
    --width 1600 >"$svg"
echo "wrote $svg (folded stacks: $folded)"
