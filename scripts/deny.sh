#!/usr/bin/env bash
# `cargo deny check bans licenses sources` with the committed deny.toml: one version of
# each crate where possible (remaining duplicates are warned about), licenses allowed
# by name, crates.io the only source. Installs cargo-deny (pinned) into
# interop/.tools/ (ignored) when the machine has none. The advisory check needs the
# network's advisory database: `cargo deny check advisories` (docs/FUZZING.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version="0.20.2"
tools="$PWD/interop/.tools"
export PATH="$tools/bin:$PATH"
if ! cargo deny --version 2>/dev/null | grep -q "$version"; then
    echo "deny: installing cargo-deny $version into interop/.tools" >&2
    cargo install --locked --quiet "cargo-deny@$version" --root "$tools"
fi
cargo deny --log-level error check bans licenses sources
