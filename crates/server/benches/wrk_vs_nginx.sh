#!/usr/bin/env bash
# GET /api/storage/{key} (nodetool, release build) vs nginx serving the same files, same machine,
# same run, with wrk. Needs: wrk, nginx (apt-get install -y wrk nginx).
#
#   bash crates/server/benches/wrk_vs_nginx.sh            # 10 s per case
#   DURATION=5s CONNECTIONS=64 bash crates/server/benches/wrk_vs_nginx.sh
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)

for bin in wrk nginx; do
  command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install -y wrk nginx" >&2; exit 1; }
done

cargo build --release -q -p nodetool-server --example bench_server --manifest-path "$ROOT/Cargo.toml"
SERVER="$ROOT/target/release/examples/bench_server"

WORK=$(mktemp -d)
cleanup() {
  [[ -n "${NT_PID:-}" ]] && kill "$NT_PID" 2>/dev/null || true
  [[ -f "$WORK/nginx.pid" ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/assets/bench" "$WORK/nginx"
head -c 4096 /dev/urandom > "$WORK/assets/bench/4k.bin"
head -c 1048576 /dev/urandom > "$WORK/assets/bench/1m.bin"
# nginx workers run as an unprivileged user: let them read the files.
chmod -R a+rX "$WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NT_PORT=$(free_port)
NGINX_PORT=$(free_port)

cat > "$WORK/nginx.conf" <<CONF
worker_processes $(nproc);
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/assets;
  }
}
CONF
nginx -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log"

env -i PATH="$PATH" HOME="$WORK" NODETOOL_CONFIG_DIR="$WORK/config" ENV=development \
  ASSET_FOLDER="$WORK/assets" DB_PATH="$WORK/nodetool.db" AUTH_PROVIDER=local PORT="$NT_PORT" \
  "$SERVER" 2>"$WORK/server.log" &
NT_PID=$!

for port in "$NT_PORT" "$NGINX_PORT"; do
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/bench/4k.bin" 2>/dev/null && break
    curl -sf -o /dev/null "http://127.0.0.1:$port/api/storage/bench/4k.bin" 2>/dev/null && break
    sleep 0.1
  done
done
# Same bytes from both.
cmp <(curl -sf "http://127.0.0.1:$NT_PORT/api/storage/bench/1m.bin") "$WORK/assets/bench/1m.bin"
cmp <(curl -sf "http://127.0.0.1:$NGINX_PORT/bench/1m.bin") "$WORK/assets/bench/1m.bin"

rps() { wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$1" | awk '/Requests\/sec/ {print $2}'; }

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores"
printf '| object | nodetool req/s | nginx req/s | ratio |\n|---|---|---|---|\n'
for obj in 4k 1m; do
  wrk -t1 -c4 -d1s "http://127.0.0.1:$NT_PORT/api/storage/bench/$obj.bin" >/dev/null  # warm-up
  nt=$(rps "http://127.0.0.1:$NT_PORT/api/storage/bench/$obj.bin")
  ng=$(rps "http://127.0.0.1:$NGINX_PORT/bench/$obj.bin")
  ratio=$(awk -v a="$nt" -v b="$ng" 'BEGIN { printf "%.2f", a / b }')
  printf '| %s | %s | %s | %s |\n' "$obj" "$nt" "$ng" "$ratio"
done
