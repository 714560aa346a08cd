# Sourced by the test scripts: starts `warden serve` on a free loopback port with a
# throwaway data directory, and stops it (and removes the directory) on exit.
#   start_warden BIN [serve args...]   sets WARDEN_URL, WARDEN_KEY, WARDEN_WORK, WARDEN_LOG_FILE
#   stop_warden                        stops it; start_warden may then run again (same data
#                                      directory and key; the log starts afresh)
#   kill_on_exit PID                   also kills PID on exit (e.g. an HTTP upstream)
#   assert_key_not_logged LABEL        fails if the admin key reached the log

WARDEN_WORK="$(mktemp -d)"
WARDEN_LOG_FILE="$WARDEN_WORK/stderr"
warden_pid=""
stop_warden() {
    if [ -n "$warden_pid" ]; then kill "$warden_pid" 2>/dev/null || true; wait "$warden_pid" 2>/dev/null || true; fi
    warden_pid=""
}
helper_pids=""
kill_on_exit() { helper_pids="$helper_pids $1"; }
trap 'stop_warden; for p in $helper_pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$WARDEN_WORK"' EXIT

start_warden() {
    local bin="$1"
    shift
    "$bin" serve --listen 127.0.0.1:0 --data-dir "$WARDEN_WORK/data" "$@" >"$WARDEN_WORK/stdout" 2>"$WARDEN_LOG_FILE" &
    warden_pid=$!
    WARDEN_URL=""
    for _ in $(seq 1 300); do
        WARDEN_URL="$(grep -o 'listening on http://[^ ]*' "$WARDEN_LOG_FILE" | head -n1 | sed 's/^listening on //')" || true
        [ -n "$WARDEN_URL" ] && break
        if ! kill -0 "$warden_pid" 2>/dev/null; then cat "$WARDEN_LOG_FILE" >&2; echo "warden exited early" >&2; exit 1; fi
        sleep 0.1
    done
    [ -n "$WARDEN_URL" ] || { cat "$WARDEN_LOG_FILE" >&2; echo "warden did not start" >&2; exit 1; }
    WARDEN_KEY="$(cat "$WARDEN_WORK/data/admin.key")"
    export WARDEN_URL WARDEN_KEY
}

assert_key_not_logged() {
    if grep -qF "$WARDEN_KEY" "$WARDEN_LOG_FILE"; then echo "$1: the admin key appeared in the log" >&2; exit 1; fi
}
