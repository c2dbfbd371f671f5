#!/usr/bin/env bash
# The appliance image recipe:  rootfs/build.sh [ARCH] [OUT]   (make image)
#   ARCH amd64 (default): OUT/rootfs-amd64.squashfs and OUT/disk-amd64.img, a BIOS/GRUB disk with
#        p1 boot (GRUB config + environment), p2 root slot A, p3 root slot B, p4 data (ext4).
#   ARCH arm64: OUT/rootfs-arm64.squashfs from the same recipe (U-Boot boards write it with their own
#        bootloader layout; see board/).
# The debootstrap base is cached under build/rootfs keyed by the package lists (rootfs/base.sh).
# Needs root. Versions: NVR_VERSION (default 0.0.0) goes into /etc/nvr-release and the RAUC bundle.
# Trust: NVR_KEYRING (RAUC bundle signing certificate) and NVR_TUF_ROOT (the fleet's TUF root.json), by
# default from build/release (nvr release init; nvr release cert).
# NVR_OVERLAY=DIR copies DIR over the root after the recipe's files; NVR_ROOTFS_ONLY=1 stops after the
# squashfs (an update's root file system needs no disk). A build whose inputs did not change is reused.
set -euo pipefail
arch=${1:-amd64}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
out=${2:-$top/build/image}
version=${NVR_VERSION:-0.0.0}
mkdir -p "$out"
tools=(debootstrap squashfs-tools e2fsprogs fdisk grub-pc-bin grub-common)
[ "$arch" = "$(dpkg --print-architecture)" ] || tools+=(qemu-user-static)
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "image: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
base=$("$here/base.sh" "$arch" "$top/build/rootfs")
work=$(mktemp -d "$top/build/.image-XXXXXX")
trap 'rm -rf "$work"' EXIT
keyring=${NVR_KEYRING:-$top/build/release/keys/bundle.cert.pem}
tufroot=${NVR_TUF_ROOT:-$top/build/release/repository/metadata/1.root.json}
overlay=${NVR_OVERLAY:-}

# The appliance: nvrd, static, for the target architecture.
(cd "$top" && CGO_ENABLED=0 GOARCH="$arch" go build -trimpath -ldflags="-s -w" -o "$work/nvrd" ./cmd/nvrd)

# Inputs of this build; an output made from the same ones is reused.
key=$( { echo "$arch $version ${NVR_ROOTFS_ONLY:-0} ${NVR_DATA_MIB:-512} $base"; sha256sum <"$work/nvrd"; sha256sum <"$0";
  (cd "$here" && find files grub -type f -print0 | sort -z | xargs -0 sha256sum);
  [ -z "$overlay" ] || (cd "$overlay" && find . -type f -print0 | sort -z | xargs -0 sha256sum);
  cat "$keyring" "$tufroot" 2>/dev/null; cat "${NVR_DATA_ENV:-/dev/null}"; } | sha256sum | cut -c1-16)
squash="$out/rootfs-$arch.squashfs"
disk="$out/disk-amd64.img"
if [ -f "$out/.key-$arch" ] && [ "$(cat "$out/.key-$arch")" = "$key" ] && [ -s "$squash" ] &&
   { [ "$arch" != amd64 ] || [ "${NVR_ROOTFS_ONLY:-0}" = 1 ] || [ -s "$disk" ]; }; then
  echo "image: $out is up to date (inputs $key)" >&2
  [ "$arch" = amd64 ] && [ "${NVR_ROOTFS_ONLY:-0}" != 1 ] && echo "$disk"
  exit 0
fi
rm -f "$out/.key-$arch"
root="$work/root"
mkdir -p "$root"
tar --numeric-owner -C "$root" -xf "$base"
install -m 0755 "$work/nvrd" "$root/usr/bin/nvrd"
cp -a "$here/files/." "$root/"
[ -z "$overlay" ] || cp -a "$overlay/." "$root/"
chmod 0644 "$root/etc/systemd/system/nvrd.service" "$root/etc/rauc/system.conf"
if [ "$arch" = arm64 ]; then
  sed -i 's/^compatible=.*/compatible=nvr-arm64-rpi4/; s/^bootloader=.*/bootloader=uboot/; /^grubenv=/d' "$root/etc/rauc/system.conf"
fi
if [ -f "$keyring" ]; then
  cp "$keyring" "$root/etc/rauc/keyring.pem"
else
  echo "image: no release certificate at $keyring; the image will refuse every bundle until one is given (NVR_KEYRING)" >&2
  : >"$root/etc/rauc/keyring.pem"
fi
mkdir -p "$root/etc/nvr"
if [ -f "$tufroot" ]; then
  install -m 0644 "$tufroot" "$root/etc/nvr/root.json"
else
  echo "image: no TUF root at $tufroot; the update agent cannot be enabled in this image (NVR_TUF_ROOT)" >&2
fi
echo "NVR_VERSION=$version" >"$root/etc/nvr-release"
# Its own user, in the tss group for /dev/tpmrm0.
chroot "$root" /usr/sbin/groupadd --system nvr
chroot "$root" /usr/sbin/useradd --system --gid nvr --groups tss --home-dir /data/nvr --no-create-home --shell /usr/sbin/nologin nvr
mkdir -p "$root/data" "$root/mnt/boot"
for u in nvrd.service nvr-reboot.path nvr-trial-guard.service; do
  ln -sf "/etc/systemd/system/$u" "$root/etc/systemd/system/multi-user.target.wants/$u"
done
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
# Kernel modules no appliance uses (graphics, sound, cameras on USB, radio, cluster file systems...): a
# smaller root is a faster update. Networking, storage, TPM, device mapper, netfilter and I2C stay.
kv=$(ls "$root/usr/lib/modules" | sort -V | tail -1)
km="$root/usr/lib/modules/$kv/kernel"
rm -rf "$km/drivers/gpu" "$km/drivers/media" "$km/sound" "$km/drivers/infiniband" "$km/drivers/net/wireless" \
  "$km/net/wireless" "$km/net/mac80211" "$km/net/bluetooth" "$km/drivers/bluetooth" "$km/drivers/staging" \
  "$km/drivers/iio" "$km/drivers/isdn" "$km/fs/ocfs2" "$km/fs/xfs" "$km/fs/btrfs" "$km/fs/smb" "$km/fs/nfs" \
  "$km/fs/nfsd" "$km/fs/ceph" "$km/fs/gfs2" "$km/drivers/net/ethernet/mellanox" "$km/lib/test_bpf.ko"
chroot "$root" depmod -a "$kv"
# A read-only root: an empty machine-id is filled in memory by systemd at each boot.
: >"$root/etc/machine-id"
echo nvr >"$root/etc/hostname"
# Stable kernel names for grub.cfg (hard links: no extra space in the squashfs).
k=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1); i=$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)
ln -f "$k" "$root/boot/vmlinuz"; ln -f "$i" "$root/boot/initrd.img"
rm -rf "$root/var/cache/apt/"* "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/usr/share/locale/"*
rm -f "$squash"
# gzip: GRUB 2.06 reads gzip, lzo and xz squashfs (not zstd); gzip builds several times faster than xz.
mksquashfs "$root" "$squash" -comp gzip -noappend -quiet >/dev/null
echo "image: $squash $(du -h "$squash" | cut -f1)" >&2
if [ "$arch" != amd64 ] || [ "${NVR_ROOTFS_ONLY:-0}" = 1 ]; then
  echo "$key" >"$out/.key-$arch"
  exit 0
fi

# The x86 disk: MBR id 4e565231 (root=PARTUUID=4e565231-0N), 1 MiB alignment.
MiB=$((1024*1024))
sq=$(stat -c %s "$squash")
slot=$(( (sq * 3 / 2 / MiB + 64) ))     # room for the root to grow by half
boot=16; data=${NVR_DATA_MIB:-512}   # room for recordings' index and one downloaded update bundle
rm -f "$disk"
truncate -s $(( (1 + boot + 2*slot + data) * MiB )) "$disk"
sfdisk -q "$disk" <<SF
label: dos
label-id: 0x4e565231
start=1MiB, size=${boot}MiB, type=83, bootable
size=${slot}MiB, type=83
size=${slot}MiB, type=83
size=${data}MiB, type=83
SF
bootdir="$work/boot"
mkdir -p "$bootdir/grub"
cp "$here/grub/grub.cfg" "$bootdir/grub/grub.cfg"
grub-editenv "$bootdir/grub/grubenv" create
grub-editenv "$bootdir/grub/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
mkfs.ext4 -q -L nvr-boot -O ^has_journal -d "$bootdir" "$work/boot.img" ${boot}M
datadir="$work/data"
mkdir -p "$datadir/nvr" "$datadir/etc"
uid=$(chroot "$root" id -u nvr); gid=$(chroot "$root" id -g nvr)
chown "$uid:$gid" "$datadir/nvr"; chmod 700 "$datadir/nvr"
[ -n "${NVR_DATA_ENV:-}" ] && cp "$NVR_DATA_ENV" "$datadir/etc/nvrd.env"
mkfs.ext4 -q -L nvr-data -d "$datadir" "$work/data.img" ${data}M
dd if="$work/boot.img" of="$disk" bs=1M seek=1 conv=notrunc status=none
dd if="$squash" of="$disk" bs=1M seek=$((1 + boot)) conv=notrunc status=none
dd if="$squash" of="$disk" bs=1M seek=$((1 + boot + slot)) conv=notrunc status=none
dd if="$work/data.img" of="$disk" bs=1M seek=$((1 + boot + 2*slot)) conv=notrunc status=none
# GRUB for BIOS: boot.img in the MBR (keeping the partition table), core.img in the gap before p1.
grub-mkimage -O i386-pc -o "$work/core.img" -p '(hd0,msdos1)/grub' \
  biosdisk part_msdos ext2 squash4 linux normal configfile loadenv test echo
dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
echo "image: $disk $(du -h --apparent-size "$disk" | cut -f1) (slots of $slot MiB)" >&2
echo "$key" >"$out/.key-$arch"
echo "$disk"
