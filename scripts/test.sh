#!/usr/bin/env bash
# The whole test suite, and the one entry point for checks (people and CI alike):
# installs what is missing, then formatting, lints, proto lint, build, unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.4
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

# Tools the tests use: a real gRPC reflection client (grpcurl), buf for the proto lint, curl, h2spec.
apt_install curl ca-certificates openssl
if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2; exit 1
fi
if ! command -v grpcurl >/dev/null; then
  command -v go >/dev/null || apt_install golang-go
  log "installing grpcurl $GRPCURL_VERSION (go install)"
  go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi
if ! command -v npx >/dev/null; then apt_install nodejs npm; fi
# Jaeger v2, the real trace backend of tests/tests/tracing.rs: built from source (a large build, then
# cached in ~/go/bin). scripts/jaeger/ pins its version and carries the `replace` line Jaeger's own
# go.mod has (which `go install module@version` refuses).
if ! command -v jaeger >/dev/null; then
  command -v go >/dev/null || apt_install golang-go
  log "installing jaeger (go install tool, scripts/jaeger/go.mod: $(grep -o 'jaeger v[0-9.]*' scripts/jaeger/go.mod | head -1))"
  (cd scripts/jaeger && go install tool)
fi
# h2spec, the HTTP/2 conformance suite of tests/tests/edge_h2spec.rs (h2c and TLS): built from source and
# cached in ~/go/bin. h2spec has no go.mod of its own, so scripts/h2spec/ pins its version and its
# dependencies' (a bare `go install ...@latest` would build against whatever is newest that day).
if ! command -v h2spec >/dev/null; then
  command -v go >/dev/null || apt_install golang-go
  log "installing h2spec (go install tool, scripts/h2spec/go.mod: $(grep -o 'h2spec v[0-9.]*' scripts/h2spec/go.mod | head -1))"
  (cd scripts/h2spec && go install tool)
fi
# Real Redis for the agent's Redis tests (standalone, TLS, Cluster, Sentinel).
if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
if ! command -v redis-cli >/dev/null; then apt_install redis-tools; fi
# Real forward proxies for endpoints' `proxy` (tests/tests/endpoint_proxy.rs): HTTP, SOCKS5, SOCKS4.
apt_install tinyproxy microsocks dante-server
# h2load: HTTP/2 load over TLS while certificates rotate (tests/tests/edge_tls.rs).
if ! command -v h2load >/dev/null; then apt_install nghttp2-client; fi
# A JDK (>= 17) and Maven for the real authorization server of tests/tests/oauth2_plan.rs: Spring
# Authorization Server from Maven Central, built once by tests/oauth2-as/setup.sh and cached in
# ~/.cache/hgw-oauth2-as (built here so that the test itself does not wait on Maven).
if ! command -v javac >/dev/null; then apt_install default-jdk-headless; fi
command -v mvn >/dev/null || apt_install maven
log "test authorization server (tests/oauth2-as/setup.sh)"
bash tests/oauth2-as/setup.sh >/dev/null

log "cargo fmt --check"
cargo fmt --all -- --check

log "buf lint (proto/)"
npx --yes "@bufbuild/buf@$BUF_VERSION" lint

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins --locked

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
  log "deploy tests (tests/deploy/run.sh)"
  bash tests/deploy/run.sh
fi
