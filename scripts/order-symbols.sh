#!/usr/bin/env bash
# Writes crates/warden/symbol-order.txt: the functions a release `warden serve` runs, for
# the linker to lay out together at the front of the code (see crates/warden/build.rs).
# A start touches code all over the binary, and the kernel maps 64 KiB of it around each
# first touch: 16 of the 22 MB of code were resident in an idle Warden. Packed together,
# what a start and a call run is a few MB.
#   scripts/order-symbols.sh
# Records, under callgrind (which sees every function that runs, once or often), a start
# on the embedded default with the idle seconds after it, and a start in front of the echo
# upstream with calls of both eras through it; the start's functions go first, then the
# calls', each part busiest first. The file names symbols of the release build as it is
# now (its symbol table is kept for this, Cargo.toml); after code changes, names that no
# longer exist are skipped by the linker and new ones land after the ordered ones, so a
# stale file only packs less.
# Needs valgrind.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
# The build `cargo build --release` makes, whose names the list must match.
source scripts/lib/release.sh
build_release
target="${CARGO_TARGET_DIR:-target}/release"
source scripts/lib/warden.sh
source scripts/lib/bench-echo.sh
work="$WARDEN_WORK"

# record NAME CONFIG-ARGS...: `warden serve` under callgrind until the next `stop`.
record() {
    local name="$1"
    shift
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.out" \
        "$target/warden" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --data-dir "$work/$name-data" "$@" >/dev/null 2>"$work/$name.log" &
    recorded=$!
    kill_on_exit "$recorded"
    for _ in $(seq 1 600); do
        url="$(grep -oE 'listening on https?://[^ ]*' "$work/$name.log" | head -n1 || true)"
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { cat "$work/$name.log" >&2; echo "warden did not start under valgrind" >&2; exit 1; }
    url="${url#listening on }"
}
stop() {
    kill -INT "$recorded"
    wait "$recorded" || true
}

record idle
sleep 3
stop

# The gateway benchmark's configuration: limits high enough never to refuse.
start_echo_upstream "$target/warden-bench"
write_bench_config "$work/echo.toml"
record calls --config "$work/echo.toml"
for era in legacy modern; do
    WARDEN_KEY="$(cat "$work/calls-data/admin.key")" "$target/warden-bench" load --url "$url" \
        --era "$era" --requests 200 --concurrency 4 --warmup 0 >/dev/null
done
stop

# Every function of the binary that ran: those of the start first (what an idle Warden
# keeps resident), then those only the calls ran, each part busiest first.
nm --defined-only "$target/warden" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/defined"
python3 - "$work/defined" "$work/idle.out" "$work/calls.out" >"$work/order" <<'PY'
import collections, re, sys

def costs(path):
    """Each function's own instructions in a callgrind profile. The format: `fn=(id) name`
    the first time a name appears (in `fn=` or `cfn=`), `fn=(id)` after; cost lines
    follow their function; the line after `calls=` is the call's inclusive cost."""
    cost, names, current, after_call = collections.Counter(), {}, None, False
    for line in open(path, errors="replace"):
        match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if match:
            if match.group(2):
                names[match.group(1)] = match.group(2).strip()
            if line.startswith("fn="):
                current = names.get(match.group(1))
        elif line.startswith("calls="):
            after_call = True
        elif line[:1] in "+-*0123456789" and line.strip():
            fields = line.split()
            if not after_call and current and len(fields) >= 2:
                cost[current] += int(fields[1])
            after_call = False
    return cost

defined = set(open(sys.argv[1]).read().split())
start, calls = costs(sys.argv[2]), costs(sys.argv[3])
ordered = sorted((name for name in start if name in defined), key=lambda name: -start[name])
ordered += sorted((name for name in calls if name in defined and name not in start), key=lambda name: -calls[name])
print("\n".join(ordered))
PY
# A run that recorded little (Warden failed under valgrind) must not replace the list.
count="$(wc -l <"$work/order")"
[ "$count" -ge 1000 ] || { echo "only $count functions recorded; the list is left as it was" >&2; exit 1; }
mv "$work/order" crates/warden/symbol-order.txt
echo "wrote crates/warden/symbol-order.txt ($count functions)"
