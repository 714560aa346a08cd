#!/usr/bin/env bash
# Runs the official Python and TypeScript MCP clients (interop/run.sh) against a fresh
# `warden serve` on its embedded default.
#   scripts/interop.sh [path/to/warden]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/warden}"
source scripts/lib/warden.sh
start_warden "$bin"
interop/run.sh
# A desktop client's way in: stdio to `warden connect`, which relays to Warden, in both
# eras (the Python SDK probes with server/discover, or opens a legacy session).
abs_bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
echo "== interop: the Python SDK's stdio client through warden connect (2026-07-28, then legacy)"
WARDEN_CONNECT="$abs_bin" interop/run.sh python
WARDEN_CONNECT="$abs_bin" WARDEN_PY_MODE=legacy WARDEN_EXPECT_VERSION=2025-11-25 interop/run.sh python
# The README's Python snippet, as a reader would paste it.
echo "== interop: the README's Python snippet"
snippet="$WARDEN_WORK/readme_snippet.py"
awk '/^```python$/ { inside = 1; next } /^```$/ { if (inside) exit } inside' README.md >"$snippet"
if [ ! -s "$snippet" ]; then echo "README.md has no python block" >&2; exit 1; fi
snippet_out="$(interop/python/.venv/bin/python "$snippet")"
if ! grep -q "Hello from Python" <<<"$snippet_out"; then
    echo "the README's Python snippet did not find the note it saved: $snippet_out" >&2
    exit 1
fi
assert_key_not_logged interop
stop_warden

# confirm = "approve" on a tool that declares an outputSchema: both SDKs accept the held
# answer, show its request id, and run the call once an operator approves it.
echo "== interop: a call held for an operator's approval"
cat >"$WARDEN_WORK/approve.toml" <<TOML
[tools.delete_note]
confirm = "approve"
TOML
start_warden "$bin" --config "$WARDEN_WORK/approve.toml"
WARDEN_SCENARIO=approval WARDEN_BIN="$abs_bin" \
    WARDEN_DATA_DIR="$WARDEN_WORK/data" interop/run.sh
assert_key_not_logged interop
