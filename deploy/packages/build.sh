#!/usr/bin/env bash
# deploy/packages/build.sh [OUT_DIR] — builds hgw_VERSION_amd64.deb, hgw-VERSION-1.x86_64.rpm and
# hgw-VERSION-linux-x86_64.tar.gz (same layout) from the release binaries (built with cargo when
# missing or stale; HGW_RELEASE_DIR to use binaries built elsewhere). Needs dpkg-deb and rpmbuild
# (apt-get install rpm). Prints the three paths.
#
# Layout: /usr/bin/hgw-agent, /usr/bin/hgw-dataplane, the systemd unit (User=hgw), /etc/hgw/agent.env
# (config, kept on upgrade), sysusers.d and tmpfiles.d entries for the hgw user, /var/lib/hgw and
# /etc/hgw, the example APIs in /usr/share/hgw/examples/apis.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/deploy/packages"
out=${1:-$root/target/packages}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
release=${HGW_RELEASE_DIR:-$root/target/release}
if [ -z "${HGW_RELEASE_DIR:-}" ]; then
  (cd "$root" && cargo build --release --locked -p hgw-agent -p hgw-dataplane) >&2
fi
mkdir -p "$out"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# The file tree every format shares. $1: destination, $2: systemd unit folder.
lay_out() {
  local dest=$1 unitdir=$2
  install -d "$dest/usr/bin" "$dest$unitdir" "$dest/etc/hgw" "$dest/var/lib/hgw" \
    "$dest/usr/lib/sysusers.d" "$dest/usr/lib/tmpfiles.d" "$dest/usr/share/hgw/examples/apis" \
    "$dest/usr/share/doc/hgw"
  for bin in hgw-agent hgw-dataplane; do
    install -m 0755 "$release/$bin" "$dest/usr/bin/$bin"
    strip --strip-debug "$dest/usr/bin/$bin" 2>/dev/null || true
  done
  # The repository's unit, for a packaged install: binaries in /usr/bin, the static hgw user.
  sed -e 's#/usr/local/bin/#/usr/bin/#g' -e 's#^DynamicUser=yes#User=hgw\nGroup=hgw#' \
    -e 's#^\# Install: binaries in /usr/local/bin,#\# Installed by the hgw package: binaries in /usr/bin,#' \
    "$root/deploy/systemd/hgw-agent.service" > "$dest$unitdir/hgw-agent.service"
  chmod 0644 "$dest$unitdir/hgw-agent.service"
  install -m 0640 "$here/agent.env" "$dest/etc/hgw/agent.env"
  install -m 0644 "$here/sysusers.conf" "$dest/usr/lib/sysusers.d/hgw.conf"
  install -m 0644 "$here/tmpfiles.conf" "$dest/usr/lib/tmpfiles.d/hgw.conf"
  install -m 0644 "$root"/deploy/examples/apis/*.json "$dest/usr/share/hgw/examples/apis/"
  install -m 0644 "$root/README.md" "$dest/usr/share/doc/hgw/README.md"
  chmod 0750 "$dest/var/lib/hgw" "$dest/etc/hgw"
}

# Creates the user and folders (sysusers/tmpfiles when systemd is there, else adduser/useradd).
postinst_body='if command -v systemd-sysusers >/dev/null 2>&1; then systemd-sysusers hgw.conf; fi
if ! getent passwd hgw >/dev/null; then
  if command -v adduser >/dev/null 2>&1; then adduser --system --group --home /var/lib/hgw --no-create-home hgw >/dev/null;
  else useradd --system --user-group --home-dir /var/lib/hgw --shell /usr/sbin/nologin hgw; fi
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then systemd-tmpfiles --create hgw.conf || true; fi
chown hgw:hgw /var/lib/hgw; chmod 0750 /var/lib/hgw
chown root:hgw /etc/hgw /etc/hgw/agent.env; chmod 0750 /etc/hgw; chmod 0640 /etc/hgw/agent.env
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi'

# --- .deb (dpkg-deb) ---
deb="$work/deb"
lay_out "$deb" /lib/systemd/system
install -d "$deb/DEBIAN"
size=$(du -sk "$deb" | cut -f1)
cat > "$deb/DEBIAN/control" <<CONTROL
Package: hgw
Version: $version
Architecture: amd64
Maintainer: hgw maintainers <hgw@example.invalid>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1
Recommends: systemd
Section: net
Priority: optional
Homepage: https://example.invalid/hgw
Description: hybrid API gateway for Gravitee Cloud
 hgw-agent (Cloud Token, sync, analytics upload) and hgw-dataplane (the proxy),
 with a systemd unit running an agent and a pool of dataplanes.
CONTROL
printf '/etc/hgw/agent.env\n' > "$deb/DEBIAN/conffiles"
printf '#!/bin/sh\nset -e\n%s\n' "$postinst_body" > "$deb/DEBIAN/postinst"
printf '#!/bin/sh\nset -e\nif [ -d /run/systemd/system ] && [ "$1" = remove ]; then systemctl stop hgw-agent.service || true; fi\n' > "$deb/DEBIAN/prerm"
chmod 0755 "$deb/DEBIAN/postinst" "$deb/DEBIAN/prerm"
debfile="$out/hgw_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zgzip --build "$deb" "$debfile" >/dev/null

# --- .tar.gz (the same tree, unit under /usr/lib/systemd/system) ---
tree="$work/tar/hgw-$version"
lay_out "$tree" /usr/lib/systemd/system
printf '#!/bin/sh\n# Run after extracting this tree at / (tar -xzf hgw-*.tar.gz --strip-components=1 -C /).\nset -e\n%s\n' \
  "$postinst_body" > "$tree/usr/share/hgw/postinstall.sh"
chmod 0755 "$tree/usr/share/hgw/postinstall.sh"
tarfile="$out/hgw-$version-linux-x86_64.tar.gz"
tar -C "$work/tar" --owner=0 --group=0 -czf "$tarfile" "hgw-$version"

# --- .rpm (rpmbuild from the prepared tree) ---
command -v rpmbuild >/dev/null || { echo "build.sh: rpmbuild missing (apt-get install rpm)" >&2; exit 1; }
rpmtree="$work/rpmroot"
lay_out "$rpmtree" /usr/lib/systemd/system
cat > "$work/hgw.spec" <<SPEC
Name: hgw
Version: $version
Release: 1
Summary: hybrid API gateway for Gravitee Cloud
License: Apache-2.0
BuildArch: x86_64
AutoReqProv: no
Requires: glibc >= 2.34
%description
hgw-agent (Cloud Token, sync, analytics upload) and hgw-dataplane (the proxy), with a systemd unit.
%install
cp -a $rpmtree/. %{buildroot}/
%pre
getent group hgw >/dev/null || groupadd -r hgw
getent passwd hgw >/dev/null || useradd -r -g hgw -d /var/lib/hgw -s /sbin/nologin hgw
%post
$postinst_body
%files
%attr(0755,root,root) /usr/bin/hgw-agent
%attr(0755,root,root) /usr/bin/hgw-dataplane
%attr(0644,root,root) /usr/lib/systemd/system/hgw-agent.service
%attr(0644,root,root) /usr/lib/sysusers.d/hgw.conf
%attr(0644,root,root) /usr/lib/tmpfiles.d/hgw.conf
%dir %attr(0750,root,hgw) /etc/hgw
%config(noreplace) %attr(0640,root,hgw) /etc/hgw/agent.env
%dir %attr(0750,hgw,hgw) /var/lib/hgw
/usr/share/hgw
%doc /usr/share/doc/hgw/README.md
SPEC
rpmbuild -bb --quiet --define "_topdir $work/rpmbuild" --define "_build_id_links none" \
  --define "__strip /bin/true" --define "_source_payload w9.gzdio" --define "_binary_payload w9.gzdio" \
  "$work/hgw.spec" >/dev/null 2>"$work/rpmbuild.log" || { cat "$work/rpmbuild.log" >&2; exit 1; }
rpmfile="$out/hgw-$version-1.x86_64.rpm"
cp "$work"/rpmbuild/RPMS/x86_64/hgw-"$version"-1.x86_64.rpm "$rpmfile"
printf '%s\n' "$debfile" "$rpmfile" "$tarfile"
