#!/usr/bin/env bash
# The emulated Raspberry Pi of tests/test_emulated_pi.py: a Debian bookworm arm64 root filesystem
# (the base of Raspberry Pi OS 12) made by debootstrap, run by qemu-user-static through
# binfmt_misc; all from Debian's packages. Needs root (debootstrap, chroot, mount).
#
#   bash scripts/pi_rootfs.sh          # install the tools, enable binfmt, build the cache if missing
#
# The root filesystem is cached as a tarball, $EDGEPRUNE_PI_ROOTFS (default
# /var/cache/edgeprune/pi-bookworm-arm64.tar.gz); the test extracts a fresh copy for every run,
# so the cache is never changed. Measured on this project's 2-core test machine (2026-12-02):
# debootstrap 199 s when the machine was idle, 546 s with other jobs running (load average 7);
# 245 MB unpacked, an 86 MB tarball (gzip -1, about 6 s), extracted in about 3 s.
# Delete the tarball to rebuild it.
set -euo pipefail

cache=${EDGEPRUNE_PI_ROOTFS:-/var/cache/edgeprune/pi-bookworm-arm64.tar.gz}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" != 0 ]; then
  echo "pi_rootfs: needs root (debootstrap, chroot and binfmt_misc)" >&2
  exit 1
fi

missing=()
for tool in debootstrap:debootstrap qemu-aarch64-static:qemu-user-static \
  update-binfmts:binfmt-support; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# binfmt_misc runs aarch64 binaries through qemu-aarch64-static (flag F: also inside a chroot).
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
if ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
  echo "pi_rootfs: binfmt_misc has no enabled qemu-aarch64 entry" >&2
  exit 1
fi

if [ -f "$cache" ]; then
  echo "$cache"
  exit 0
fi

mkdir -p "$(dirname "$cache")"
work=$(mktemp -d /var/tmp/edgeprune-pi-rootfs.XXXXXX)
cleanup() {
  # debootstrap may leave /proc or /sys mounted inside the tree: never descend into them.
  for m in proc sys dev/pts; do umount -l "$work/root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$(date +%s)
echo "pi_rootfs: debootstrap bookworm arm64 into $work/root (about 3-4 minutes)" >&2
debootstrap --arch=arm64 --variant=minbase \
  --include=python3,python3-venv,python3-pip,openssh-server \
  bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  exit 1
}
# A user like Raspberry Pi OS's: the tests log in as pi, not root.
chroot "$work/root" useradd --create-home --shell /bin/bash pi
rm -f "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/*_Packages
echo "pi_rootfs: debootstrap took $(($(date +%s) - start)) s, $(du -sh "$work/root" | cut -f1)" >&2

tar -C "$work/root" --numeric-owner -cf - . | gzip -1 >"$cache.partial"
mv "$cache.partial" "$cache"
echo "pi_rootfs: cached $cache ($(du -h "$cache" | cut -f1)) in $(($(date +%s) - start)) s" >&2
echo "$cache"
