#!/usr/bin/env bash
# Starts `warden serve` on a free loopback port with a throwaway data directory, runs the
# official Python and TypeScript MCP clients against it (interop/run.sh), and stops it.
#   scripts/interop.sh [path/to/warden]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/warden}"

work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/stdout" 2>"$work/stderr" &
pid=$!
url=""
for _ in $(seq 1 100); do
    url="$(grep -o 'listening on http://[^ ]*' "$work/stderr" | head -n1 | sed 's/^listening on //')" || true
    [ -n "$url" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then cat "$work/stderr" >&2; echo "warden exited early" >&2; exit 1; fi
    sleep 0.1
done
[ -n "$url" ] || { cat "$work/stderr" >&2; echo "warden did not start" >&2; exit 1; }

key="$(cat "$work/data/admin.key")"
WARDEN_URL="$url" WARDEN_KEY="$key" interop/run.sh
# The key must not have reached the log.
if grep -qF "$key" "$work/stderr"; then echo "interop: the admin key appeared in the log" >&2; exit 1; fi
