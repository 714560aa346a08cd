# Sourced by the benchmarks (after warden.sh): nginx with the configuration
# docs/DEPLOYMENT.md shows (crates/warden/tests/fixtures/nginx-warden.conf), in front of
# the given servers.
#   nginx_for NAME URL...   starts it on a free port; sets nginx_NAME (its /mcp URL) and
#                           nginx_NAME_pid (its master process)
# nginx_bin is nginx's path, empty when it is not installed.
nginx_bin="$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)"
nginx_for() {
    local name="$1" port servers="" backend
    shift
    port="$(free_port)"
    for backend in "$@"; do servers+="        server ${backend#http://};"$'\n'; done
    servers="${servers//\/mcp/}"
    mkdir -p "$WARDEN_WORK/nginx-$name"
    { printf 'daemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log;\nevents { worker_connections 1024; }\nhttp {\n    access_log off;\n    client_body_temp_path %s/body;\n    proxy_temp_path %s/proxy;\n    fastcgi_temp_path %s/fastcgi;\n    uwsgi_temp_path %s/uwsgi;\n    scgi_temp_path %s/scgi;\n' \
        "$WARDEN_WORK/nginx-$name" "$WARDEN_WORK/nginx-$name" "$WARDEN_WORK/nginx-$name" "$WARDEN_WORK/nginx-$name" "$WARDEN_WORK/nginx-$name" "$WARDEN_WORK/nginx-$name" "$WARDEN_WORK/nginx-$name"
      python3 - "$port" "$servers" <<'PY'
import sys
port, servers = sys.argv[1], sys.argv[2]
text = open("crates/warden/tests/fixtures/nginx-warden.conf").read()
text = text.replace("        server 127.0.0.1:8081;\n        server 127.0.0.1:8082;\n        server 127.0.0.1:8083;\n", servers)
print(text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};"))
PY
      echo "}"; } >"$WARDEN_WORK/nginx-$name/nginx.conf"
    "$nginx_bin" -e "$WARDEN_WORK/nginx-$name/error.log" -c "$WARDEN_WORK/nginx-$name/nginx.conf" &
    printf -v "nginx_${name}_pid" '%s' "$!"
    kill_on_exit "$!"
    for _ in $(seq 1 100); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; then break; fi
        sleep 0.1
    done
    printf -v "nginx_$name" 'http://127.0.0.1:%s/mcp' "$port"
}
