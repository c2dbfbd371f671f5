#!/usr/bin/env bash
# Builds (or reuses) the cached Debian base of the appliance's root file system:
#   rootfs/base.sh ARCH OUTDIR   → prints the path of OUTDIR/base-ARCH-KEY.tar
# KEY is the hash of the package lists and this script, so a changed list rebuilds and an unchanged one is
# reused as is. The base is debootstrap minbase plus the packages, with an initramfs that can mount a squashfs
# root. Needs root, debootstrap and (for a foreign ARCH) qemu-user-static.
set -euo pipefail
arch=${1:?usage: base.sh ARCH OUTDIR}
out=${2:?usage: base.sh ARCH OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
lists=("$here/packages.txt" "$here/packages-$arch.txt")
for f in "${lists[@]}"; do [ -f "$f" ] || { echo "base: no package list $f" >&2; exit 1; }; done
key=$( (cat "${lists[@]}" "$0"; echo "$suite $arch") | sha256sum | cut -c1-16)
tarball="$out/base-$arch-$key.tar"
if [ -s "$tarball" ]; then
  echo "$tarball"
  exit 0
fi
mkdir -p "$out"
pkgs=$(cat "${lists[@]}" | sed 's/#.*//' | tr -s ' \n' '\n' | grep -v '^$' | paste -sd, -)
work=$(mktemp -d "$out/.base-$arch-XXXXXX")
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$work/root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"
echo "base: debootstrap $suite $arch (minbase + $pkgs)" >&2
foreign=()
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  foreign=(--foreign)
fi
debootstrap --variant=minbase "${foreign[@]}" --arch="$arch" --include="$pkgs" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2; exit 1; }
if [ ${#foreign[@]} -gt 0 ]; then
  # Second stage under user-mode emulation: needs binfmt_misc with the qemu interpreter registered.
  qarch=$(case "$arch" in arm64) echo aarch64;; armhf) echo arm;; *) echo "$arch";; esac)
  cp "/usr/bin/qemu-$qarch-static" "$root/usr/bin/"
  chroot "$root" /debootstrap/debootstrap --second-stage >"$work/stage2.log" 2>&1 || {
    tail -30 "$work/stage2.log" >&2; exit 1; }
fi
# The root is a squashfs on a virtio or SATA disk: make sure the initramfs can mount it.
cat >>"$root/etc/initramfs-tools/modules" <<'EOF'
squashfs
ext4
virtio_pci
virtio_blk
ahci
sd_mod
EOF
mount -t proc proc "$root/proc"
chroot "$root" update-initramfs -u -k all >"$work/initramfs.log" 2>&1 || { tail -30 "$work/initramfs.log" >&2; exit 1; }
umount "$root/proc"
chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists/"* "$root/usr/bin/qemu-"*-static
tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
echo "$tarball"
