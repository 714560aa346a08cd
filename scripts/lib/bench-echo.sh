# Sourced by the gateway benchmarks (after warden.sh): the echo upstream, and the
# configuration every measured Warden runs with.
#   start_echo_upstream BENCH_BIN   starts `warden-bench echo-upstream`; sets echo_url, echo_pid
#   write_bench_config FILE         writes the benchmarks' warden.toml for $echo_url
start_echo_upstream() {
    "$1" echo-upstream --listen 127.0.0.1:0 >"$WARDEN_WORK/echo.out" &
    echo_pid=$!
    kill_on_exit "$echo_pid"
    echo_url="$(wait_for_output "$WARDEN_WORK/echo.out" '^listening on http://[^ ]*' "$echo_pid" "echo upstream" 10)"
    echo_url="${echo_url#listening on }"
}

# The limiter runs on every call, but with rates high enough that it never refuses:
# the benchmarks measure the gateway's overhead, not its refusals.
write_bench_config() {
    cat >"$1" <<TOML
[egress]
allow = ["127.0.0.1"]

[rate]
per_key_rpm = 1000000
per_ip_rpm = 10000000
per_session_calls = 1000000000
daily_cost_cap = 1000000000

[[upstream]]
name = "echo"
url = "$echo_url"
TOML
}
