// Package update owns the appliance's firmware updates: it asks a TUF repository (the fleet server, any
// static web server) for the newest RAUC bundle meant for this board, downloads it with its length and
// hash bound by signed metadata, hands it to RAUC to install into the inactive slot, and after the reboot
// marks the new slot good only once nvrd reports healthy, so that the bootloader falls back otherwise. It
// also holds the release side (keys, bundles, TUF metadata) that `nvr release` drives.
//
// It defines the Bootloader interface (GRUB environment on x86, U-Boot environment on arm64) that board
// profiles select; it never writes a slot or a bootloader variable itself except through RAUC or those
// standard tools, never installs anything whose metadata did not verify against the pinned root, and never
// puts a key, a URL credential or a signature secret into a log line or an error.
package update
