#!/usr/bin/env bash
# tests/deploy/debian-root.sh — prints the path of a clean Debian bookworm root tarball (minbase + systemd),
# made by debootstrap from Debian's packages once and cached under ~/.cache/hgw-deploy/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
out="$HGW_CACHE/hgw-deploy/debian-bookworm-systemd.tar.gz"
if [ ! -s "$out" ]; then
  apt_install debootstrap
  mkdir -p "$(dirname "$out")"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  log "debootstrap bookworm (minbase + systemd) from ${mirror:-http://deb.debian.org/debian}"
  debootstrap --variant=minbase --include=systemd,adduser bookworm "$work/root" "${mirror:-http://deb.debian.org/debian}" >&2
  tar -C "$work/root" -czf "$out.tmp" . && mv "$out.tmp" "$out"
fi
echo "$out"
