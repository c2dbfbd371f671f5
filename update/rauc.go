package update

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Installer is the slot installer the agent drives. RAUC implements it; its methods never touch the booted
// slot: Install writes only the inactive one and switches the boot order.
type Installer interface {
	// Info verifies a bundle's signature against the installer's keyring and returns its manifest.
	Info(ctx context.Context, bundle string) (BundleInfo, error)
	// Install installs a verified bundle into the inactive slot and makes it the next to boot (on trial).
	Install(ctx context.Context, bundle string) error
	// Status says which slot is booted and how each is marked.
	Status(ctx context.Context) (SlotStatus, error)
	// MarkGood marks the booted slot good, ending its trial.
	MarkGood(ctx context.Context) error
}

// BundleInfo is the part of a RAUC bundle's manifest the agent checks.
type BundleInfo struct {
	Compatible string `json:"compatible"`
	Version    string `json:"version"`
}

// SlotStatus is the part of `rauc status` the agent reads.
type SlotStatus struct {
	Compatible  string                `json:"compatible"`
	Booted      string                `json:"booted"`       // bootname of the booted slot ("A", "B")
	BootPrimary string                `json:"boot_primary"` // slot name the bootloader tries first ("rootfs.1")
	Slots       []map[string]SlotInfo `json:"slots"`
}

// SlotInfo describes one slot.
type SlotInfo struct {
	Class      string `json:"class"`
	Device     string `json:"device"`
	Bootname   string `json:"bootname"`
	State      string `json:"state"`       // "booted", "active" or "inactive"
	BootStatus string `json:"boot_status"` // "good" or "bad"
}

// maxToolOutput bounds what the agent reads from RAUC.
const maxToolOutput = 1 << 20

// ParseBundleInfo parses `rauc info --output-format=json` and checks the fields the agent relies on.
func ParseBundleInfo(b []byte) (BundleInfo, error) {
	var info BundleInfo
	if len(b) > maxToolOutput {
		return info, fmt.Errorf("%w: bundle info of %d bytes", ErrMalformed, len(b))
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("%w: bundle info: %v", ErrMalformed, err)
	}
	if !ValidName(info.Compatible) {
		return info, fmt.Errorf("%w: bundle compatible %q", ErrMalformed, clip(info.Compatible))
	}
	if _, err := ParseVersion(info.Version); err != nil {
		return info, fmt.Errorf("bundle manifest: %w", err)
	}
	return info, nil
}

// ParseSlotStatus parses `rauc status --output-format=json`.
func ParseSlotStatus(b []byte) (SlotStatus, error) {
	var st SlotStatus
	if len(b) > maxToolOutput {
		return st, fmt.Errorf("%w: rauc status of %d bytes", ErrMalformed, len(b))
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%w: rauc status: %v", ErrMalformed, err)
	}
	if st.Booted == "" {
		return st, fmt.Errorf("%w: rauc status names no booted slot", ErrMalformed)
	}
	return st, nil
}

// BootedSlot returns the name and description of the booted slot.
func (s SlotStatus) BootedSlot() (string, SlotInfo, bool) {
	for _, m := range s.Slots {
		for name, si := range m {
			if si.State == "booted" || (si.Bootname != "" && si.Bootname == s.Booted) {
				return name, si, true
			}
		}
	}
	return "", SlotInfo{}, false
}

// RAUC drives the rauc command line tool, which talks to the RAUC service over D-Bus (the service does the
// privileged work; the caller needs only the D-Bus right to call it).
type RAUC struct {
	// Binary is the rauc executable; "rauc" if empty.
	Binary string
	// Conf is passed as --conf when set (tests and images with a non-default system.conf).
	Conf string
	// Env is added to the tool's environment (DBUS_SYSTEM_BUS_ADDRESS in tests).
	Env []string
	// Timeout bounds each call; install is given ten times as long. Default 1 minute.
	Timeout time.Duration
}

func (r RAUC) run(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	if timeout <= 0 {
		timeout = r.Timeout
	}
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bin := r.Binary
	if bin == "" {
		bin = "rauc"
	}
	if r.Conf != "" {
		args = append([]string{"--conf=" + r.Conf}, args...)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	if len(r.Env) > 0 {
		cmd.Env = append(cmd.Environ(), r.Env...)
	}
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxToolOutput, 64<<10
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		op := args[0]
		if r.Conf != "" {
			op = args[1]
		}
		return stdout.Bytes(), fmt.Errorf("rauc %s: %w: %s", op, err, lastLines(stderr.String(), 3))
	}
	return stdout.Bytes(), nil
}

// Info runs `rauc info`, which verifies the bundle's signature against the keyring in system.conf.
func (r RAUC) Info(ctx context.Context, bundle string) (BundleInfo, error) {
	out, err := r.run(ctx, 0, "info", "--output-format=json", bundle)
	if err != nil {
		if strings.Contains(err.Error(), "signature") || strings.Contains(err.Error(), "Verify error") {
			return BundleInfo{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
		}
		return BundleInfo{}, err
	}
	return ParseBundleInfo(out)
}

// Install runs `rauc install`.
func (r RAUC) Install(ctx context.Context, bundle string) error {
	t := r.Timeout
	if t <= 0 {
		t = time.Minute
	}
	_, err := r.run(ctx, 10*t, "install", bundle)
	if err != nil && (strings.Contains(err.Error(), "signature") || strings.Contains(err.Error(), "Verify error")) {
		return fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	return err
}

// Status runs `rauc status`.
func (r RAUC) Status(ctx context.Context) (SlotStatus, error) {
	out, err := r.run(ctx, 0, "status", "--output-format=json")
	if err != nil {
		return SlotStatus{}, err
	}
	return ParseSlotStatus(out)
}

// MarkGood runs `rauc status mark-good booted`.
func (r RAUC) MarkGood(ctx context.Context) error {
	_, err := r.run(ctx, 0, "status", "mark-good", "booted")
	return err
}

// limitedBuffer keeps at most max bytes and drops the rest.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.Len(); room > 0 {
		if len(p) > room {
			l.Buffer.Write(p[:room])
		} else {
			l.Buffer.Write(p)
		}
	}
	return len(p), nil
}

func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if !strings.HasPrefix(l, "rauc-Message:") && strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
