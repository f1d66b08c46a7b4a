#!/usr/bin/env bash
# GET /api/storage/{key} (nodetool, release build) vs nginx serving the same files, same machine,
# same run, with wrk. Needs: wrk, nginx, taskset (apt-get install -y wrk nginx util-linux).
#
#   bash crates/server/benches/wrk_vs_nginx.sh                     # 10 s per case, 1 round
#   DURATION=5s ROUNDS=3 bash crates/server/benches/wrk_vs_nginx.sh
#   BASELINES="before=/tmp/bench_server_before" bash crates/server/benches/wrk_vs_nginx.sh
#   SERVER=/path/to/bench_server ...   # measure a prebuilt binary instead of building this tree
#
# Fairness on a small machine: every server under test is pinned to one core (SERVER_CPU) with
# one worker (nginx worker_processes 1; nodetool TOKIO_WORKER_THREADS=1, its blocking pool on the
# same core), and wrk runs with one thread pinned to another core (WRK_CPU). BASELINES names more
# bench_server binaries (name=path, space-separated; e.g. built from an earlier commit), measured
# in the same rounds.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-1}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
BASELINES=${BASELINES:-}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)

for bin in wrk nginx taskset; do
  command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install -y wrk nginx util-linux" >&2; exit 1; }
done

if [[ -z "${SERVER:-}" ]]; then
  cargo build --release -q -p nodetool-server --example bench_server --manifest-path "$ROOT/Cargo.toml"
  SERVER="$ROOT/target/release/examples/bench_server"
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
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
NGINX_PORT=$(free_port)

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
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
taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log"

# start_nodetool NAME BINARY: starts it pinned, sets URL_<NAME>.
start_nodetool() {
  local name=$1 bin=$2 port
  port=$(free_port)
  mkdir -p "$WORK/$name"
  env -i PATH="$PATH" HOME="$WORK/$name" NODETOOL_CONFIG_DIR="$WORK/$name/config" ENV=development \
    ASSET_FOLDER="$WORK/assets" DB_PATH="$WORK/$name/nodetool.db" AUTH_PROVIDER=local PORT="$port" \
    TOKIO_WORKER_THREADS=1 taskset -c "$SERVER_CPU" "$bin" 2>"$WORK/$name.log" &
  PIDS+=($!)
  printf -v "PID_$name" '%s' "$!"
  printf -v "URL_$name" 'http://127.0.0.1:%s/api/storage/bench' "$port"
}

NAMES=(nodetool)
start_nodetool nodetool "$SERVER"
for spec in $BASELINES; do
  NAMES+=("${spec%%=*}")
  start_nodetool "${spec%%=*}" "${spec#*=}"
done
URL_nginx="http://127.0.0.1:$NGINX_PORT/bench"
NAMES+=(nginx)
sleep 0.5
PID_nginx=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)

for name in "${NAMES[@]}"; do
  url_var="URL_$name"
  for _ in $(seq 100); do
    curl -sf -o /dev/null "${!url_var}/4k.bin" && break
    sleep 0.1
  done
  # Same bytes from every server.
  cmp <(curl -sf "${!url_var}/1m.bin") "$WORK/assets/bench/1m.bin"
  cmp <(curl -sf "${!url_var}/4k.bin") "$WORK/assets/bench/4k.bin"
done

# measure URL PID: "req/s cpu_us_per_request". The server's CPU time (perf stat task-clock over
# the run, all its threads) per request does not depend on how much CPU the other helpers on a
# shared machine leave free, unlike req/s; "-" without perf.
measure() {
  local out="$WORK/wrk.out" stat="$WORK/perf.out" reqs rps cpu
  if command -v perf >/dev/null && perf stat -e task-clock -p "$2" -o /dev/null -- true 2>/dev/null; then
    perf stat -x, -e task-clock -p "$2" -o "$stat" -- \
      taskset -c "$WRK_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$1" >"$out"
    cpu=$(awk -F, '/task-clock/ {print $1}' "$stat")
  else
    taskset -c "$WRK_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$1" >"$out"
    cpu=
  fi
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  reqs=$(awk '/requests in/ {print $1}' "$out")
  if [[ -n "$cpu" ]]; then
    echo "$rps $(awk -v c="$cpu" -v n="$reqs" 'BEGIN { printf "%.1f", c * 1000 / n }')"
  else
    echo "$rps -"
  fi
}

echo "wrk -t1 -c$CONNECTIONS -d$DURATION on cpu $WRK_CPU; servers on cpu $SERVER_CPU (1 worker each); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cells: req/s (server CPU µs per request)"
header="| round | object |"
rule="|---|---|"
for name in "${NAMES[@]}"; do header+=" $name |"; rule+="---|"; done
for name in "${NAMES[@]}"; do [[ $name != nginx ]] && { header+=" $name/nginx req/s |"; rule+="---|"; }; done
echo "$header"
echo "$rule"
for round in $(seq "$ROUNDS"); do
  for obj in 4k 1m; do
    declare -A got=()
    line="| $round | $obj |"
    for name in "${NAMES[@]}"; do
      url_var="URL_$name"
      pid_var="PID_$name"
      taskset -c "$WRK_CPU" wrk -t1 -c4 -d1s "${!url_var}/$obj.bin" >/dev/null  # warm-up
      read -r rps cpu < <(measure "${!url_var}/$obj.bin" "${!pid_var}")
      got[$name]=$rps
      line+=" $rps ($cpu) |"
    done
    for name in "${NAMES[@]}"; do
      [[ $name == nginx ]] && continue
      line+=" $(awk -v a="${got[$name]}" -v b="${got[nginx]}" 'BEGIN { printf "%.2f", a / b }') |"
    done
    echo "$line"
    unset got
  done
done
