#!/usr/bin/env bash
# Warden's memory: idle with the embedded notes server (its zero-configuration start),
# what 10,000 idle legacy sessions add (`warden-bench sessions`), and what a 50 MB
# upstream result (stdio; HTTP as JSON and as SSE) and a 50 MB request body add to the
# peak. Resident memory (VmRSS, and VmHWM for peaks) from /proc. Writes the figures into
# docs/BENCHMARKS.md.
#   scripts/bench-memory.sh [sessions]     (default 10000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sessions="${1:-10000}"
source scripts/lib/release.sh
build_release
target="${CARGO_TARGET_DIR:-target}/release"
source scripts/lib/warden.sh

# The defaults, but with room for the sessions from one key and one address: the
# limits would otherwise (rightly) refuse a client opening 10,000 of them.
cat >"$WARDEN_WORK/warden.toml" <<TOML
[limits]
max_sessions_per_key = $sessions

[sessions]
max_sessions = $sessions

[rate]
per_key_rpm = 1000000
per_ip_rpm = 10000000
TOML
start_warden "$target/warden" --config "$WARDEN_WORK/warden.toml"
# Idle: started, its catalogue loaded, nothing asked yet.
sleep 3
idle_kib="$(awk '/^VmRSS:/ { print $2 }' "/proc/$warden_pid/status")"
result="$("$target/warden-bench" sessions --url "$WARDEN_URL" --sessions "$sessions" --pid "$warden_pid")"
assert_key_not_logged bench-memory
stop_warden

# 50 MB messages: the test fixtures with their `flood` tool, behind one Warden.
fixtures="$PWD/crates/warden/tests/fixtures"
python3 "$fixtures/http_server.py" --flood >"$WARDEN_WORK/http-fixture.log" 2>&1 &
kill_on_exit $!
http_url="$(wait_for_output "$WARDEN_WORK/http-fixture.log" 'http://[^ ]*' $! http-fixture 10)"
cat >"$WARDEN_WORK/flood.toml" <<TOML
[[upstream]]
name = "stdio"
command = ["$(python3 -c 'import sys; print(sys.executable)')", "$fixtures/stdio_server.py"]
env = { FIXTURE_FLOOD = "1" }

[[upstream]]
name = "http"
url = "$http_url"

[egress]
allow = ["127.0.0.1"]
TOML
start_warden "$target/warden" --config "$WARDEN_WORK/flood.toml"
floods="$(python3 scripts/lib/flood.py "$WARDEN_URL" "$WARDEN_KEY" "$warden_pid")"
assert_key_not_logged bench-memory

# How much of the layout list (crates/warden/build.rs) this build still names: code
# changes rename functions, and a stale list packs less, so a start touches more code.
order=crates/warden/symbol-order.txt
listed="$(sort -u "$order" | wc -l)"
named="$(nm "$target/warden" | awk '{ print $NF }' | sort -u | comm -12 - <(sort -u "$order") | wc -l)"
if [ $((named * 10)) -lt $((listed * 9)) ]; then
    echo "warning: this build names only $named of the $listed functions in $order; rerun scripts/order-symbols.sh" >&2
fi

python3 - "$idle_kib" "$result" "$sessions" "$floods" "$named" "$listed" <<'PY'
import json, sys
idle_kib, result, sessions = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
floods = json.loads(sys.argv[4])
named, listed = int(sys.argv[5]), int(sys.argv[6])
sys.path.insert(0, "scripts/lib")
from bench_doc import machine, write_block
added = (result["rss_after_kib"] - result["rss_before_kib"]) / 1024
block = "\n".join([
    "<!-- memory-bench:start -->",
    machine() + " "
    f"Command: `scripts/bench-memory.sh {sessions}` (release build; resident memory, VmRSS).",
    "",
    "| what | resident memory |",
    "|---|---:|",
    f"| idle: `warden serve` with the embedded notes server, 3 s after start | {idle_kib / 1024:.1f} MB |",
    f"| before the sessions (the same process) | {result['rss_before_kib'] / 1024:.1f} MB |",
    f"| after {result['sessions']:,} idle legacy sessions | {result['rss_after_kib'] / 1024:.1f} MB |",
    "",
    f"{result['sessions']:,} idle legacy sessions add **{added:.1f} MB**, "
    f"**{result['bytes_per_session'] / 1024:.1f} KiB** a session "
    "(targets, issue 23: idle at most 20 MB; 10,000 idle sessions at most 50 MB). "
    f"The build names {named:,} of the {listed:,} functions `crates/warden/symbol-order.txt` "
    "lays out first (a list recorded before later code changes names fewer, and the idle "
    "figure grows: rerun `scripts/order-symbols.sh`).",
    "",
    "50 MB messages, one at a time, after a 1 MB one of the same kind (a Warden fronting",
    "the test fixtures: `crates/warden/tests/fixtures`, `flood` tool). The rise is of the",
    "peak resident memory (VmHWM); the client is shown the first `max_result_bytes`",
    "(256 KiB) and a marker. Target (issue 23): at most 16 MB above the cut.",
    "",
    "| 50 MB of | outcome | peak rise |",
    "|---|---|---:|",
    *[f"| {f['what']} | {f['outcome']} | {f['rise_kib'] / 1024:.1f} MB |" for f in floods],
    "<!-- memory-bench:end -->",
])
write_block("memory-bench", "Memory: idle, 10,000 idle legacy sessions, 50 MB messages", block, False)
PY
