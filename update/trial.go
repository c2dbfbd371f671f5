package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The agent keeps two small records in its state directory so that a firmware which failed its trial is
// not installed again and again:
//
//	install.json  the version just installed, the slot it was installed from and the boot it happened in
//	failed.json   the newest version that the bootloader had to fall back from
//
// After a reboot, booting the slot the install came from means the new firmware never got healthy within
// its boot attempts; that version (and older ones) is then refused until the fleet offers a newer one.
type installRecord struct {
	Version string `json:"version"`
	From    string `json:"from"`    // bootname of the slot that was running when it was installed
	BootID  string `json:"boot_id"` // the kernel's boot id at install time
}

type failedRecord struct {
	Version string `json:"version"`
}

// maxRecord bounds what the agent reads back from its own state files.
const maxRecord = 4096

func (a *Agent) installFile() string { return filepath.Join(a.cfg.Client.StateDir, "install.json") }
func (a *Agent) failedFile() string  { return filepath.Join(a.cfg.Client.StateDir, "failed.json") }

// parseInstallRecord parses install.json and checks its fields.
func parseInstallRecord(b []byte) (installRecord, error) {
	var r installRecord
	if len(b) > maxRecord {
		return r, fmt.Errorf("%w: install record of %d bytes", ErrMalformed, len(b))
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: install record: %v", ErrMalformed, err)
	}
	if _, err := ParseVersion(r.Version); err != nil {
		return r, fmt.Errorf("install record: %w", err)
	}
	if r.From == "" || r.BootID == "" || len(r.From) > 16 || len(r.BootID) > 64 {
		return r, fmt.Errorf("%w: install record without slot or boot", ErrMalformed)
	}
	return r, nil
}

func readRecord(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, maxRecord+1)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(name), err)
	}
	return b[:n], nil
}

// writeRecord writes v as JSON atomically (temporary file, fsync, rename).
func writeRecord(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return fmt.Errorf("update state: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(name), ".record-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(name), err)
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", filepath.Base(name), err)
	}
	if err := os.Rename(f.Name(), name); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", filepath.Base(name), err)
	}
	return nil
}

// recordInstall notes that t was installed while bootname was running, in boot bootID. The install has
// happened whatever becomes of the record: a record that cannot be written is logged, and only costs the
// memory of a failed trial of this version.
func (a *Agent) recordInstall(t Target, bootname, bootID string) {
	r := installRecord{Version: t.Version, From: bootname, BootID: bootID}
	a.pending = &r
	if err := writeRecord(a.installFile(), r); err != nil {
		a.log.Error("install record not written; a failed trial of this version would not be remembered", "version", t.Version, "err", err)
	}
}

// reconcileInstall reads the install record at start: a reboot still pending, a trial of the installed
// firmware, or a fallback from it (which is recorded as failed).
func (a *Agent) reconcileInstall(booted string) error {
	a.pending, a.confirms = nil, nil
	b, err := readRecord(a.installFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	r, err := parseInstallRecord(b)
	if err != nil {
		a.log.Warn("dropping unreadable install record", "err", err)
		return a.removeInstall()
	}
	id, err := a.cfg.BootID()
	if err != nil {
		return fmt.Errorf("boot id: %w", err)
	}
	switch {
	case r.BootID == id:
		a.pending = &r
		a.log.Info("firmware installed in this boot; waiting for the reboot", "version", r.Version)
	case booted == r.From:
		a.log.Error("firmware did not become healthy in its boot attempts; the bootloader fell back, and it will not be installed again",
			"version", r.Version, "bootname", booted)
		if err := a.recordFailed(r.Version); err != nil {
			return err
		}
		return a.removeInstall()
	default:
		a.confirms = &r
	}
	return nil
}

// confirmed is called once the booted slot is good: the trial of the installed firmware, if any, is over.
func (a *Agent) confirmed(slot string) error {
	if a.confirms == nil {
		return nil
	}
	a.log.Info("firmware update confirmed", "version", a.confirms.Version, "slot", slot)
	a.confirms = nil
	return a.removeInstall()
}

func (a *Agent) removeInstall() error {
	if err := os.Remove(a.installFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("update state: %w", err)
	}
	return nil
}

func (a *Agent) recordFailed(version string) error {
	v, err := ParseVersion(version)
	if err != nil {
		return err
	}
	if old, ok := a.failedVersion(); ok && old.Compare(v) >= 0 {
		return nil
	}
	return writeRecord(a.failedFile(), failedRecord{Version: v.String()})
}

func (a *Agent) failedVersion() (Version, bool) {
	b, err := readRecord(a.failedFile())
	if err != nil {
		return Version{}, false
	}
	var r failedRecord
	if len(b) > maxRecord || json.Unmarshal(b, &r) != nil {
		return Version{}, false
	}
	v, err := ParseVersion(r.Version)
	return v, err == nil
}

// refuseFailed refuses a target no newer than a firmware that failed its trial.
func (a *Agent) refuseFailed(t Target) error {
	f, ok := a.failedVersion()
	if !ok {
		return nil
	}
	v, err := ParseVersion(t.Version)
	if err != nil {
		return err
	}
	if v.Compare(f) <= 0 {
		return fmt.Errorf("%w: %s is offered, but %s failed its trial boot here; waiting for a newer release", ErrNoUpdate, v, f)
	}
	return nil
}

// kernelBootID reads the kernel's random id of the running boot.
func kernelBootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
