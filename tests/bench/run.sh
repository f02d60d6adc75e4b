#!/usr/bin/env bash
# hgw side by side with nginx and HAProxy: the one command behind tests/bench/RESULTS.md.
#
#   bash tests/bench/run.sh [--smoke] [--duration S] [--runs N] [--out FILE] [bench.py options]
#
# Installs what is missing (apt: wrk nginx haproxy nghttp2-client redis-server redis-tools openssl; sudo
# only when not root), builds the binaries, then runs tests/bench/bench.py: throughput and latency against
# nginx and HAProxy (HTTP/1.1, HTTP/2 and HTTPS), policy cost, memory, config propagation, analytics
# throughput, and the dataplane's micro-benchmarks; writes tests/bench/RESULTS.md (or --out FILE).
# `--only throughput,memory,propagation,analytics,tls,micro` runs a subset.
#
# --smoke checks that the harness still works (CI): debug binaries, 2 s runs, one run each, small N,
# no micro-benchmarks, the report to a temp file; exits non-zero when a scenario cannot produce numbers.
# A full run takes about 30 minutes with the defaults (--duration 20 --runs 3); run it on a quiet machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

COMMAND="$(python3 -c 'import shlex, sys; print(shlex.join(["bash", "tests/bench/run.sh"] + sys.argv[1:]))' "$@")"
SMOKE=0
PROFILE=""
OUT=""
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; PASS+=("$1") ;;
    --profile) PROFILE="$2"; shift ;;  # debug or release (default: release; debug with --smoke)
    --out) OUT="$2"; shift ;;
    *) PASS+=("$1") ;;
  esac
  shift
done
[ -n "$PROFILE" ] || { [ "$SMOKE" = 1 ] && PROFILE=debug || PROFILE=release; }
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT="$(mktemp --suffix=.md)"; else OUT="$ROOT/tests/bench/RESULTS.md"; fi
fi

log() { printf '\n==> %s\n' "$*" >&2; }

# apt package → a command it provides.
declare -A TOOLS=([wrk]=wrk [nginx]=nginx [haproxy]=haproxy [nghttp2-client]=h2load [redis-server]=redis-server
  [redis-tools]=redis-cli [openssl]=openssl)
missing=()
for pkg in "${!TOOLS[@]}"; do command -v "${TOOLS[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in taskset python3 cargo; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
if [ "$PROFILE" = release ]; then
  log "cargo build --release (hgw-agent, hgw-dataplane, hgw-cloudgate-sim)"
  cargo build --release --locked -q -p hgw-agent -p hgw-dataplane -p hgw-tests --bins
else
  log "cargo build (debug: hgw-agent, hgw-dataplane, hgw-cloudgate-sim)"
  cargo build --locked -q -p hgw-agent -p hgw-dataplane -p hgw-tests --bins
  [ "$SMOKE" = 1 ] || echo "run.sh: debug binaries: the numbers say nothing about hgw's speed" >&2
fi

# The analysis kept beside the numbers (where the time goes, profiles): appended to a full report.
NOTES=()
[ "$SMOKE" = 1 ] || [ ! -f "$ROOT/tests/bench/notes.md" ] || NOTES=(--notes-file "$ROOT/tests/bench/notes.md")
log "running the scenarios (report: $OUT)"
python3 "$ROOT/tests/bench/bench.py" --bin-dir "$TARGET_DIR/$PROFILE" --root "$ROOT" --out "$OUT" \
  --command "$COMMAND" "${NOTES[@]}" "${PASS[@]}"
if [ "$SMOKE" = 1 ]; then
  log "smoke pass: every scenario produced numbers ($OUT)"
fi
