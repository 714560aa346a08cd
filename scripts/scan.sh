#!/usr/bin/env bash
# `warden scan` against two servers, each reached directly and then behind Warden:
# @modelcontextprotocol/server-everything over Streamable HTTP (pinned in
# interop/ts/package.json) and Warden's own HTTP test fixture
# (crates/warden/tests/fixtures/http_server.py). Behind Warden each must grade A with no
# finding of medium severity or more; reached directly, each must fail the
# authentication, browser, rate-limit and validation rules that Warden closes. Then
# server-everything over stdio (`warden scan --stdio`).
#   scripts/scan.sh [path/to/warden] [--write-docs]
# With --write-docs the side-by-side tables (`warden scan --compare`) go into
# docs/SCAN.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/warden}"
write_docs="${2:-}"
everything="$PWD/interop/ts/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
if [ ! -f "$everything" ]; then
    (cd interop/ts && npm ci --no-audit --no-fund --loglevel=error)
fi
source scripts/lib/warden.sh
node="$(command -v node)"

# failed REPORT SEVERITIES: the ids of the rules REPORT (JSON) failed, of those severities.
failed() {
    python3 - "$1" "$2" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
wanted = sys.argv[2].split(",")
print(" ".join(f["id"] for f in report["findings"] if f["result"] == "fail" and f["severity"] in wanted))
PY
}

# scan_pair LABEL DIRECT_URL: scans DIRECT_URL, then Warden in front of it, and checks both.
scan_pair() {
    local label="$1" direct="$2" rule
    cat >"$WARDEN_WORK/$label.toml" <<TOML
[egress]
allow = ["127.0.0.1"]

[[upstream]]
name = "$label"
url = "$direct"
TOML
    start_warden "$bin" --config "$WARDEN_WORK/$label.toml"
    export SCAN_AUTH="Bearer $WARDEN_KEY"
    # Side by side first: the full scan below guesses keys, after which Warden refuses
    # this address for a minute.
    "$bin" scan --allow-calls --compare "$direct" "$WARDEN_URL" -H "Authorization: env:SCAN_AUTH" \
        --skip WS-AUTH-009 >"$WARDEN_WORK/$label.compare.md"
    cat "$WARDEN_WORK/$label.compare.md"
    "$bin" scan --allow-calls "$direct" --format json --output "$WARDEN_WORK/$label.direct.json"
    # The full scan with a key of its own: the comparison spent the admin key's rate for
    # this minute, and the scan's fan-out probe needs a fresh one.
    SCAN_AUTH="Bearer $("$bin" keys add --data-dir "$WARDEN_WORK/data" --tenant default \
        --name "scan-$label" --scope admin 2>/dev/null)"
    "$bin" scan --allow-calls "$WARDEN_URL" -H "Authorization: env:SCAN_AUTH" --format json \
        --output "$WARDEN_WORK/$label.warden.json" --fail-under A
    local serious
    serious="$(failed "$WARDEN_WORK/$label.warden.json" critical,high,medium)"
    if [ -n "$serious" ]; then
        echo "scan: $label behind Warden has security findings: $serious" >&2
        exit 1
    fi
    local direct_failed
    direct_failed="$(failed "$WARDEN_WORK/$label.direct.json" critical,high,medium,low,info)"
    for rule in WS-AUTH-001 WS-WEB-004 WS-WEB-005 WS-AVL-002; do
        case " $direct_failed " in
            *" $rule "*) ;;
            *) echo "scan: $label reached directly should fail $rule (failed: $direct_failed)" >&2; exit 1 ;;
        esac
    done
    case " $direct_failed " in
        *" WS-VAL-"*) ;;
        *) echo "scan: $label reached directly should fail a validation rule (failed: $direct_failed)" >&2; exit 1 ;;
    esac
    if grep -qF -e "$WARDEN_KEY" -e "${SCAN_AUTH#Bearer }" "$WARDEN_WORK"/"$label".*; then
        echo "scan: the key reached a report" >&2
        exit 1
    fi
    assert_key_not_logged "scan ($label)"
    stop_warden
}

echo "== scan: server-everything over Streamable HTTP, direct and behind Warden"
http_upstream server-everything "listening on port {port}" 10 "$node" "$everything" streamableHttp
scan_pair everything "http://127.0.0.1:$port/mcp"

echo "== scan: Warden's HTTP test fixture, direct and behind Warden"
python3 crates/warden/tests/fixtures/http_server.py >"$WARDEN_WORK/fixture.log" 2>/dev/null &
fixture_pid=$!
kill_on_exit "$fixture_pid"
fixture_url="$(wait_for_output "$WARDEN_WORK/fixture.log" 'http://127.0.0.1:[0-9]+/mcp' "$fixture_pid" fixture 10)"
scan_pair fixture "$fixture_url"

echo "== scan: server-everything over stdio"
"$bin" scan --allow-calls --stdio --format json --output "$WARDEN_WORK/stdio.json" -- "$node" "$everything" stdio
python3 - "$WARDEN_WORK/stdio.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
assert report["tools"] > 0, "server-everything over stdio listed no tools"
judged = {f["id"] for f in report["findings"] if f["result"] != "skip"}
for rule in ("WS-VAL-001", "WS-VAL-004", "WS-DEF-001"):
    assert rule in judged, f"{rule} was not judged over stdio"
print(f"scan: server-everything over stdio grades {report['grade']} ({report['score']})")
PY

if [ "$write_docs" = "--write-docs" ]; then
    python3 - "$WARDEN_WORK/everything.compare.md" "$WARDEN_WORK/fixture.compare.md" <<'PY'
import re, sys
doc = open("docs/SCAN.md").read()
for name, path in zip(["everything", "fixture"], sys.argv[1:]):
    table = open(path).read().strip()
    # Ports change from run to run; the table says which server, not where it ran.
    table = re.sub(r"http://127\.0\.0\.1:\d+/mcp", "http://127.0.0.1:PORT/mcp", table)
    start, end = f"<!-- scan-{name}:start -->", f"<!-- scan-{name}:end -->"
    doc = re.sub(re.escape(start) + ".*?" + re.escape(end), f"{start}\n{table}\n{end}", doc, flags=re.S)
open("docs/SCAN.md", "w").write(doc)
PY
    echo "scan: docs/SCAN.md updated"
fi
echo "scan: both servers grade A behind Warden"
