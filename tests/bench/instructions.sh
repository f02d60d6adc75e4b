#!/usr/bin/env bash
# Instructions per proxied request, hgw-dataplane beside nginx, counted by valgrind's callgrind: unlike
# requests/s, the count does not depend on how busy this shared machine is, so it compares builds.
#
#   bash tests/bench/instructions.sh [--bin-dir DIR] [--seconds N]
#   (KEEP_PROFILES=DIR keeps the callgrind profiles, one per row, for callgrind_annotate)
#
# Scenario 1's setup at a smaller scale: nginx `return 200 "ok"` as the backend; hgw in local mode (one
# dataplane, `--workers 1`) with the key-less API `/bench` (analytics off), `/bench-analytics` (analytics
# on, records streamed to the agent, which writes them to /dev/null) and `/key` (API key +
# transform-headers, as scenario 2); nginx as a proxy (one worker, upstream keepalive). Each proxy runs
# under callgrind with collection switched on after a warm-up; wrk -c8 drives it for N seconds (default
# 8); the result is the proxy's user-space instructions (all threads) ÷ the requests wrk completed.
# Needs valgrind, wrk and nginx (apt); uses the release binaries (cargo build --release first).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/target/release"
SECONDS_RUN=8
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN="$2"; shift ;;
    --seconds) SECONDS_RUN="$2"; shift ;;
    *) echo "instructions.sh: unknown argument $1" >&2; exit 64 ;;
  esac
  shift
done
for tool in valgrind callgrind_control callgrind_annotate wrk nginx python3 curl; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is required (apt-get install valgrind wrk nginx)" >&2; exit 1; }
done
for bin in hgw-agent hgw-dataplane; do
  [ -x "$BIN/$bin" ] || { echo "instructions.sh: $BIN/$bin missing (cargo build --release)" >&2; exit 1; }
done

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # URL [curl args]: up to 60 s (valgrind starts slowly)
  local url=$1; shift
  for _ in $(seq 300); do curl -fs -o /dev/null "$@" "$url" && return 0; sleep 0.2; done
  echo "instructions.sh: $url never answered" >&2; exit 1
}
nginx_conf() { # NAME SERVER-BLOCKS
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1.conf" <<CONF
worker_processes 1; master_process off; daemon off; pid $WORK/$1/nginx.pid; error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  client_body_temp_path $WORK/$1/b; proxy_temp_path $WORK/$1/p; fastcgi_temp_path $WORK/$1/f;
  uwsgi_temp_path $WORK/$1/u; scgi_temp_path $WORK/$1/s;
  $2 }
CONF
}

BACKEND=$(free_port)
nginx_conf backend "server { listen 127.0.0.1:$BACKEND backlog=4096; location / { return 200 \"ok\"; } }"
nginx -p "$WORK/backend" -c "$WORK/backend.conf" -e "$WORK/backend/error.log" & PIDS+=($!)
wait_for "http://127.0.0.1:$BACKEND/"

mkdir -p "$WORK/apis"
KEY=instructions-key-0123456789
(cd "$ROOT/tests/bench" && python3 - "$WORK/apis" "http://127.0.0.1:$BACKEND" "$KEY" <<'PY'
import json, sys
import bench
out, target, key = sys.argv[1:]
for name, analytics in (("bench", False), ("bench-analytics", True)):
    json.dump(bench.registry_file(bench.v4_api(name, "/" + name, target, analytics=analytics)), open(f"{out}/{name}.json", "w"))
key_api = bench.v4_api("key", "/key", target, plan=bench.api_key_plan("key"), request_steps=[bench.TRANSFORM])
json.dump(bench.registry_file(key_api, key), open(f"{out}/key.json", "w"))
PY
)
"$BIN/hgw-agent" --local-apis "$WORK/apis" --reports-file /dev/null --node-listen 127.0.0.1:0 \
  --grpc-socket "$WORK/agent.sock" --workers 1 >"$WORK/agent.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do [ -S "$WORK/agent.sock" ] && break; sleep 0.1; done

# COUNT LABEL URL PID OUTFILE [wrk args]: warm up, count instructions over the run, print per request.
count() {
  local label=$1 url=$2 pid=$3 out=$4; shift 4
  wait_for "$url" "$@"
  wrk -t1 -c8 -d2s "$@" "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  local result requests
  result=$(wrk -t1 -c8 -d"${SECONDS_RUN}s" "$@" "$url")
  callgrind_control -i off "$pid" >/dev/null 2>&1
  requests=$(awk '/requests in/ {print $1}' <<<"$result")
  rm -f "$out".*
  callgrind_control -d "$pid" >/dev/null 2>&1
  local file total
  file=$(ls -S "$out".* | head -1)
  total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  # KEEP_PROFILES=DIR keeps each profile (LABEL.cg, LABEL.requests) for callgrind_annotate.
  if [ -n "${KEEP_PROFILES:-}" ]; then
    mkdir -p "$KEEP_PROFILES"
    cp "$file" "$KEEP_PROFILES/${label//[^A-Za-z0-9]/_}.cg"
    echo "$requests" >"$KEEP_PROFILES/${label//[^A-Za-z0-9]/_}.requests"
  fi
  python3 -c "print(f'| {\"$label\"} | {int($requests):,} | {round($total / $requests):,} |')"
}

PORT=$(free_port)
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/hgw.cg" "$BIN/hgw-dataplane" \
  --agent "unix:$WORK/agent.sock" --listen "127.0.0.1:$PORT" --admin-listen 127.0.0.1:0 --workers 1 \
  --id instructions >"$WORK/dataplane.log" 2>&1 & DP=$!; PIDS+=($DP)
NGINX_PORT=$(free_port)
nginx_conf proxy "upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$NGINX_PORT backlog=4096; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/nginx.cg" \
  nginx -p "$WORK/proxy" -c "$WORK/proxy.conf" -e "$WORK/proxy/error.log" >"$WORK/nginx.log" 2>&1 & NG=$!; PIDS+=($NG)

echo "| proxy, request | requests counted | instructions per request |"
echo "|---|---|---|"
count "hgw-dataplane, key-less (/bench)" "http://127.0.0.1:$PORT/bench" "$DP" "$WORK/hgw.cg"
count "hgw-dataplane, analytics on" "http://127.0.0.1:$PORT/bench-analytics" "$DP" "$WORK/hgw.cg"
count "hgw-dataplane, API key + transform-headers" "http://127.0.0.1:$PORT/key" "$DP" "$WORK/hgw.cg" -H "X-Gravitee-Api-Key: $KEY"
count "nginx (proxy_pass, keepalive)" "http://127.0.0.1:$NGINX_PORT/bench" "$NG" "$WORK/nginx.cg"
