#!/usr/bin/env bash
# deploy/docker/build.sh [TAG] — builds the image hgw:TAG (default: the workspace version) offline,
# FROM scratch, from the release binaries (built here with cargo when missing or stale) and the shared
# libraries `ldd` says they need. Prints the image's name and size.
# Env: HGW_RELEASE_DIR (default target/release) to use binaries built elsewhere; DOCKER (default docker).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
tag=${1:-$version}
docker=${DOCKER:-docker}
release=${HGW_RELEASE_DIR:-$root/target/release}
if [ -z "${HGW_RELEASE_DIR:-}" ]; then
  (cd "$root" && cargo build --release --locked -p hgw-agent -p hgw-dataplane) >&2
fi
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/rootfs/usr/local/bin" "$stage/rootfs/etc/ssl/certs" "$stage/rootfs/tmp" \
  "$stage/state/var/lib/hgw" "$stage/state/var/run/hgw"
chmod 1777 "$stage/rootfs/tmp"; chmod 0700 "$stage/state/var/lib/hgw"; chmod 0750 "$stage/state/var/run/hgw"
for bin in hgw-agent hgw-dataplane; do
  install -m 0755 "$release/$bin" "$stage/rootfs/usr/local/bin/$bin"
  # Line tables stay in the build tree; the image carries stripped binaries.
  strip --strip-debug "$stage/rootfs/usr/local/bin/$bin" 2>/dev/null || true
  # Every shared object the binary loads, at the same path (the dynamic loader included).
  ldd "$release/$bin" | awk '/=> \//{print $3} /^[[:space:]]*\/.*ld-linux/{print $1}' | while read -r lib; do
    mkdir -p "$stage/rootfs$(dirname "$lib")"
    cp -L "$lib" "$stage/rootfs$lib"
  done
done
printf 'root:x:0:0:root:/:/sbin/nologin\nhgw:x:65532:65532:hgw:/var/lib/hgw:/sbin/nologin\n' > "$stage/rootfs/etc/passwd"
printf 'root:x:0:\nhgw:x:65532:\n' > "$stage/rootfs/etc/group"
printf 'hosts: files dns\n' > "$stage/rootfs/etc/nsswitch.conf"
# Public roots for the Cloud Gate (rustls reads SSL_CERT_FILE).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$stage/rootfs/etc/ssl/certs/"
else
  echo "build.sh: /etc/ssl/certs/ca-certificates.crt missing (apt-get install ca-certificates)" >&2; exit 1
fi
cp "$root/deploy/docker/Dockerfile" "$stage/Dockerfile"
DOCKER_BUILDKIT=0 "$docker" build -q -t "hgw:$tag" --label "org.opencontainers.image.version=$version" "$stage" >&2
size=$("$docker" image inspect -f '{{.Size}}' "hgw:$tag")
echo "hgw:$tag $((size / 1024 / 1024)) MiB"
