#!/usr/bin/env bash
# Drive a running Warden with the official MCP client SDKs (Python mcp 2.3.0, TypeScript sdk 1.32.2).
#
#   WARDEN_URL=http://127.0.0.1:8080/mcp WARDEN_KEY=... interop/run.sh [python|ts]...
#
# With no arguments both clients run. Sets up interop/python/.venv and interop/ts/node_modules on
# first use. Exits non-zero if any client fails. Optional: WARDEN_EXPECT_VERSION (python, default
# 2026-07-28), WARDEN_TS_EXPECT_VERSION (ts, default 2025-11-25), WARDEN_PY_MODE, WARDEN_TIMEOUT,
# WARDEN_DEBUG=1 for stack traces, WARDEN_SCENARIO=upstream (Warden fronting server-everything).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${WARDEN_URL:?set WARDEN_URL, e.g. http://127.0.0.1:8080/mcp}"
: "${WARDEN_KEY:?set WARDEN_KEY to a Warden API key}"
export WARDEN_URL WARDEN_KEY

clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(python ts)

source "$here/setup.sh"

passed=0
failed=0
failed_names=()
for c in "${clients[@]}"; do
    rc=0
    case "$c" in
        python)
            setup_python
            "$here/python/.venv/bin/python" "$here/python/client.py" || rc=$?
            ;;
        ts)
            setup_ts
            (cd "$here/ts" && node client.mjs) || rc=$?
            ;;
        *)
            echo "interop: unknown client '$c' (expected python or ts)" >&2
            exit 2
            ;;
    esac
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_names+=("$c")
    fi
done

echo "interop: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    echo "interop: failing client(s): ${failed_names[*]}" >&2
    exit 1
fi
