#!/usr/bin/env bash
# tests/deploy/packages.sh — deploy/packages/build.sh makes the .deb, .rpm and .tar.gz; the .deb installs
# into a clean Debian root (debootstrap, cached) where `hgw-agent --version` runs, the hgw user and the
# folders exist and the unit passes `systemd-analyze verify`; `rpm -qlp` lists the .rpm; the .tar.gz has
# the same files. Sourced by run.sh (counts ok/FAIL); needs the release binaries (or builds them).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pwork=$(mktemp -d)
cleanup_packages() {
  for m in proc sys dev; do mountpoint -q "$pwork/root/$m" && umount -l "$pwork/root/$m"; done
  rm -rf "$pwork"
}
trap cleanup_packages EXIT
apt_install rpm debootstrap systemd
log "packages: deploy/packages/build.sh"
if files=$(HGW_RELEASE_DIR=${HGW_RELEASE_DIR:-} bash "$HGW_ROOT/deploy/packages/build.sh" "$pwork/out"); then
  ok "packages build (.deb, .rpm, .tar.gz)"
else
  fail "packages build"; return 1 2>/dev/null || exit 1
fi
deb=$(echo "$files" | grep '\.deb$'); rpmf=$(echo "$files" | grep '\.rpm$'); tarf=$(echo "$files" | grep '\.tar\.gz$')
rpm -qlp "$rpmf" > "$pwork/rpm.list" 2>/dev/null
echo "rpm -qlp $(basename "$rpmf"):" >&2; sed 's/^/  /' "$pwork/rpm.list" >&2
for f in /usr/bin/hgw-agent /usr/bin/hgw-dataplane /usr/lib/systemd/system/hgw-agent.service /etc/hgw/agent.env /var/lib/hgw /usr/lib/sysusers.d/hgw.conf; do
  check "rpm -qlp lists $f" grep -qx "$f" "$pwork/rpm.list"
done
check "rpm: agent.env is a config file kept on upgrade" bash -c "rpm -qcp '$rpmf' 2>/dev/null | grep -qx /etc/hgw/agent.env"
tar -tzf "$tarf" | sed 's#^[^/]*##' | grep -v '/$' | sort > "$pwork/tar.list"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\.##' | grep -v '/$' | sed 's#^/lib/systemd#/usr/lib/systemd#' | sort > "$pwork/deb.list"
check "the .tar.gz holds the .deb's files (same layout)" bash -c "comm -23 '$pwork/deb.list' '$pwork/tar.list' | (! grep -q .)"

log "the .deb in a clean Debian root (debootstrap, cached)"
# (scripts/test.sh may be making it in the background: this waits for that.)
bash "$HGW_ROOT/scripts/tools.sh" debian-root
root_tar=$(bash "$HGW_ROOT/tests/deploy/debian-root.sh")
mkdir -p "$pwork/root"; tar -C "$pwork/root" -xzf "$root_tar"
mount -t proc proc "$pwork/root/proc"; mount --bind /dev "$pwork/root/dev"
cp "$deb" "$pwork/root/tmp/hgw.deb"
check "dpkg -i installs the .deb in the clean root" bash -c "chroot '$pwork/root' dpkg -i /tmp/hgw.deb >'$pwork/dpkg.log' 2>&1 || { cat '$pwork/dpkg.log'; false; }"
check "hgw-agent --version runs there" bash -c "chroot '$pwork/root' /usr/bin/hgw-agent --version | grep -q '^hgw-agent '"
check "hgw-dataplane --version runs there" bash -c "chroot '$pwork/root' /usr/bin/hgw-dataplane --version | grep -q '^hgw-dataplane '"
check "the hgw system user exists" chroot "$pwork/root" getent passwd hgw
check "/var/lib/hgw is hgw's, 0750" test "$(chroot "$pwork/root" stat -c '%U:%G %a' /var/lib/hgw)" = "hgw:hgw 750"
check "/etc/hgw/agent.env is root:hgw 0640" test "$(chroot "$pwork/root" stat -c '%U:%G %a' /etc/hgw/agent.env)" = "root:hgw 640"
check "systemd-analyze verify passes for hgw-agent.service" \
  bash -c "chroot '$pwork/root' systemd-analyze verify /lib/systemd/system/hgw-agent.service >'$pwork/verify.log' 2>&1 && ! grep -v 'Failed to ' '$pwork/verify.log' | grep -qi hgw || { cat '$pwork/verify.log'; false; }"
check "the installed unit runs as the hgw user from /usr/bin" \
  bash -c "grep -qx 'User=hgw' '$pwork/root/lib/systemd/system/hgw-agent.service' && grep -q '^ExecStart=/usr/bin/hgw-agent' '$pwork/root/lib/systemd/system/hgw-agent.service'"
check "dpkg -r removes the binaries, keeps the configuration" \
  bash -c "chroot '$pwork/root' dpkg -r hgw >/dev/null 2>&1 && test ! -e '$pwork/root/usr/bin/hgw-agent' && test -e '$pwork/root/etc/hgw/agent.env'"
