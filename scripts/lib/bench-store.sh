# Sourced by the benchmarks: a PostgreSQL database and runtime role for one run, dropped
# on exit.
#   bench_store SUPERUSER_URL   sets BENCH_PG_OWNER, BENCH_PG_URL, BENCH_PG_SECRET (exported)
#                               and appends the [store] section to $WARDEN_WORK/store.toml
bench_store() {
    local admin_url="$1"
    store_db="warden_bench_store_$$"
    store_role="warden_bench_store_runtime_$$"
    psql "$admin_url" -qAt -c "CREATE ROLE $store_role LOGIN" -c "CREATE DATABASE $store_db" >/dev/null
    BENCH_STORE_ADMIN="$admin_url"
    drop_store() {
        psql "$BENCH_STORE_ADMIN" -qAt -c "DROP DATABASE IF EXISTS $store_db WITH (FORCE)" \
            -c "DROP ROLE IF EXISTS $store_role" >/dev/null 2>&1 || true
    }
    eval "$(trap -p EXIT | sed "s/^trap -- '/trap -- 'drop_store; /")"
    # The same server: the run's database, as its owner (the given user) and as the runtime role.
    read -r BENCH_PG_OWNER BENCH_PG_URL < <(python3 - "$admin_url" "$store_db" "$store_role" <<'PY'
import sys, urllib.parse
url, db, role = sys.argv[1:]
parts = urllib.parse.urlsplit(url)
host = parts.hostname + (f":{parts.port}" if parts.port else "")
owner = parts._replace(path="/" + db).geturl()
runtime = parts._replace(netloc=f"{role}@{host}", path="/" + db).geturl()
print(owner, runtime)
PY
)
    BENCH_PG_SECRET="$(openssl rand -hex 32 2>/dev/null || python3 -c 'import secrets; print(secrets.token_hex(32))')"
    export BENCH_PG_OWNER BENCH_PG_URL BENCH_PG_SECRET
    cat >"$WARDEN_WORK/store.toml" <<TOML

[store]
backend = "postgres"
url = "env:BENCH_PG_URL"
owner_url = "env:BENCH_PG_OWNER"
server_secret = "env:BENCH_PG_SECRET"
TOML
}
