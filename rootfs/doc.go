// Package rootfs holds the appliance's image recipe (shell scripts, systemd units, RAUC and GRUB
// configuration under files/) and the tests that check it: the hardened unit read by systemd-analyze, and,
// with the imagetest build tag (make image-test), the built disk image booted in qemu. It has no code of
// its own that the appliance imports, and must never be imported.
package rootfs
