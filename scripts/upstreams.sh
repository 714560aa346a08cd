#!/usr/bin/env bash
# Runs the official Python (modern era) and TypeScript (legacy era) MCP clients' `upstream`
# scenario against Warden fronting @modelcontextprotocol/server-everything (pinned in
# interop/ts/package.json, a legacy-era server), first as a stdio child, then as a
# Streamable HTTP upstream; then their `asking` scenario against Warden fronting a
# modern-era server on the Python SDK (interop/python/modern_upstream.py) that asks the
# client for input mid-call; then their `sse` scenario against Warden fronting a server
# that speaks only the deprecated HTTP+SSE transport (interop/python/sse_upstream.py).
#   scripts/upstreams.sh [path/to/warden]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/warden}"
everything="$PWD/interop/ts/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
# Warden spawns the stdio upstream at start, so the package must be there before it runs.
if [ ! -f "$everything" ]; then
    (cd interop/ts && npm ci --no-audit --no-fund --loglevel=error)
fi
source scripts/lib/warden.sh
node="$(command -v node)" # absolute: Warden does not search PATH for us

passed=0
failed=0
# run_clients SCENARIO LABEL: both clients against the running Warden; on failure,
# Warden's log too.
run_clients() {
    local c ok=1
    for c in python ts; do
        if WARDEN_SCENARIO="$1" interop/run.sh "$c"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1)); ok=0
            echo "upstreams: FAIL $c against $2" >&2
        fi
    done
    if [ "$ok" -eq 0 ]; then echo "--- warden log ($2) ---" >&2; cat "$WARDEN_LOG_FILE" >&2; fi
    # The log restarts with each start_warden: check it before it goes.
    assert_key_not_logged "upstreams ($2)"
}

# through_warden LABEL SCENARIO: Warden configured with the TOML on stdin, both clients'
# SCENARIO against it, then Warden stopped.
through_warden() {
    cat >"$WARDEN_WORK/$1.toml"
    start_warden "$bin" --config "$WARDEN_WORK/$1.toml"
    run_clients "$2" "$1"
    stop_warden
}

echo "== upstreams: server-everything as a stdio child"
through_warden stdio upstream <<TOML
[[upstream]]
name = "everything"
command = ["$node", "$everything", "stdio"]
TOML

echo "== upstreams: server-everything over Streamable HTTP"
# It listens on every interface (no host setting), so it lives only as long as this script.
http_upstream server-everything "listening on port {port}" 10 "$node" "$everything" streamableHttp
through_warden http upstream <<TOML
[egress]
allow = ["127.0.0.1"]

[[upstream]]
name = "everything"
url = "http://127.0.0.1:$port/mcp"
TOML

echo "== upstreams: a modern upstream that asks for input (Python SDK server over Streamable HTTP)"
here="$PWD/interop"
source interop/setup.sh
setup_python
http_upstream modern-upstream "StreamableHTTP session manager started" 20 \
    interop/python/.venv/bin/python interop/python/modern_upstream.py
through_warden modern asking <<TOML
[egress]
allow = ["127.0.0.1"]

[[upstream]]
name = "asker"
url = "http://127.0.0.1:$port/mcp"
TOML

echo "== upstreams: an upstream that speaks only the deprecated HTTP+SSE transport (Python SDK)"
http_upstream sse-upstream "Uvicorn running|sse upstream listening" 20 \
    interop/python/.venv/bin/python interop/python/sse_upstream.py
through_warden sse sse <<TOML
[egress]
allow = ["127.0.0.1"]

[[upstream]]
name = "legacy"
url = "http://127.0.0.1:$port/sse"
transport = "sse"
TOML

echo "upstreams: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
