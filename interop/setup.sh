# Sourced: installs what the interop clients need, into ignored folders under interop/.
#   setup_python   interop/python/.venv with the pinned requirements
#   setup_ts       interop/ts/node_modules (the TS SDK and server-everything)
# Expects $here to be the interop folder.

setup_python() {
    local venv="$here/python/.venv" req="$here/python/requirements.txt"
    local stamp="$venv/.requirements.sha256" want
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    # Skip pip entirely when these exact requirements were installed and still import.
    if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ] && "$venv/bin/python" -c 'import mcp' 2>/dev/null; then
        return 0
    fi
    echo "interop: installing python requirements into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
}

setup_ts() {
    # server-everything too: a node_modules from before it was pinned lacks it.
    if [ ! -d "$here/ts/node_modules/@modelcontextprotocol/sdk" ] || [ ! -d "$here/ts/node_modules/@modelcontextprotocol/server-everything" ]; then
        echo "interop: npm ci in $here/ts" >&2
        (cd "$here/ts" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
