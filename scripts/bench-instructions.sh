#!/usr/bin/env bash
# Instructions per call: Warden in front of the echo upstream, run under callgrind
# (valgrind), which counts every instruction every thread of Warden executes. The count is
# the same for the same binary and calls whatever else the machine is doing, so a change
# to the hot path shows in it exactly, where timings one call at a time move by tens of
# microseconds from run to run. It is not a timing: callgrind sees no cache misses and no
# system calls' kernel work; it counts SHA-256 without the CPU's SHA instructions; and it
# counts a large copy (`rep movsb`, which glibc's memcpy, memmove and memset use past a
# few kilobytes) as one instruction per byte. So the table gives the copies' share apart,
# and the instructions without them. Writes the table into docs/BENCHMARKS.md.
#   scripts/bench-instructions.sh [calls]
# Each era: 300 calls uncounted, then `calls` (default 1000) counted, one at a time.
# With BASELINE_WARDEN=path/to/an/older/warden (BASELINE_LABEL names it), that binary is
# counted the same way and the table gives the ratio.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
calls="${1:-1000}"
source scripts/lib/release.sh
build_release
target="${CARGO_TARGET_DIR:-target}/release"
source scripts/lib/warden.sh
source scripts/lib/bench-echo.sh
start_echo_upstream "$target/warden-bench"
write_bench_config "$WARDEN_WORK/warden.toml"
results="$WARDEN_WORK/results"

# count NAME BIN ERA: appends "NAME ERA instructions copies" for BIN's counted calls.
count() {
    local name="$1" bin="$2" era="$3" run="$WARDEN_WORK/$1-$3" url pid key
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$run.out" \
        "$bin" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$run" \
        --config "$WARDEN_WORK/warden.toml" >/dev/null 2>"$run.log" &
    pid=$!
    kill_on_exit "$pid"
    url="$(wait_for_output "$run.log" 'listening on https?://[^ ]*' "$pid" "warden ($name) under valgrind" 120)"
    url="${url#listening on }"
    key="$(cat "$run/admin.key")"
    WARDEN_KEY="$key" "$target/warden-bench" load --url "$url" --era "$era" --requests 300 \
        --concurrency 1 --warmup 0 >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    WARDEN_KEY="$key" "$target/warden-bench" load --url "$url" --era "$era" --requests "$calls" \
        --concurrency 1 --warmup 0 >/dev/null
    # The dump on request holds exactly the counted calls (the one at exit, what came after).
    callgrind_control -d "$pid" >/dev/null 2>&1
    for _ in $(seq 1 100); do
        grep -q '^totals:' "$run.out.1" 2>/dev/null && break
        sleep 0.1
    done
    grep -q '^totals:' "$run.out.1" || { echo "callgrind wrote no counts for $name ($era)" >&2; exit 1; }
    kill -INT "$pid"
    wait "$pid" || true
    WARDEN_KEY="$key" WARDEN_LOG_FILE="$run.log" assert_key_not_logged "$name"
    local copies
    copies="$(callgrind_annotate "$run.out.1" 2>/dev/null | awk '/__mem(cpy|move|set)/ { gsub(",", "", $1); sum += $1 } END { print sum + 0 }')"
    echo "$name $era $(awk '/^totals:/ { print $2 }' "$run.out.1") $copies" >>"$results"
}

for era in legacy modern; do
    count warden "$target/warden" "$era"
    if [ -n "${BASELINE_WARDEN:-}" ]; then
        count baseline "$BASELINE_WARDEN" "$era"
    fi
done

python3 - "$results" "$calls" "${BASELINE_LABEL:-}" <<'PY'
import os, sys
path, calls, baseline_label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counted = {}
for line in open(path):
    name, era, total, copies = line.split()
    counted[(name, era)] = (int(total) / calls, int(copies) / calls)
sys.path.insert(0, "scripts/lib")
from bench_doc import machine, write_block
baseline = os.environ.get("BASELINE_WARDEN")
label = baseline_label or "the baseline binary"
lines = [
    "<!-- instructions-bench:start -->",
    machine() + " Command: "
    f"`{'BASELINE_WARDEN=… ' if baseline else ''}scripts/bench-instructions.sh {calls}` "
    f"({calls} `tools/call` of `echo` with 64 bytes of text, one at a time, after 300 uncounted; "
    "every thread of Warden, counted by callgrind; memcpy, memmove and memset, which it "
    "counts per byte past a few kilobytes, apart).",
    "",
    "| era | binary | instructions per call | of which copies | without copies |"
    + (" ratio without copies |" if baseline else ""),
    "|---|---|---:|---:|---:|" + ("---:|" if baseline else ""),
]
def row(era, binary, counts, ratio=None):
    total, copies = counts
    cells = f"| {era} | {binary} | {total:,.0f} | {copies:,.0f} | {total - copies:,.0f} |"
    return cells + (f" {ratio:.2f} |" if ratio is not None else "")
for era in ("legacy", "modern"):
    ours = counted[("warden", era)]
    if baseline:
        theirs = counted[("baseline", era)]
        lines.append(row(era, label, theirs, 1.0))
        lines.append(row(era, "this build", ours, (ours[0] - ours[1]) / (theirs[0] - theirs[1])))
    else:
        lines.append(row(era, "this build", ours))
lines.append("<!-- instructions-bench:end -->")
write_block("instructions-bench", "Instructions per call (issue 23)", "\n".join(lines), failed=False)
PY
