// Package board holds the hardware profiles the firmware is built for: which network ports are camera
// ports and which face the clients, the local display and its buttons, the bootloader and where its
// environment lives, the disk layout and the RAUC compatible string. It is a leaf: it imports no project
// package and does nothing but describe; update, netconfig, lcd and rootfs read it. It must never probe
// hardware or hold secrets.
package board
