#!/usr/bin/env bash
# The cluster benchmark: Warden on a PostgreSQL store in front of the echo upstream,
# with its limits counted locally and in Redis, one replica against three behind nginx
# (round-robin), in one run. Reports throughput, latency, the CPU per call of the
# Warden processes (summed) and of the machine, and the Redis round trips per call
# (the replicas' own count, warden_redis_round_trips_total, over the run of each path,
# warm-up calls included). Writes the table
# into docs/BENCHMARKS.md.
#   STORE_POSTGRES_URL=postgres://SUPERUSER@HOST/DB scripts/bench-cluster.sh [requests] [concurrency]
# Needs PostgreSQL (the URL, default postgres://postgres@127.0.0.1:5432/postgres),
# redis-server and nginx installed; starts its own Redis and nginx.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requests="${1:-10000}"
concurrency="${2:-16}"
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
source scripts/lib/release.sh
build_release
target="${CARGO_TARGET_DIR:-target}/release"
source scripts/lib/warden.sh
source scripts/lib/bench-store.sh
source scripts/lib/nginx.sh
[ -n "$nginx_bin" ] || { echo "needs nginx (apt-get install nginx)" >&2; exit 1; }

source scripts/lib/bench-echo.sh
start_echo_upstream "$target/warden-bench"

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$WARDEN_WORK/redis.log" 2>&1 &
redis_pid=$!
kill_on_exit "$redis_pid"
wait_for_output "$WARDEN_WORK/redis.log" 'Ready to accept connections' "$redis_pid" redis 10 >/dev/null
export BENCH_REDIS_URL="redis://127.0.0.1:$redis_port"
# round_trips ADMIN_URL...: the Redis round trips those replicas have made so far.
round_trips() {
    local total=0 admin count
    for admin in "$@"; do
        count="$(curl -s "$admin/metrics" | awk '$1 == "warden_redis_round_trips_total" { print $2 }')"
        total=$((total + ${count:-0}))
    done
    echo "$total"
}

bench_store "${STORE_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# The limits run on every call with rates high enough never to refuse: the benchmark
# measures what counting costs, not refusals.
cat >"$WARDEN_WORK/base.toml" <<TOML
[egress]
allow = ["127.0.0.1"]

[server]
trusted_proxies = ["127.0.0.1/32"]

[rate]
per_key_rpm = 1000000
per_ip_rpm = 10000000
per_session_calls = 1000000000
daily_cost_cap = 1000000000
max_concurrent_per_key = 1000
max_concurrent_total = 10000

[[upstream]]
name = "echo"
url = "$echo_url"
TOML
cat "$WARDEN_WORK/base.toml" "$WARDEN_WORK/store.toml" >"$WARDEN_WORK/local.toml"
{ cat "$WARDEN_WORK/base.toml"; printf '\n[cluster]\nredis = "env:BENCH_REDIS_URL"\n'; cat "$WARDEN_WORK/store.toml"; } >"$WARDEN_WORK/shared.toml"

# replica NAME CONFIG: starts a replica; sets url_NAME, admin_NAME and pid_NAME.
replica() {
    local name="$1" config="$WARDEN_WORK/replica-$1.toml" pid url admin
    { cat "$WARDEN_WORK/$2.toml"; echo "replica = \"$name\""; } >"$config"
    "$target/warden" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$WARDEN_WORK/$name" \
        --config "$config" >/dev/null 2>"$WARDEN_WORK/$name.log" &
    pid=$!
    kill_on_exit "$pid"
    url="$(wait_for_output "$WARDEN_WORK/$name.log" 'listening on https?://[^ ]*' "$pid" "replica $name" 60)"
    admin="$(wait_for_output "$WARDEN_WORK/$name.log" 'admin endpoint at http://[^ ]*' "$pid" "replica $name" 10)"
    printf -v "url_$name" '%s' "${url#listening on }"
    printf -v "admin_$name" '%s' "${admin#admin endpoint at }"
    printf -v "pid_$name" '%s' "$pid"
}
replica local local
replica shared shared
replica r1 shared
replica r2 shared
replica r3 shared
WARDEN_KEY="$("$target/warden" keys add --config "$WARDEN_WORK/local.toml" --tenant bench --name load --scope write 2>/dev/null)"
export WARDEN_KEY

# nginx: the configuration docs/DEPLOYMENT.md shows, once over r1 alone and once over all three.
nginx_for one "$url_r1"
nginx_for three "$url_r1" "$url_r2" "$url_r3"

results="$WARDEN_WORK/results.jsonl"
# measure PATH ERA URL "ADMIN..." LOAD-ARGS...
measure() {
    local path="$1" era="$2" url="$3" admins="$4" before after load
    shift 4
    # shellcheck disable=SC2086
    before="$(round_trips $admins)"
    load="$("$target/warden-bench" load --url "$url" --era "$era" --requests "$requests" --concurrency "$concurrency" --json "$@")"
    # shellcheck disable=SC2086
    after="$(round_trips $admins)"
    echo "{\"path\": \"$path\", \"redis_round_trips\": $((after - before)), \"load\": $load}" >>"$results"
}
for era in modern legacy; do
    measure local "$era" "$url_local" "$admin_local" --pid "$pid_local"
    measure shared "$era" "$url_shared" "$admin_shared" --pid "$pid_shared"
    measure one "$era" "$nginx_one" "$admin_r1" --pid "$pid_r1"
    measure three "$era" "$nginx_three" "$admin_r1 $admin_r2 $admin_r3" --pid "$pid_r1" --pid "$pid_r2" --pid "$pid_r3"
done
assert_key_not_logged bench

python3 - "$results" "$requests" "$concurrency" <<'PY'
import json, re, sys
path, requests, concurrency = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(line) for line in open(path)]
sys.path.insert(0, "scripts/lib")
from bench_doc import machine, write_block
names = {
    "local": "1 replica, limits counted locally",
    "shared": "1 replica, limits in Redis",
    "one": "nginx → 1 replica, limits in Redis",
    "three": "nginx → 3 replicas, limits in Redis",
}
lines = [
    "<!-- cluster-bench:start -->",
    machine() + " "
    f"Command: `STORE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/bench-cluster.sh {requests} {concurrency}` "
    f"({requests} `tools/call` of `echo` at concurrency {concurrency} after 500 warm-up calls; every Warden on one PostgreSQL store "
    "with `wait_for_write` on; Redis, PostgreSQL, nginx, the load tool and the replicas share the machine).",
    "",
    "| era | path | req/s | p50 | p99 | CPU/call (Warden) | CPU/call (machine) | Redis round trips/call | errors |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
]
by = {}
for r in rows:
    l = r["load"]
    by[(l["era"], r["path"])] = r
    lines.append(f"| {l['era']} | {names[r['path']]} | {l['rps']:.0f} | {l['p50_us'] / 1000:.2f} ms | {l['p99_us'] / 1000:.2f} ms "
                 f"| {l['cpu_us_per_call']:.0f} µs | {l['machine_cpu_us_per_call']:.0f} µs | {r['redis_round_trips'] / (requests + 500):.2f} | {l['errors']} |")
lines.append("")
for era in ("modern", "legacy"):
    local, shared, one, three = (by[(era, p)] for p in ("local", "shared", "one", "three"))
    lines.append(
        f"- {era}: limits in Redis cost **{shared['load']['cpu_us_per_call'] - local['load']['cpu_us_per_call']:.0f} µs** of Warden CPU per call "
        f"({shared['load']['cpu_us_per_call'] / local['load']['cpu_us_per_call']:.2f}× local) and "
        f"**{shared['redis_round_trips'] / (requests + 500):.2f}** Redis round trips per call; throughput {shared['load']['rps'] / local['load']['rps']:.2f}× local. "
        f"Three replicas behind nginx give **{three['load']['rps'] / one['load']['rps']:.2f}×** the throughput of one behind the same nginx "
        "(on 2 cores, more processes compete for the same two: the point of three replicas here is availability, not speed).")
lines.append("<!-- cluster-bench:end -->")
block = "\n".join(lines)
write_block("cluster-bench", "Several replicas: Redis limits, one replica against three behind nginx", block, any(r["load"]["errors"] for r in rows))
PY
