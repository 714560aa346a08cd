#!/usr/bin/env bash
# What tracing costs (issue 24): the echo upstream through four Wardens with the same
# configuration, alternating round by round: tracing off (twice: two identical Wardens
# show the noise between processes), tracing on with nothing sampled
# (sampling_ratio 0, no caller trace: every request still gets a trace id, for the log
# and the audit record), and tracing on with every request sampled (ratio 1), exporting
# to an OTLP sink (`warden-bench otlp-sink`) that takes every export as a collector would.
# Warden's CPU per call from /proc over the measured calls (median round), throughput
# and p50 from the best round. Writes the table into docs/BENCHMARKS.md.
#   scripts/bench-telemetry.sh [requests] [concurrency]     (ROUNDS, default 5)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requests="${1:-20000}"
concurrency="${2:-16}"
source scripts/lib/release.sh
build_release
target="${CARGO_TARGET_DIR:-target}/release"
source scripts/lib/warden.sh
source scripts/lib/bench-echo.sh

start_echo_upstream "$target/warden-bench"
"$target/warden-bench" otlp-sink >"$WARDEN_WORK/sink.out" &
sink_pid=$!
kill_on_exit "$sink_pid"
sink_url="$(wait_for_output "$WARDEN_WORK/sink.out" '^listening on http://[^ ]*' "$sink_pid" "OTLP sink" 10)"
sink_url="${sink_url#listening on }"

write_bench_config "$WARDEN_WORK/warden.toml"
for ratio in 0 1; do
    printf '\n[telemetry]\notlp_endpoint = "%s"\nsampling_ratio = %s\n' "$sink_url" "$ratio" |
        cat "$WARDEN_WORK/warden.toml" - >"$WARDEN_WORK/warden-ratio$ratio.toml"
done

start_variant off "$target/warden" "$WARDEN_WORK/warden.toml"
start_variant off_again "$target/warden" "$WARDEN_WORK/warden.toml"
start_variant unsampled "$target/warden" "$WARDEN_WORK/warden-ratio0.toml"
start_variant sampled "$target/warden" "$WARDEN_WORK/warden-ratio1.toml"

results="$WARDEN_WORK/results.jsonl"
for era in legacy modern; do
    for round in $(seq 1 "${ROUNDS:-5}"); do
        for name in off off_again unsampled sampled; do
            url="${name}_url" key="${name}_key" pid="${name}_pid"
            echo "{\"path\": \"$name\", \"load\": $(WARDEN_KEY="${!key}" "$target/warden-bench" load --url "${!url}" --era "$era" --requests "$requests" --concurrency "$concurrency" --json --pid "${!pid}")}" >>"$results"
        done
    done
done
# Spans leave once a second: wait for the last batch before asking the sink.
sleep 3
taken="$(curl -sf "$sink_url/taken")"
for name in off off_again unsampled sampled; do
    key="${name}_key"
    if grep -qF "${!key}" "$WARDEN_WORK/$name.log"; then
        echo "bench-telemetry: the admin key appeared in the log of $name" >&2
        exit 1
    fi
done

python3 - "$results" "$requests" "$concurrency" "$taken" <<'PY'
import json, statistics, sys
sys.path.insert(0, "scripts/lib")
from bench_doc import machine, write_block
path, requests, concurrency, taken = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
rows = [json.loads(line) for line in open(path)]
names = {"off": "tracing off", "off_again": "tracing off, a second Warden (noise)",
         "unsampled": "on, nothing sampled (ratio 0)",
         "sampled": "on, every call sampled (ratio 1)"}
def runs(name, era):
    return [r["load"] for r in rows if r["path"] == name and r["load"]["era"] == era]
lines, summary = [], []
failed = any(r["load"]["errors"] for r in rows)
for era in ["legacy", "modern"]:
    cpu = {name: statistics.median(r["cpu_us_per_call"] for r in runs(name, era)) for name in names}
    spread = {name: (min(r["cpu_us_per_call"] for r in runs(name, era)),
                     max(r["cpu_us_per_call"] for r in runs(name, era))) for name in names}
    for name, label in names.items():
        best = max(runs(name, era), key=lambda r: r["rps"])
        low, high = spread[name]
        lines.append(f"| {era} | {label} | {cpu[name]:.0f} µs ({low:.0f}–{high:.0f}) | {best['rps']:,.0f} | {best['p50_us']:.0f} µs |")
    low = {name: spread[name][0] for name in names}
    summary.append(f"- {era}, best rounds (noise here only adds): unsampled minus off "
                   f"**{low['unsampled'] - min(low['off'], low['off_again']):+.0f} µs**, sampled minus off "
                   f"**{low['sampled'] - min(low['off'], low['off_again']):+.0f} µs** a call.")
    summary.append(f"- {era}, medians: two identical Wardens differ by **{cpu['off_again'] - cpu['off']:+.0f} µs**; "
                   f"unsampled minus off **{cpu['unsampled'] - cpu['off']:+.0f} µs** a call; "
                   f"sampled minus off **{cpu['sampled'] - cpu['off']:+.0f} µs** a call "
                   f"({(cpu['sampled'] / cpu['off'] - 1) * 100:+.0f} %).")
block = "\n".join([
    "<!-- telemetry-bench:start -->",
    machine() + " "
    f"Command: `scripts/bench-telemetry.sh {requests} {concurrency}` (release build; "
    f"{len(runs('off', 'legacy'))} alternating rounds a path and era, concurrency {concurrency}; "
    "Warden's CPU from /proc over the measured calls, median round with the range of the rounds; "
    "throughput and p50 from the best round).",
    "",
    "| era | tracing | Warden CPU per call | req/s | p50 |",
    "|---|---|---:|---:|---:|",
    *lines,
    "",
    *summary,
    f"- The sink took {taken['exports']:,} exports, {taken['bytes'] / 1e6:,.1f} MB of OTLP protobuf, all from the sampled Warden.",
    "<!-- telemetry-bench:end -->",
])
write_block("telemetry-bench", "Tracing (issue 24)", block, failed)
PY
