#!/usr/bin/env bash
# The scaling curves (issue 23): Warden's CPU per tools/call on the echo benchmark as the
# work grows, each dimension alone:
#   tools in the catalogue  10 → 10,000      (echo upstream with --tools N)
#   keys in the store       10 → 1,000,000   (warden-bench fill-keys into a stopped Warden)
#   sessions                1 → 1,000        (legacy; the calls go to each in turn)
#   argument size           1 KB → 1 MB      (the text echoed)
# Every point is a fresh Warden (release build) and a fresh load run (legacy era,
# concurrency 16); CPU from /proc over the measured calls. Writes the charts to
# docs/images/scaling-*.svg (warden-bench plot) and the table into docs/BENCHMARKS.md.
#   scripts/bench-scaling.sh [requests]     (default 5000 a point; fewer for big arguments)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requests="${1:-5000}"
source scripts/lib/release.sh
build_release
target="${CARGO_TARGET_DIR:-target}/release"
bench="$target/warden-bench"
source scripts/lib/warden.sh
source scripts/lib/bench-echo.sh
results="$WARDEN_WORK/scaling.jsonl"

# The benchmarks' configuration, with room for 1,000 sessions from one key and for a
# 1 MB argument echoed back whole (a cut result would be less work, not more).
config() {
    write_bench_config "$WARDEN_WORK/warden.toml"
    cat >>"$WARDEN_WORK/warden.toml" <<TOML

[limits]
max_body_bytes = 4194304
max_string_bytes = 4194304
max_sessions_per_key = 2000

[results]
max_result_bytes = 4194304
TOML
}

# point DIMENSION X [load args...]: one measurement of the running Warden.
point() {
    local dimension="$1" x="$2"
    shift 2
    WARDEN_KEY="$WARDEN_KEY" "$bench" load --url "$WARDEN_URL" --pid "$warden_pid" --json "$@" |
        python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r.update(dimension=sys.argv[1], x=float(sys.argv[2])); print(json.dumps(r))' "$dimension" "$x" >>"$results"
    tail -n1 "$results"
}

# restart_echo [echo args...]: a fresh echo upstream (sets echo_url), and the config for it.
echo_pid=""
restart_echo() {
    if [ -n "$echo_pid" ]; then kill "$echo_pid" 2>/dev/null || true; wait "$echo_pid" 2>/dev/null || true; fi
    "$bench" echo-upstream --listen 127.0.0.1:0 "$@" >"$WARDEN_WORK/echo.out" &
    echo_pid=$!
    kill_on_exit "$echo_pid"
    echo_url="$(wait_for_output "$WARDEN_WORK/echo.out" '^listening on http://[^ ]*' "$echo_pid" "echo upstream" 10)"
    echo_url="${echo_url#listening on }"
    config
}

# fresh_warden: a Warden on an empty data directory.
fresh_warden() {
    stop_warden
    rm -rf "$WARDEN_WORK/data"
    start_warden "$target/warden" --config "$WARDEN_WORK/warden.toml"
}

for tools in 10 100 1000 10000; do
    restart_echo --tools "$tools"
    fresh_warden
    point tools "$tools" --requests "$requests"
done

restart_echo
for keys in 10 1000 100000 1000000; do
    fresh_warden
    stop_warden
    # The admin key is one of them.
    "$bench" fill-keys --data-dir "$WARDEN_WORK/data" --keys $((keys - 1))
    start_warden "$target/warden" --config "$WARDEN_WORK/warden.toml"
    point keys "$keys" --requests "$requests"
done

for sessions in 1 10 100 1000; do
    fresh_warden
    point sessions "$sessions" --requests "$requests" --sessions "$sessions"
done

for bytes in 1024 10240 102400 1048576; do
    fresh_warden
    # The same volume of text at each size, at least 200 calls.
    calls=$((requests * 1024 * 20 / bytes))
    calls=$((calls < 200 ? 200 : (calls > requests ? requests : calls)))
    point args "$bytes" --requests "$calls" --warmup 50 --text-bytes "$bytes"
done
assert_key_not_logged bench-scaling

"$bench" plot --input "$results" --out docs/images

python3 - "$results" "$requests" <<'PY'
import json, sys
points = [json.loads(line) for line in open(sys.argv[1])]
sys.path.insert(0, "scripts/lib")
from bench_doc import machine, write_block
names = {"tools": "tools in the catalogue", "keys": "keys in the store",
         "sessions": "legacy sessions", "args": "argument size"}
rows, summary = [], []
for dimension in ["tools", "keys", "sessions", "args"]:
    series = sorted((p for p in points if p["dimension"] == dimension), key=lambda p: p["x"])
    for p in series:
        x = f"{int(p['x']):,} B" if dimension == "args" else f"{int(p['x']):,}"
        rows.append(f"| {names[dimension]} | {x} | {p['requests']:,} | {p['cpu_us_per_call']:.0f} µs | {p['p50_us']:.0f} µs | {p['errors']} |")
    first, last = series[0], series[-1]
    growth = last["cpu_us_per_call"] / first["cpu_us_per_call"]
    if dimension == "args":
        size = last["x"] / first["x"]
        summary.append(f"- {names[dimension]}: ×{size:,.0f} in size, ×{growth:.1f} in CPU "
                       f"(target: at most linear){' — met' if growth <= size else ' — missed'}.")
    else:
        summary.append(f"- {names[dimension]}: ×{growth:.2f} from {int(first['x']):,} to {int(last['x']):,} "
                       f"(target: at most ×2){' — met' if growth <= 2 else ' — missed'}.")
failed = any(p["errors"] for p in points)
block = "\n".join([
    "<!-- scaling-bench:start -->",
    machine() + " "
    f"Command: `scripts/bench-scaling.sh {sys.argv[2]}` (release build; a fresh Warden a point; "
    "legacy era, concurrency 16; Warden's CPU from /proc over the measured calls).",
    "",
    "| dimension | value | calls | Warden CPU per call | p50 | errors |",
    "|---|---:|---:|---:|---:|---:|",
    *rows,
    "",
    *summary,
    "",
    "![CPU per call by tools](images/scaling-tools.svg)",
    "![CPU per call by keys](images/scaling-keys.svg)",
    "![CPU per call by sessions](images/scaling-sessions.svg)",
    "![CPU per call by argument size](images/scaling-args.svg)",
    "<!-- scaling-bench:end -->",
])
write_block("scaling-bench", "Scaling: tools, keys, sessions, argument size (issue 23)", block, failed)
PY
