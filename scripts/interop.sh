#!/usr/bin/env bash
# Runs the official Python and TypeScript MCP clients (interop/run.sh) against a fresh
# `warden serve` on its embedded default.
#   scripts/interop.sh [path/to/warden]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/warden.sh
start_warden "${1:-${CARGO_TARGET_DIR:-target}/debug/warden}"
interop/run.sh
assert_key_not_logged interop
