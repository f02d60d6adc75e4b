#!/usr/bin/env bash
# scripts/tools.sh TOOL... — builds the tools the test suite runs, when they are missing, and caches them
# where the machine keeps such things (~/go/bin, ~/.cache, ~/.cargo/bin). TOOL is one of:
#   grpcurl     a real gRPC reflection client (go install)
#   h2spec      the HTTP/2 conformance suite; scripts/h2spec/go.mod pins it and its dependencies
#   jaeger      Jaeger v2, the trace backend of tests/tests/tracing.rs; scripts/jaeger/go.mod pins it and
#               carries the `replace` line Jaeger's own go.mod has (which `go install module@version` refuses)
#   oauth2-as   the test authorization server (tests/oauth2-as/setup.sh: Spring Authorization Server, Maven)
#   gravitee    Gravitee's own gateway, the compatibility oracle (tests/compat/gravitee-gw/setup.sh, Maven)
#   helm        Helm, for the chart's tests (go install)
#   k8s         a real kube-apiserver + etcd (tests/k8s/build.sh)
#   cargo-fuzz  for scripts/fuzz.sh (cargo install)
#   debian-root a clean Debian root for the packages' test (tests/deploy/debian-root.sh: debootstrap, root only)
# or a group: `test` (grpcurl h2spec jaeger), `maven` (oauth2-as gravitee), `deploy` (helm k8s).
#
# On a fresh machine these builds are a quarter hour of CPU; scripts/test.sh starts them in the background
# while the Rust build and the tests run. Each tool is built under its own lock, so a step that needs a
# tool while the background build of it is under way waits for that build instead of starting a second.
# Needs go, mvn + a JDK and cargo on PATH (scripts/test.sh installs them first): this script never runs apt,
# because it runs beside steps that do.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$HOME/go/bin:$HOME/.cargo/bin:$PATH"

GRPCURL_VERSION=v1.9.4
HELM_VERSION=v3.16.4
lock_dir="${XDG_CACHE_HOME:-$HOME/.cache}/hgw-tool-locks"
# Go tools built without DWARF debug info (compiler and linker): nobody debugs them here, and it is a
# share of building Jaeger and kube-apiserver. Stack traces keep their function names and lines.
export GOFLAGS="${GOFLAGS:--gcflags=all=-dwarf=false -ldflags=-w}"
# The compiler collects garbage less often (more memory, less CPU: the machine has the memory).
export GOGC="${GOGC:-400}"

log() { printf '==> %s\n' "$*" >&2; }

# locked NAME COMMAND...: runs COMMAND holding NAME's lock (waits while another process holds it).
locked() {
  local name=$1; shift
  mkdir -p "$lock_dir"
  (
    flock 9
    "$@"
  ) 9>"$lock_dir/$name.lock"
}

# The installs, each checking again under its lock: the build it waited for may have made the tool.
build_grpcurl() {
  command -v grpcurl >/dev/null && return
  log "installing grpcurl $GRPCURL_VERSION (go install)"
  go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
}
build_go_tool() { # build_go_tool NAME: a tool pinned by scripts/NAME/go.mod
  command -v "$1" >/dev/null && return
  log "installing $1 (go install tool, scripts/$1/go.mod: $(grep -o "$1 v[0-9.]*" "$root/scripts/$1/go.mod" | head -1))"
  (cd "$root/scripts/$1" && go install tool)
}
build_helm() {
  command -v helm >/dev/null && return
  log "installing helm $HELM_VERSION (go install)"
  go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}
build_k8s() {
  bash "$root/tests/k8s/build.sh" >/dev/null
}
build_cargo_fuzz() {
  cargo fuzz --version >/dev/null 2>&1 && return
  # A debug build: half the time of a release one, and cargo-fuzz only starts cargo and the fuzzer.
  log "installing cargo-fuzz (cargo install --debug)"
  cargo install --locked --debug cargo-fuzz
}

[ $# -gt 0 ] || { echo "usage: $0 grpcurl|h2spec|jaeger|oauth2-as|gravitee|helm|k8s|cargo-fuzz|debian-root|test|maven|deploy..." >&2; exit 64; }
tools=()
for arg in "$@"; do
  case "$arg" in
    test) tools+=(grpcurl h2spec jaeger) ;;
    maven) tools+=(oauth2-as gravitee) ;;
    deploy) tools+=(helm k8s) ;;
    grpcurl|h2spec|jaeger|oauth2-as|gravitee|helm|k8s|cargo-fuzz|debian-root) tools+=("$arg") ;;
    *) echo "$0: unknown tool '$arg'" >&2; exit 64 ;;
  esac
done
for tool in "${tools[@]}"; do
  start=$(date +%s)
  case "$tool" in
    grpcurl) locked grpcurl build_grpcurl ;;
    h2spec|jaeger) locked "$tool" build_go_tool "$tool" ;;
    oauth2-as) locked maven bash "$root/tests/oauth2-as/setup.sh" >/dev/null ;;
    gravitee) locked maven bash "$root/tests/compat/gravitee-gw/setup.sh" >/dev/null ;;
    helm) locked helm build_helm ;;
    k8s) locked k8s build_k8s ;;
    cargo-fuzz) locked cargo-fuzz build_cargo_fuzz ;;
    debian-root) locked debian-root bash "$root/tests/deploy/debian-root.sh" >/dev/null ;;
  esac
  log "$tool ready ($(( $(date +%s) - start )) s)"
done
