#!/usr/bin/env bash
# tests/deploy/docker.sh — the shipped image, for real: built offline FROM scratch by deploy/docker/build.sh,
# no shell, non-root; a container in local mode and one in cloud mode against the Cloud Gate emulator;
# `docker stop` drains an in-flight request; Compose brings up agent + Redis + two dataplanes (hybrid
# file, cloud mode) and requests go through both dataplanes, and the local-mode compose file serves.
# Sourced by run.sh (counts ok/FAIL); needs target/debug/hgw-cloudgate-sim and the release binaries.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TAG=${HGW_TEST_TAG:-deploytest}
IMAGE="hgw:$TAG"
work=$(mktemp -d)
containers=()
cleanup_docker() {
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1; done
  [ -n "${compose_project:-}" ] && (cd "$HGW_ROOT/deploy/compose" && docker-compose -p "$compose_project" down -v >/dev/null 2>&1)
  [ -n "${compose_local:-}" ] && (cd "$HGW_ROOT/deploy/compose" && docker-compose -p "$compose_local" -f docker-compose.local.yml down -v >/dev/null 2>&1)
  [ -n "${sim_pid:-}" ] && kill "$sim_pid" 2>/dev/null
  [ -n "${backend_pid:-}" ] && kill "$backend_pid" 2>/dev/null
  rm -rf "$work"
  stop_docker
}
trap cleanup_docker EXIT

ensure_docker || { fail "dockerd running"; return 1 2>/dev/null || exit 1; }

log "image: deploy/docker/build.sh $TAG"
start=$(date +%s)
if line=$(HGW_RELEASE_DIR=${HGW_RELEASE_DIR:-} bash "$HGW_ROOT/deploy/docker/build.sh" "$TAG"); then
  ok "image builds offline FROM scratch ($line, $(( $(date +%s) - start )) s)"
else
  fail "image builds"; return 1 2>/dev/null || exit 1
fi
check "image runs as non-root (65532)" test "$(docker image inspect -f '{{.Config.User}}' "$IMAGE")" = "65532:65532"
check "image has no shell" bash -c "! docker run --rm --entrypoint /bin/sh $IMAGE -c true >/dev/null 2>&1"
check "hgw-agent --version runs in the image" bash -c "docker run --rm $IMAGE --version | grep -q '^hgw-agent '"
check "hgw-dataplane --version runs in the image" bash -c "docker run --rm --entrypoint /usr/local/bin/hgw-dataplane $IMAGE --version | grep -q '^hgw-dataplane '"
check "invalid configuration exits 64 in the container" bash -c "docker run --rm $IMAGE --sync-interval nonsense >/dev/null 2>&1; test \$? -eq 64"

# --- local mode, published port ---
log "docker run: local mode"
c=hgw-test-local-$$; containers+=("$c")
docker run -d --name "$c" -p 127.0.0.1::8082 -v "$HGW_ROOT/deploy/examples/apis:/etc/hgw/apis:ro" \
  -e HGW_LOCAL_APIS=/etc/hgw/apis -e HGW_DATAPLANES=2 "$IMAGE" >/dev/null
port=$(docker port "$c" 8082/tcp | head -1 | sed 's/.*://')
check "local mode container serves /hello" wait_until 60 bash -c "curl -fsS http://127.0.0.1:$port/hello | grep -q 'Hello from hgw'"
docker rm -f "$c" >/dev/null

# --- cloud mode against the emulator (host network: the emulator's certificate names 127.0.0.1) ---
log "docker run: cloud mode against hgw-cloudgate-sim"
sim=${HGW_SIM_BIN:-$HGW_ROOT/target/debug/hgw-cloudgate-sim}
mkdir -p "$work/sim"; chmod 755 "$work" "$work/sim"
"$sim" --state-dir "$work/sim" >"$work/sim.out" 2>"$work/sim.log" &
sim_pid=$!
wait_until 60 grep -q '"url"' "$work/sim.out"
sim_url=$(python3 -c 'import json,sys;print(json.loads(open(sys.argv[1]).readline())["url"])' "$work/sim.out")
ca="$work/sim/ca.pem"; chmod 644 "$ca"
simctl() { curl -fsS --cacert "$ca" -X "$1" -H 'content-type: application/json' "$sim_url$2" ${3:+-d "$3"}; }
token=$(simctl POST /_sim/tokens '{}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
simctl PUT /_sim/apis "{\"definition\": $(cat "$HGW_ROOT/deploy/examples/apis/hello.json")}" >/dev/null
gp=$(free_port); np=$(free_port); rp=$(free_port)
c=hgw-test-cloud-$$; containers+=("$c")
docker run -d --name "$c" --network host -v "$ca:/etc/hgw/cloudgate-ca.pem:ro" \
  -e GRAVITEE_CLOUD_TOKEN="$token" -e GRAVITEE_LICENSE_KEY=aGd3LXRlc3QtbGljZW5zZQ== \
  -e HGW_CLOUD_GATE_URL="$sim_url" -e HGW_CLOUD_GATE_CA=/etc/hgw/cloudgate-ca.pem \
  -e HGW_DATAPLANES=1 -e HGW_DATAPLANE_LISTEN="127.0.0.1:$gp" -e HGW_NODE_LISTEN="127.0.0.1:$np" \
  -e HGW_GRPC_LISTEN="127.0.0.1:$rp" "$IMAGE" >/dev/null
check "cloud mode container syncs from the emulator and serves /hello" \
  wait_until 90 bash -c "curl -fsS http://127.0.0.1:$gp/hello | grep -q 'Hello from hgw'"
check "cloud mode container heartbeats reach the emulator" \
  wait_until 60 bash -c "curl -fsS --cacert $ca $sim_url/_sim/heartbeats | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d[\"events\"] or d[\"puts\"] else 1)'"
check "cloud mode container uploads the request's analytics to /reports" \
  wait_until 60 bash -c "curl -fsS --cacert $ca '$sim_url/_sim/reports/summary?type=v4-metrics' | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get(\"unique_ids\",0)>0 else 1)'"
docker rm -f "$c" >/dev/null

# --- docker stop drains an in-flight request ---
log "docker stop drains in-flight requests"
bp=$(free_port); gp=$(free_port); np=$(free_port); rp=$(free_port)
mkdir -p "$work/apis" "$work/backend"
sed "s#http://127.0.0.1:8080#http://127.0.0.1:$bp#" "$HGW_ROOT/deploy/examples/apis/local-backend.json" > "$work/apis/slow.json"
chmod -R a+rX "$work"
python3 - "$bp" "$work/backend/arrived" >"$work/backend.log" 2>&1 <<'PY' &
import http.server, sys, time, pathlib
port, marker = int(sys.argv[1]), pathlib.Path(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        marker.write_text("1")      # the request is in flight: the test stops the container now
        time.sleep(4)
        body = b"slow and complete"
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
backend_pid=$!
c=hgw-test-drain-$$; containers+=("$c")
docker run -d --name "$c" --network host -v "$work/apis:/etc/hgw/apis:ro" -e HGW_LOCAL_APIS=/etc/hgw/apis \
  -e HGW_DATAPLANES=1 -e HGW_DATAPLANE_LISTEN="127.0.0.1:$gp" -e HGW_NODE_LISTEN="127.0.0.1:$np" \
  -e HGW_GRPC_LISTEN="127.0.0.1:$rp" -e HGW_SHUTDOWN_GRACE=15s "$IMAGE" >/dev/null
wait_until 60 bash -c "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$gp/backend/x | grep -q 200"
rm -f "$work/backend/arrived"
curl -sS -o "$work/drained.body" -w '%{http_code}' "http://127.0.0.1:$gp/backend/slow" > "$work/drained.code" 2>&1 &
curl_pid=$!
wait_until 30 test -f "$work/backend/arrived"
docker stop -t 30 "$c" >/dev/null
wait "$curl_pid"
check "docker stop: the in-flight request completes (200, full body)" \
  bash -c "grep -q 200 $work/drained.code && grep -q 'slow and complete' $work/drained.body"
check "docker stop: the container exits 0 after draining" test "$(docker inspect -f '{{.State.ExitCode}}' "$c")" = 0
check "docker stop: no new connections accepted after the drain" bash -c "! curl -fsS -m 3 http://127.0.0.1:$gp/backend/x >/dev/null 2>&1"
kill "$backend_pid" 2>/dev/null; backend_pid=

# --- Compose: hybrid file (cloud mode): agent + Redis + two dataplanes ---
log "compose: deploy/compose/docker-compose.yml (agent, Redis, two dataplanes) against the emulator"
redis_bin=$(command -v redis-server || true)
if [ -z "$redis_bin" ]; then apt_install redis-server; redis_bin=$(command -v redis-server); fi
# No registry pull here: a FROM scratch Redis image from the host's redis-server and its libraries. Its
# entrypoint does what the official image's docker-entrypoint.sh does with the Compose file's command
# (`redis-server --appendonly ...`): a leading `redis-server` is the program, not a config file.
mkdir -p "$work/redis-entry"
printf '#!/usr/local/bin/sh\n[ "${1:-}" = redis-server ] && shift\nexec /usr/local/bin/redis-server "$@"\n' \
  > "$work/redis-entry/redis-entrypoint"
chmod 755 "$work/redis-entry/redis-entrypoint"
check "Redis image built from the host's redis-server" \
  mini_image hgw-test-redis:local redis-entrypoint "$work/redis-entry/redis-entrypoint" "$redis_bin" /bin/sh
# The agent shares the network namespace of a container running the emulator, so the Cloud Gate is at
# 127.0.0.1 (a name its certificate carries) while Redis and the dataplanes use the compose network.
mini_image hgw-test-cloudgate:local hgw-cloudgate-sim "$sim"
compose_project=hgwtest$$
mkdir -p "$work/sim2"; chmod 777 "$work/sim2"
cat > "$work/compose.test.yml" <<YML
version: "3.8"
services:
  cloudgate:
    image: hgw-test-cloudgate:local
    command: ["--listen", "0.0.0.0:8443", "--state-dir", "/sim"]
    user: "65532:65532"
    volumes: ["$work/sim2:/sim"]
    ports: ["127.0.0.1::8443", "127.0.0.1::18082"]
  agent:
    network_mode: "service:cloudgate"
    depends_on: [cloudgate, redis]
    volumes: ["$work/sim2:/sim:ro"]
YML
compose() { (cd "$HGW_ROOT/deploy/compose" && docker-compose -p "$compose_project" -f docker-compose.yml -f "$work/compose.test.yml" "$@"); }
export HGW_IMAGE="$IMAGE" REDIS_IMAGE=hgw-test-redis:local HGW_GATEWAY_PUBLISH_1=127.0.0.1: HGW_GATEWAY_PUBLISH_2=127.0.0.1: \
  HGW_CLOUD_GATE_URL=https://127.0.0.1:8443 HGW_CLOUD_GATE_CA=/sim/ca.pem \
  GRAVITEE_LICENSE_KEY=aGd3LXRlc3QtbGljZW5zZQ== REDIS_PASSWORD=compose-test-secret
# The emulator mints the token: start it alone first (every compose command interpolates the whole
# file, so the required variable needs a placeholder until then).
export GRAVITEE_CLOUD_TOKEN=pending
compose up -d --no-deps cloudgate >"$work/compose.log" 2>&1
wait_until 60 test -s "$work/sim2/ca.pem"
sim2="https://127.0.0.1:$(compose port cloudgate 8443 2>/dev/null | sed 's/.*://')"
ca2="$work/sim2/ca.pem"
wait_until 30 curl -fsS --cacert "$ca2" "$sim2/_sim/stats"
token2=$(curl -fsS --cacert "$ca2" -X POST -H 'content-type: application/json' -d '{}' "$sim2/_sim/tokens" | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
curl -fsS --cacert "$ca2" -X PUT -H 'content-type: application/json' "$sim2/_sim/apis" \
  -d "{\"definition\": $(cat "$HGW_ROOT/deploy/examples/apis/hello.json")}" >/dev/null
export GRAVITEE_CLOUD_TOKEN="$token2"
if compose up -d >>"$work/compose.log" 2>&1; then ok "docker-compose up (agent, redis, dataplane-1, dataplane-2)"; else fail "docker-compose up"; cat "$work/compose.log"; fi
for dp in dataplane-1 dataplane-2; do
  p=$(compose port "$dp" 8082 2>/dev/null | sed 's/.*://')
  check "compose: a request goes through $dp" wait_until 90 bash -c "curl -fsS http://127.0.0.1:$p/hello | grep -q 'Hello from hgw'"
done
node="http://127.0.0.1:$(compose port cloudgate 18082 2>/dev/null | sed 's/.*://')"
check "compose: the agent sees both dataplanes" wait_until 30 bash -c "curl -fsS $node/_node/dataplanes | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if len(d if isinstance(d,list) else d.get(\"dataplanes\",[]))==2 else 1)'"
# Healthy means the agent's own ping answered (not merely "not down yet"), with the password from
# gravitee_ratelimit_redis_password (Redis runs with --requirepass).
check "compose: the agent's Redis (Gravitee variables, password) is healthy" wait_until 30 bash -c "curl -fsS $node/_node/health | python3 -c 'import json,sys; r=json.load(sys.stdin).get(\"redis\") or {}; sys.exit(0 if r.get(\"healthy\") is True and r.get(\"description\",\"\").endswith(\", password\") else 1)'"
curl -fsS "$node/_node/health" >&2 || true; echo >&2
check "compose: the Redis password is not in the agent's logs" bash -c "! compose logs agent 2>&1 | grep -q compose-test-secret"
compose logs >"$work/compose-services.log" 2>&1
compose down -v >/dev/null 2>&1; compose_project=

# --- Compose: local mode file ---
log "compose: deploy/compose/docker-compose.local.yml"
compose_local=hgwlocal$$
(cd "$HGW_ROOT/deploy/compose" && HGW_GATEWAY_PUBLISH=127.0.0.1: HGW_NODE_PUBLISH=127.0.0.1: docker-compose -p "$compose_local" -f docker-compose.local.yml up -d >/dev/null 2>&1)
p=$(cd "$HGW_ROOT/deploy/compose" && docker-compose -p "$compose_local" -f docker-compose.local.yml port gateway 8082 2>/dev/null | sed 's/.*://')
check "compose (local mode): /hello through the supervised pool" wait_until 60 bash -c "curl -fsS http://127.0.0.1:$p/hello | grep -q 'Hello from hgw'"
(cd "$HGW_ROOT/deploy/compose" && docker-compose -p "$compose_local" -f docker-compose.local.yml down -v >/dev/null 2>&1); compose_local=

# --- Compose: local mode with the HTTPS override (Gravitee's gravitee_http_* settings) ---
log "compose: docker-compose.local.yml + docker-compose.https.yml"
tls="$work/tls"; mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=hgw compose test CA" \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" >/dev/null 2>&1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout "$tls/tls.key" -out "$tls/tls.csr" >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tls/san.ext"
openssl x509 -req -in "$tls/tls.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 2 \
  -extfile "$tls/san.ext" -out "$tls/tls.crt" >/dev/null 2>&1
chmod 755 "$work" "$tls"; chmod 644 "$tls/tls.crt" "$tls/tls.key"
compose_local=hgwhttps$$
https_compose() { (cd "$HGW_ROOT/deploy/compose" && HGW_TLS_DIR="$tls" HGW_GATEWAY_PUBLISH=127.0.0.1: HGW_NODE_PUBLISH=127.0.0.1: \
  docker-compose -p "$compose_local" -f docker-compose.local.yml -f docker-compose.https.yml "$@"); }
https_compose up -d >"$work/compose-https.log" 2>&1 || cat "$work/compose-https.log"
p=$(https_compose port gateway 8082 2>/dev/null | sed 's/.*://')
check "compose (HTTPS): /hello over HTTP/2 and TLS, verified against the CA" wait_until 60 bash -c \
  "curl -fsS --http2 --cacert '$tls/ca.pem' https://localhost:$p/hello -o /dev/null -w '%{http_version}' | grep -qx 2"
check "compose (HTTPS): plain HTTP is not served on the HTTPS port" bash -c "! curl -fsS --max-time 5 http://127.0.0.1:$p/hello >/dev/null 2>&1"
big=$(head -c 16384 /dev/zero | tr '\0' a)
check "compose (HTTPS): the limits reach the dataplanes (16 KiB of headers: 431)" test \
  "$(curl -sS --http1.1 --cacert "$tls/ca.pem" -o /dev/null -w '%{http_code}' -H "X-Big: $big" "https://localhost:$p/hello")" = 431
https_compose down -v >/dev/null 2>&1; compose_local=
