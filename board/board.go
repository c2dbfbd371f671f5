package board

import (
	"fmt"
	"sort"
)

// Bootloader kinds. update builds its Bootloader from these.
const (
	BootGRUB  = "grub"  // GRUB environment file, grub-editenv
	BootUBoot = "uboot" // U-Boot environment, fw_setenv with fw_env.config
)

// Port is one Ethernet port.
type Port struct {
	Name  string // kernel interface name on this board (udev naming)
	Label string // what is printed on the case
	Role  string // "camera" or "client"
	PoE   bool   // powers cameras
}

// Boot says how slots are chosen at boot.
type Boot struct {
	Loader     string // BootGRUB or BootUBoot
	EnvPath    string // grubenv file, or fw_env.config for U-Boot
	MaxTries   int    // boot attempts per slot before falling back
	SlotA      string // block device of root slot A (stable path)
	SlotB      string
	Bootnames  [2]string
	Compatible string // RAUC compatible: a bundle for another board is refused
}

// Storage is the disk layout.
type Storage struct {
	Disk     string // whole boot disk
	DataPart string // data partition (recordings, index, update state)
	// Recordings may go to a separate disk on larger boxes.
	RecordingDisk string
}

// Profile is one board.
type Profile struct {
	Name  string // board name, also the update target directory (update.Target.Board)
	Arch  string // Debian architecture: amd64, arm64
	Model string // human readable
	Ports []Port
	// Display is the local display and its buttons (display.go).
	Display Display
	Boot    Boot
	Storage Storage
	// TPM is the TPM device path; boards without a discrete or firmware TPM are not supported.
	TPM string
}

var profiles = map[string]Profile{
	"x86-generic": {
		Name: "x86-generic", Arch: "amd64", Model: "Generic x86-64 box (two or more NICs, TPM 2.0)",
		Ports: []Port{
			{Name: "enp1s0", Label: "LAN", Role: "client"},
			{Name: "enp2s0", Label: "CAM", Role: "camera"},
		},
		Display: Display{Kind: DisplayNone},
		Boot: Boot{Loader: BootGRUB, EnvPath: "/mnt/boot/grub/grubenv", MaxTries: 3,
			SlotA: "/dev/disk/by-partuuid/4e565231-02", SlotB: "/dev/disk/by-partuuid/4e565231-03",
			Bootnames: [2]string{"A", "B"}, Compatible: "nvr-x86-generic"},
		Storage: Storage{Disk: "/dev/disk/by-id/boot", DataPart: "/dev/disk/by-label/nvr-data"},
		TPM:     "/dev/tpmrm0",
	},
	"arm64-rpi4": {
		Name: "arm64-rpi4", Arch: "arm64", Model: "Raspberry Pi 4 Model B with a TPM 2.0 HAT, PoE HAT, 20x4 I2C character display and a USB Ethernet adapter",
		Ports: []Port{
			{Name: "end0", Label: "CAM (PoE)", Role: "camera", PoE: true},
			{Name: "enx0", Label: "LAN (USB)", Role: "client"},
		},
		Display: Display{Kind: DisplayHD44780, I2CBus: 1, I2CAddr: 0x27, Cols: 20, Rows: 4, Buttons: []Button{
			{Role: ButtonNext, Device: "/dev/input/by-path/platform-gpio-keys-event", Code: 108},
			{Role: ButtonSelect, Device: "/dev/input/by-path/platform-gpio-keys-event", Code: 28},
		}},
		Boot: Boot{Loader: BootUBoot, EnvPath: "/etc/fw_env.config", MaxTries: 3,
			SlotA: "/dev/disk/by-partlabel/rootfs-a", SlotB: "/dev/disk/by-partlabel/rootfs-b",
			Bootnames: [2]string{"A", "B"}, Compatible: "nvr-arm64-rpi4"},
		Storage: Storage{Disk: "/dev/mmcblk0", DataPart: "/dev/disk/by-label/nvr-data", RecordingDisk: "/dev/sda"},
		TPM:     "/dev/tpmrm0",
	},
}

// Lookup returns the named profile.
func Lookup(name string) (Profile, error) {
	p, ok := profiles[name]
	if !ok {
		return Profile{}, fmt.Errorf("board: unknown board %q (known: %v)", name, Names())
	}
	return p, nil
}

// Names lists the known boards.
func Names() []string {
	out := make([]string, 0, len(profiles))
	for n := range profiles {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// CameraPorts returns the ports that face cameras.
func (p Profile) CameraPorts() []Port {
	var out []Port
	for _, port := range p.Ports {
		if port.Role == "camera" {
			out = append(out, port)
		}
	}
	return out
}

// Check reports a profile that could not work.
func (p Profile) Check() error {
	if p.Name == "" || p.Arch == "" || p.TPM == "" {
		return fmt.Errorf("board %q: name, arch and TPM are required", p.Name)
	}
	if p.Boot.Loader != BootGRUB && p.Boot.Loader != BootUBoot {
		return fmt.Errorf("board %s: unknown bootloader %q", p.Name, p.Boot.Loader)
	}
	if p.Boot.SlotA == "" || p.Boot.SlotB == "" || p.Boot.SlotA == p.Boot.SlotB || p.Boot.MaxTries < 1 {
		return fmt.Errorf("board %s: two distinct root slots and at least one boot try are required", p.Name)
	}
	d := p.Display
	if err := d.Validate(); err != nil {
		return fmt.Errorf("board %s: %w", p.Name, err)
	}
	clients, cams := 0, 0
	seen := map[string]bool{}
	for _, port := range p.Ports {
		if seen[port.Name] {
			return fmt.Errorf("board %s: port %s listed twice", p.Name, port.Name)
		}
		seen[port.Name] = true
		switch port.Role {
		case "client":
			clients++
		case "camera":
			cams++
		default:
			return fmt.Errorf("board %s: port %s has role %q", p.Name, port.Name, port.Role)
		}
	}
	if clients == 0 || cams == 0 {
		return fmt.Errorf("board %s: needs a client port and a camera port (separate networks)", p.Name)
	}
	return nil
}
