#!/usr/bin/env bash
# The whole test suite, and the one entry point for checks (people and CI alike):
# installs what is missing, then formatting, lints, proto lint, build, unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=1.75.0
export PATH="$HOME/go/bin:$HOME/.cargo/bin:$PATH"

log() { printf '\n==> %s\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Tools the tests use: curl, a JDK and Maven (the test authorization server, Gravitee's own gateway), Go
# (grpcurl, h2spec, Jaeger, Helm, kube-apiserver: scripts/tools.sh builds them), Node (buf), real Redis,
# real forward proxies for endpoints' `proxy` (HTTP, SOCKS5, SOCKS4), h2load (HTTP/2 load over TLS while
# certificates rotate). Installed first: the background builds below never run apt beside it.
apt_install curl ca-certificates openssl
if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2; exit 1
fi
command -v go >/dev/null || apt_install golang-go
if ! command -v npx >/dev/null; then apt_install nodejs npm; fi
if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
if ! command -v redis-cli >/dev/null; then apt_install redis-tools; fi
apt_install tinyproxy microsocks dante-server
if ! command -v h2load >/dev/null; then apt_install nghttp2-client; fi
if ! command -v javac >/dev/null; then apt_install default-jdk-headless; fi
command -v mvn >/dev/null || apt_install maven

# The slow tools (a quarter hour of CPU and downloads on a fresh machine, cached after) are built in the
# background while the Rust build runs: each in its own process group, stopped with this script. The
# Go tools cargo test needs and the Maven builds (mostly downloads) at normal priority; Helm and
# kube-apiserver, needed only by the deploy tests' last part, at nice 10, so they take mostly the CPU
# the build and the tests leave idle. A step that needs a tool still being built waits for it
# (scripts/tools.sh locks each one).
bg_pids=()
stop_background() {
  for pid in "${bg_pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  rm -rf "$tools_logs"
}
tools_logs=$(mktemp -d)
trap stop_background EXIT
bg_tools() { # bg_tools NICENESS NAME TOOL...: sets bg_pid
  local niceness=$1 name=$2; shift 2
  set -m
  nice -n "$niceness" bash scripts/tools.sh "$@" >"$tools_logs/$name.log" 2>&1 </dev/null &
  bg_pid=$!
  set +m
  bg_pids+=("$bg_pid")
}
wait_tools() { # wait_tools PID NAME: its log; a failed build fails the run
  local rc=0
  log "tools: $2 (scripts/tools.sh, built in the background)"
  wait "$1" || rc=$?
  cat "$tools_logs/$2.log"
  if [ "$rc" -ne 0 ]; then echo "building $2 failed (exit $rc)" >&2; exit 1; fi
}
bg_tools 0 go-tools test; go_tools=$bg_pid
maven=(oauth2-as); [ "${HGW_SKIP_COMPAT:-}" = 1 ] || maven+=(gravitee)
bg_tools 0 maven-tools "${maven[@]}"; maven_tools=$bg_pid
deploy_tools=""; debian_root=""
if [ "${HGW_SKIP_DEPLOY_TESTS:-}" != 1 ]; then
  bg_tools 10 deploy-tools deploy; deploy_tools=$bg_pid
  # The packages' clean Debian root (debootstrap: downloads and unpacking), as root only, like the tests.
  if [ "$(id -u)" -eq 0 ]; then apt_install debootstrap; bg_tools 0 debian-root debian-root; debian_root=$bg_pid; fi
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "buf lint (proto/)"
npx --yes "@bufbuild/buf@$BUF_VERSION" lint

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins --locked

wait_tools "$go_tools" go-tools
wait_tools "$maven_tools" maven-tools
log "cargo test"
export HGW_GRPCURL="$(command -v grpcurl)"
export HGW_JAEGER="$(command -v jaeger)"
export HGW_H2SPEC="$(command -v h2spec)"
cargo test --workspace --locked -- --test-threads="${HGW_TEST_THREADS:-2}"

# Gravitee compatibility: the corpus of tests/compat/ on Gravitee's own gateway (4.10.9, assembled from
# Maven Central into ~/.cache/gravitee-gw) and on hgw, answers compared. The committed compat.md is a
# ratchet: a definition it marks `same` must stay `same`. The fresh table goes to target/compat.md.
if [ "${HGW_SKIP_COMPAT:-}" = 1 ]; then
  log "Gravitee differential run skipped (HGW_SKIP_COMPAT=1)"
else
  command -v mvn >/dev/null || apt_install maven
  log "Gravitee differential run (tests/compat/diff.py)"
  python3 tests/compat/diff.py --hgw-bin target/debug --out target/compat.md --json target/compat.json \
    --check tests/compat/compat.md
  log "Gravitee and hgw sharing a Redis cache (tests/compat/cache_redis.py)"
  python3 tests/compat/cache_redis.py --hgw-bin target/debug
fi

# Deployment: the image (dockerd), Compose, the Helm chart and sidecar injection against a real
# kube-apiserver, the packages in a debootstrap root. Slow builds are cached under ~/.cache.
if [ "${HGW_SKIP_DEPLOY_TESTS:-}" = 1 ]; then
  log "deploy tests skipped (HGW_SKIP_DEPLOY_TESTS=1)"
else
  # Helm and kube-apiserver may still be building: the k8s part, last, waits for them (and builds
  # them itself if the background build failed, so its log is shown but does not fail the run).
  log "deploy tests (tests/deploy/run.sh)"
  bash tests/deploy/run.sh
  for job in "deploy-tools $deploy_tools" "debian-root $debian_root"; do
    read -r name pid <<<"$job"
    [ -n "$pid" ] || continue
    log "tools: $name (scripts/tools.sh, built in the background)"
    wait "$pid" || echo "(the background build failed; the deploy tests built what they needed)"
    cat "$tools_logs/$name.log"
  done
fi
