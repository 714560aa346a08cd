#!/usr/bin/env bash
# The gateway benchmark: the echo upstream (warden-bench echo-upstream, Streamable HTTP)
# measured directly and through Warden, in one run, in both eras, with the load tool
# (warden-bench load). Writes the table and the ratios into docs/BENCHMARKS.md.
#   scripts/bench-upstream.sh [requests] [concurrency]
# With BASELINE_WARDEN=path/to/an/older/warden (built with `cargo build --release` from
# another commit, e.g. in a `git worktree`), that binary runs beside this one with the
# same configuration, alternating with it, and the table gives the ratio between them.
# With STORE_POSTGRES_URL=postgres://SUPERUSER@HOST/DB, a Warden with the same
# configuration on a PostgreSQL store (a database and runtime role made for the run,
# dropped after it) runs beside the SQLite one, and the summary compares the two.
# Every Warden's CPU time per call comes from /proc over the measured calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requests="${1:-20000}"
concurrency="${2:-16}"
cargo build --release --locked -p warden -p warden-bench
target="${CARGO_TARGET_DIR:-target}/release"
source scripts/lib/warden.sh

"$target/warden-bench" echo-upstream --listen 127.0.0.1:0 >"$WARDEN_WORK/echo.out" &
echo_pid=$!
kill_on_exit "$echo_pid"
echo_url="$(wait_for_output "$WARDEN_WORK/echo.out" '^listening on http://[^ ]*' "$echo_pid" "echo upstream" 10)"
echo_url="${echo_url#listening on }"

# The limiter runs on every call, but with rates high enough that it never refuses:
# the benchmark measures the gateway's overhead, not its refusals.
cat >"$WARDEN_WORK/warden.toml" <<TOML
[egress]
allow = ["127.0.0.1"]

[rate]
per_key_rpm = 1000000
per_ip_rpm = 10000000
per_session_calls = 1000000000
daily_cost_cap = 1000000000

[[upstream]]
name = "echo"
url = "$echo_url"
TOML
start_warden "$target/warden" --config "$WARDEN_WORK/warden.toml"

# A second Warden, the same but with the audit trail off, to measure what auditing costs.
sed 's/^\[rate\]$/[audit]\nenabled = false\n\n[rate]/' "$WARDEN_WORK/warden.toml" >"$WARDEN_WORK/warden-unaudited.toml"
"$target/warden" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$WARDEN_WORK/unaudited" \
    --config "$WARDEN_WORK/warden-unaudited.toml" >/dev/null 2>"$WARDEN_WORK/unaudited.log" &
unaudited_pid=$!
kill_on_exit "$unaudited_pid"
unaudited_url="$(wait_for_output "$WARDEN_WORK/unaudited.log" 'listening on https?://[^ ]*' "$unaudited_pid" "unaudited warden" 30)"
unaudited_url="${unaudited_url#listening on }"
unaudited_key="$(cat "$WARDEN_WORK/unaudited/admin.key")"

baseline_url=""
if [ -n "${BASELINE_WARDEN:-}" ]; then
    "$BASELINE_WARDEN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$WARDEN_WORK/baseline" \
        --config "$WARDEN_WORK/warden.toml" >/dev/null 2>"$WARDEN_WORK/baseline.log" &
    baseline_pid=$!
    kill_on_exit "$baseline_pid"
    baseline_url="$(wait_for_output "$WARDEN_WORK/baseline.log" 'listening on https?://[^ ]*' "$baseline_pid" "baseline warden" 30)"
    baseline_url="${baseline_url#listening on }"
    baseline_key="$(cat "$WARDEN_WORK/baseline/admin.key")"
fi

postgres_url=""
if [ -n "${STORE_POSTGRES_URL:-}" ]; then
    source scripts/lib/bench-store.sh
    bench_store "$STORE_POSTGRES_URL"
    cat "$WARDEN_WORK/warden.toml" "$WARDEN_WORK/store.toml" >"$WARDEN_WORK/warden-pg.toml"
    echo 'replica = "bench"' >>"$WARDEN_WORK/warden-pg.toml"
    "$target/warden" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$WARDEN_WORK/pg" \
        --config "$WARDEN_WORK/warden-pg.toml" >/dev/null 2>"$WARDEN_WORK/pg.log" &
    postgres_pid=$!
    kill_on_exit "$postgres_pid"
    postgres_url="$(wait_for_output "$WARDEN_WORK/pg.log" 'listening on https?://[^ ]*' "$postgres_pid" "warden on PostgreSQL" 60)"
    postgres_url="${postgres_url#listening on }"
    postgres_key="$("$target/warden" keys add --config "$WARDEN_WORK/warden-pg.toml" --tenant bench --name load --scope write 2>/dev/null)"
fi

load() { "$target/warden-bench" load --requests "$requests" --concurrency "$concurrency" --json "$@"; }
results="$WARDEN_WORK/results.jsonl"
for era in legacy modern; do
    # Alternate the two paths so drift in the machine's state hits both alike.
    for round in 1 2; do
        echo "{\"path\": \"direct\", \"round\": $round, \"load\": $(env -u WARDEN_KEY "$target/warden-bench" load --url "$echo_url" --era "$era" --requests "$requests" --concurrency "$concurrency" --json --pid "$echo_pid")}" >>"$results"
        echo "{\"path\": \"warden\", \"round\": $round, \"load\": $(load --url "$WARDEN_URL" --era "$era" --pid "$warden_pid")}" >>"$results"
        echo "{\"path\": \"unaudited\", \"round\": $round, \"load\": $(WARDEN_KEY="$unaudited_key" load --url "$unaudited_url" --era "$era" --pid "$unaudited_pid")}" >>"$results"
        if [ -n "$baseline_url" ]; then
            echo "{\"path\": \"baseline\", \"round\": $round, \"load\": $(WARDEN_KEY="$baseline_key" load --url "$baseline_url" --era "$era" --pid "$baseline_pid")}" >>"$results"
        fi
        if [ -n "$postgres_url" ]; then
            echo "{\"path\": \"postgres\", \"round\": $round, \"load\": $(WARDEN_KEY="$postgres_key" load --url "$postgres_url" --era "$era" --pid "$postgres_pid")}" >>"$results"
        fi
    done
done
assert_key_not_logged bench

python3 - "$results" "$requests" "$concurrency" "${BASELINE_LABEL:-}" <<'PY'
import json, os, platform, re, subprocess, sys
path, requests, concurrency, baseline_label = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = [json.loads(line) for line in open(path)]
def best(path, era):
    # The better of two rounds for each path: noise only ever slows a run down.
    runs = [r["load"] for r in rows if r["path"] == path and r["load"]["era"] == era]
    return max(runs, key=lambda r: r["rps"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
lines = [
    "<!-- upstream-bench:start -->",
    f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}. "
    f"Command: `scripts/bench-upstream.sh {requests} {concurrency}` "
    f"({requests} `tools/call` of `echo` with 64 bytes of text at concurrency {concurrency}, after 500 warm-up calls; "
    "the load tool, Warden and the echo upstream share the machine; best of two alternating rounds per path).",
    "",
    "| era | path | req/s | p50 | p90 | p99 | CPU/call (server) | CPU/call (machine) | errors |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
]
def row(era, name, r):
    return (f"| {era} | {name} | {r['rps']:.0f} | {r['p50_us']:.0f} µs | {r['p90_us']:.0f} µs | {r['p99_us']:.0f} µs "
            f"| {r['cpu_us_per_call']:.0f} µs | {r['machine_cpu_us_per_call']:.0f} µs | {r['errors']} |")
summary = []
for era in ("legacy", "modern"):
    d, w = best("direct", era), best("warden", era)
    for name, r in (("direct (server: the echo upstream)", d), ("through Warden", w)):
        lines.append(row(era, name, r))
    u = best("unaudited", era)
    lines.append(row(era, "through Warden, audit off", u))
    line = (f"- {era}: throughput through Warden is **{w['rps'] / d['rps']:.2f}×** direct; "
            f"p50 added latency **{(w['p50_us'] - d['p50_us']) / 1000:.3f} ms**; "
            f"with the audit trail on, **{w['rps'] / u['rps']:.2f}×** the throughput with it off")
    if any(r["path"] == "baseline" for r in rows):
        b = best("baseline", era)
        label = baseline_label or "the baseline binary"
        lines.append(row(era, f"through {label}", b))
        line += f"; **{w['rps'] / b['rps']:.2f}×** the throughput of {label}"
    if any(r["path"] == "postgres" for r in rows):
        p = best("postgres", era)
        lines.append(row(era, "through Warden, PostgreSQL store", p))
        line += (f"; on a PostgreSQL store (same machine, loopback), **{p['rps'] / w['rps']:.2f}×** the throughput of the SQLite store, "
                 f"p50 added **{(p['p50_us'] - d['p50_us']) / 1000:.3f} ms** (SQLite: {(w['p50_us'] - d['p50_us']) / 1000:.3f} ms), "
                 f"Warden's CPU per call **{p['cpu_us_per_call']:.0f} µs** (SQLite: {w['cpu_us_per_call']:.0f} µs), "
                 f"the machine's **{p['machine_cpu_us_per_call']:.0f} µs** (SQLite: {w['machine_cpu_us_per_call']:.0f} µs; PostgreSQL's own work included)")
    summary.append(line + ".")
lines += [""] + summary + ["<!-- upstream-bench:end -->"]
block = "\n".join(lines)
sys.path.insert(0, "scripts/lib")
from bench_doc import write_block
write_block("upstream-bench", "Gateway overhead: echo upstream, direct vs through Warden", block, any(r["load"]["errors"] for r in rows))
PY
