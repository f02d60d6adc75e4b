# Shared helpers for tests/deploy/*.sh (sourced). Checks print "ok - NAME" or "FAIL - NAME"; the
# runner counts them.
HGW_ROOT=${HGW_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
HGW_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}
export PATH="$HOME/go/bin:$HOME/.cargo/bin:$PATH"
PASSED=${PASSED:-0}; FAILED=${FAILED:-0}

log() { printf '\n==> %s\n' "$*" >&2; }
ok() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else fail "$name"; fi; }
# A check of work that is known not to pass yet (each named in the README's "Deploy" section, "Known
# gaps"): run and shown as `TODO - ...` when it fails, but not counted as a failure.
gap() { local name=$1; shift; if "$@"; then ok "$name"; else echo "TODO - $name (known gap)"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
  fi
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# wait_until SECONDS CMD...: polls CMD every 0.5 s (bounded), true once it succeeds.
wait_until() {
  local limit=$1; shift
  local tries=$((limit * 2))
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}

# Starts dockerd when no daemon answers (Debian's docker.io), logs under the cache dir, and keeps its
# pid in HGW_DOCKERD_PID for stop_docker. A daemon that was already running is used and left alone.
HGW_DOCKERD_PID=
ensure_docker() {
  command -v dockerd >/dev/null || apt_install docker.io
  command -v docker-compose >/dev/null || apt_install docker-compose
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    mkdir -p "$HGW_CACHE/hgw-deploy"
    dockerd >"$HGW_CACHE/hgw-deploy/dockerd.log" 2>&1 &
    HGW_DOCKERD_PID=$!
    wait_until 60 docker info || { echo "dockerd did not start; see $HGW_CACHE/hgw-deploy/dockerd.log" >&2; return 1; }
  fi
}

# Stops the dockerd ensure_docker started (SIGTERM to its own pid, then waits up to 30 s for it and the
# containerd it runs to exit; SIGKILL after that). Nothing when the daemon was already running.
stop_docker() {
  local pid=${HGW_DOCKERD_PID:-}
  [ -n "$pid" ] || return 0
  HGW_DOCKERD_PID=
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  echo "dockerd ($pid) did not stop within 30 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

# A FROM scratch image of host binaries and the shared libraries they load (no registry pull):
# mini_image TAG ENTRYPOINT BIN...
mini_image() {
  local tag=$1 entry=$2; shift 2
  local stage; stage=$(mktemp -d)
  mkdir -p "$stage/usr/local/bin" "$stage/data" "$stage/tmp"; chmod 1777 "$stage/data" "$stage/tmp"
  for bin in "$@"; do
    cp -L "$bin" "$stage/usr/local/bin/"
    ldd "$bin" | awk '/=> \//{print $3} /^[[:space:]]*\/.*ld-linux/{print $1}' | while read -r lib; do
      mkdir -p "$stage$(dirname "$lib")"; cp -L "$lib" "$stage$lib"
    done
  done
  printf 'FROM scratch\nCOPY . /\nENV PATH=/usr/local/bin\nWORKDIR /data\nENTRYPOINT ["/usr/local/bin/%s"]\n' "$entry" > "$stage/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$stage" >/dev/null
  local rc=$?; rm -rf "$stage"; return $rc
}
