#!/usr/bin/env bash
# tests/deploy/run.sh [docker] [k8s] [packages] — the deployment tests (default: all three), with the real
# parts: dockerd (started when not running), a real kube-apiserver + etcd, debootstrap. Installs what it
# needs (apt: docker.io docker-compose rpm debootstrap systemd redis-server; scripts/tools.sh: helm), caches
# the slow builds under ~/.cache (kube-apiserver, etcd, the Debian root), builds target/debug (given
# to deploy/docker/build.sh and deploy/packages/build.sh as HGW_RELEASE_DIR). Needs root (dockerd,
# chroot). Ends with "N passed, M failed" and exits non-zero on any failure; prints each part's time.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
# k8s last: scripts/test.sh builds kube-apiserver in the background meanwhile.
sections=("$@"); [ ${#sections[@]} -eq 0 ] && sections=(docker packages k8s)
if [ "$(id -u)" -ne 0 ]; then echo "tests/deploy/run.sh needs root (dockerd, chroot, mount)" >&2; exit 1; fi
apt_install docker.io docker-compose rpm debootstrap systemd redis-server openssl python3 kubectl 2>/dev/null \
  || apt_install docker.io docker-compose rpm debootstrap systemd redis-server openssl python3
total_start=$(date +%s)
# The binaries packaged here are the debug build the rest of the suite already made (the packaging
# scripts strip their debug info): these tests check packaging, images, manifests and injection, not
# speed, and a second optimised build of every dependency took a fresh CI machine ten minutes.
log "cargo build (debug: hgw-agent, hgw-dataplane, the emulator)"
(cd "$HGW_ROOT" && cargo build --locked --bins -p hgw-agent -p hgw-dataplane -p hgw-tests) >&2 \
  || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
export HGW_RELEASE_DIR="$HGW_ROOT/target/debug"
passed=0; failed=0; times=()
# A dockerd the docker part starts is its to stop (by pid, on exit); one already running is left alone.
docker_before=no; docker info >/dev/null 2>&1 && docker_before=yes
for section in "${sections[@]}"; do
  start=$(date +%s)
  out=$(mktemp)
  bash "$here/$section.sh" 2>&1 | tee "$out"; rc=${PIPESTATUS[0]}
  if [ "$section" = docker ]; then
    if [ "$docker_before" = yes ]; then
      check "docker: the dockerd that was already running is left running" \
        bash -c 'docker info >/dev/null 2>&1' | tee -a "$out"
    else
      check "docker: the dockerd the tests started is stopped on exit" \
        bash -c '! docker info >/dev/null 2>&1 && ! pgrep -x dockerd >/dev/null' | tee -a "$out"
    fi
  fi
  p=$(grep -c '^ok - ' "$out"); f=$(grep -c '^FAIL - ' "$out")
  # A part that stopped early without a FAIL line still fails the run.
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)); failed=$((failed + f)); rm -f "$out"
  times+=("$section $(( $(date +%s) - start ))s")
done
echo "deploy tests: ${times[*]}, total $(( $(date +%s) - total_start ))s" >&2
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
