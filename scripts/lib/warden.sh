# Sourced by the test scripts: starts `warden serve` on a free loopback port with a
# throwaway data directory, and stops it (and removes the directory) on exit.
#   start_warden BIN [serve args...]   sets WARDEN_URL, WARDEN_KEY, WARDEN_WORK, WARDEN_LOG_FILE
#   stop_warden                        stops it; start_warden may then run again (same data
#                                      directory and key; the log starts afresh)
#   kill_on_exit PID                   also kills PID on exit (e.g. an HTTP upstream)
#   wait_for_output FILE REGEX PID LABEL SECONDS
#                                      prints REGEX's first match once FILE has one; fails
#                                      if PID exits first or SECONDS pass
#   assert_key_not_logged LABEL        fails if the admin key reached the log
#   start_variant NAME BIN CONFIG [VAR=VALUE...]
#                                      another Warden beside the first, for the benchmarks
#                                      (sets NAME_url, NAME_key, NAME_pid, NAME_admin)
#   http_upstream LABEL READY SECONDS COMMAND...
#                                      COMMAND in the background with PORT set to a free
#                                      port (left in $port), killed on exit; returns once
#                                      its log shows READY ("{port}" stands for the port)

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

wait_for_output() {
    local file="$1" pattern="$2" pid="$3" label="$4" match=""
    for _ in $(seq 1 $(($5 * 10))); do
        match="$(grep -oE "$pattern" "$file" 2>/dev/null | head -n1)" || true
        if [ -n "$match" ]; then echo "$match"; return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then cat "$file" >&2; echo "$label exited early" >&2; return 1; fi
        sleep 0.1
    done
    cat "$file" >&2
    echo "$label did not start" >&2
    return 1
}

start_warden() {
    local bin="$1"
    shift
    "$bin" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$WARDEN_WORK/data" "$@" >"$WARDEN_WORK/stdout" 2>"$WARDEN_LOG_FILE" &
    warden_pid=$!
    WARDEN_URL="$(wait_for_output "$WARDEN_LOG_FILE" 'listening on https?://[^ ]*' "$warden_pid" warden 30)"
    WARDEN_URL="${WARDEN_URL#listening on }"
    WARDEN_KEY="$(cat "$WARDEN_WORK/data/admin.key")"
    export WARDEN_URL WARDEN_KEY
}

assert_key_not_logged() {
    if grep -qF "$WARDEN_KEY" "$WARDEN_LOG_FILE"; then echo "$1: the admin key appeared in the log" >&2; exit 1; fi
}

# Servers that take their port from PORT cannot report one they chose themselves: ask the
# kernel for a free one (a small race with other processes, acceptable in a test).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# http_upstream LABEL READY SECONDS COMMAND...: COMMAND in the background with PORT set
# to a free port (left in $port), killed on exit; returns once its log shows READY
# ("{port}" in READY stands for the port).
http_upstream() {
    local label="$1" ready="$2" seconds="$3" pid
    shift 3
    port="$(free_port)"
    PORT="$port" "$@" >"$WARDEN_WORK/$label.log" 2>&1 &
    pid=$!
    kill_on_exit "$pid"
    wait_for_output "$WARDEN_WORK/$label.log" "${ready//\{port\}/$port}" "$pid" "$label" "$seconds" >/dev/null
}

# start_variant NAME BIN CONFIG [VAR=VALUE...]: another Warden on its own data directory,
# its environment extended by the assignments; sets NAME_url, NAME_key, NAME_pid and
# NAME_admin (its admin listener's URL).
start_variant() {
    local name="$1" bin="$2" config="$3" url admin pid
    shift 3
    env "$@" "$bin" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$WARDEN_WORK/$name" \
        --config "$config" >/dev/null 2>"$WARDEN_WORK/$name.log" &
    pid=$!
    kill_on_exit "$pid"
    printf -v "${name}_pid" '%s' "$pid"
    url="$(wait_for_output "$WARDEN_WORK/$name.log" 'listening on https?://[^ ]*' "$pid" "warden ($name)" 60)"
    admin="$(wait_for_output "$WARDEN_WORK/$name.log" 'admin endpoint at https?://[^ ]*' "$pid" "warden ($name)" 10)"
    printf -v "${name}_url" '%s' "${url#listening on }"
    printf -v "${name}_admin" '%s' "${admin#admin endpoint at }"
    if [ -f "$WARDEN_WORK/$name/admin.key" ]; then
        printf -v "${name}_key" '%s' "$(cat "$WARDEN_WORK/$name/admin.key")"
    fi
}
