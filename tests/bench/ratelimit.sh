#!/usr/bin/env bash
# Added latency of cluster-wide rate limits: the same mock API with no rate limit, a strict rate limit
# (every request counted in Redis through the agent) and an async one (leased budgets), through one
# hgw-dataplane (one worker thread) and one hgw-agent with a real redis-server, all on 127.0.0.1.
#
#   bash tests/bench/ratelimit.sh [SECONDS_PER_RUN] [RUNS]     (defaults: 10 s, 3 runs)
#
# Prints a Markdown table: median requests/s and latency percentiles over the runs (wrk, 16
# connections, 1 thread), and each mode's cost against the no-limit run. A benchmark, not a test:
# nothing here asserts a time.
set -euo pipefail

SECONDS_PER_RUN="${1:-10}"
RUNS="${2:-3}"
CONNECTIONS="${CONNECTIONS:-16}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need redis-server; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk redis-server redis-tools >/dev/null
fi
cargo build --release -q -p hgw-agent -p hgw-dataplane
BIN="$ROOT/target/release"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # command... : retries for up to 30 s
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for: $*" >&2; exit 1
}

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_for redis-cli -p "$REDIS_PORT" ping

# Three APIs answering from a mock step; the limits are far above what a run sends, so every request
# is admitted and only the counting is measured.
mkdir -p "$WORK/apis"
api() { # id, rate-limit step JSON or empty
  local steps='{"policy": "mock", "configuration": {"status": 200, "content": "ok"}}'
  [ -n "$2" ] && steps="$2, $steps"
  cat >"$WORK/apis/$1.json" <<EOF
{"id": "$1", "name": "$1", "definitionVersion": "4.0.0", "type": "proxy",
 "listeners": [{"type": "http", "paths": [{"path": "/$1"}], "entrypoints": [{"type": "http-proxy"}]}],
 "endpointGroups": [{"name": "g", "type": "http-proxy", "endpoints": [{"name": "e", "type": "http-proxy",
   "configuration": {"target": "http://127.0.0.1:9"}}]}],
 "plans": [{"id": "$1-plan", "name": "open", "security": {"type": "key-less"}, "status": "published"}],
 "flows": [{"name": "all", "request": [$steps]}],
 "analytics": {"enabled": false}}
EOF
}
RATE='"rate": {"limit": 1000000000, "periodTime": 1, "periodTimeUnit": "HOURS"}'
api none ""
api strict "{\"policy\": \"rate-limit\", \"configuration\": {$RATE}}"
api async "{\"policy\": \"rate-limit\", \"configuration\": {\"async\": true, $RATE}}"

"$BIN/hgw-agent" --local-apis "$WORK/apis" --reports-file /dev/null --node-listen 127.0.0.1:0 \
  --grpc-socket "$WORK/agent.sock" --redis-url "redis://127.0.0.1:$REDIS_PORT" --workers 1 \
  >"$WORK/agent.log" 2>&1 &
PIDS+=($!)
wait_for test -S "$WORK/agent.sock"
"$BIN/hgw-dataplane" --agent "unix:$WORK/agent.sock" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --workers 1 --addr-file "$WORK/dp.json" >"$WORK/dp.log" 2>&1 &
PIDS+=($!)
wait_for test -s "$WORK/dp.json"
LISTEN="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen"])' "$WORK/dp.json")"
ADMIN="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$WORK/dp.json")"
wait_for curl -sf "http://$ADMIN/ready"
for path in none strict async; do wait_for curl -sf "http://$LISTEN/$path"; done

# One wrk run: "requests/s p50_ms p99_ms p99.9_ms" (wrk's --latency gives 50/75/90/99; p99.9 comes from a
# Lua done() hook).
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF
run() {
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/report.lua" "http://$LISTEN/$1" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}'
}

declare -A RESULTS
for round in $(seq "$RUNS"); do
  for path in none strict async; do  # interleaved, so drift on the machine hits every mode alike
    RESULTS[$path]+="$(run "$path")"$'\n'
  done
done

python3 - "$SECONDS_PER_RUN" "$RUNS" "$CONNECTIONS" <<EOF
import statistics, sys
secs, runs, conns = sys.argv[1:4]
raw = {"none": """${RESULTS[none]}""", "strict": """${RESULTS[strict]}""", "async": """${RESULTS[async]}"""}
rows = {}
for mode, text in raw.items():
    runs_ = [list(map(float, l.split())) for l in text.strip().splitlines()]
    cols = list(zip(*runs_))
    rows[mode] = [statistics.median(c) for c in cols] + [min(cols[0]), max(cols[0]), sum(cols[4])]
print(f"wrk -t1 -c{conns} -d{secs}s, {runs} runs per mode (median; spread = min..max requests/s); "
      "dataplane --workers 1, agent --workers 1, redis-server standalone, all on 127.0.0.1\n")
print("| mode | requests/s | spread | p50 ms | p99 ms | p99.9 ms | errors | requests/s vs none | added p50 ms | added p99 ms |")
print("|---|---|---|---|---|---|---|---|---|---|")
base = rows["none"]
for mode in ("none", "strict", "async"):
    r = rows[mode]
    print(f"| {mode} | {r[0]:.0f} | {r[5]:.0f}..{r[6]:.0f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {int(r[7])} | "
          f"{r[0] / base[0]:.2f}x | {r[1] - base[1]:+.3f} | {r[2] - base[2]:+.3f} |")
EOF
echo
echo "Redis calls made by the agent (INFO commandstats, evalsha):"
redis-cli -p "$REDIS_PORT" info commandstats | grep -E 'evalsha|eval:' || true
