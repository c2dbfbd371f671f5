package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgenvr/nvr/board"
	"github.com/edgenvr/nvr/update"
)

// updateFlags are nvrd's flags for the firmware update agent. The agent is off while -update-repo is empty.
type updateFlags struct {
	repo, root, state, release, bootID *string
	interval, confirmAfter             *time.Duration
}

func addUpdateFlags(fs *flag.FlagSet) *updateFlags {
	return &updateFlags{
		repo:    fs.String("update-repo", "", "fleet server: base URL of the TUF repository (empty: no updates)"),
		root:    fs.String("update-root", "/etc/nvr/root.json", "the trusted TUF root metadata shipped in the image"),
		state:   fs.String("update-state", "/var/lib/nvr/update", "update state: newest trusted metadata, downloaded bundle, install record"),
		release: fs.String("update-release", "/etc/nvr-release", "file naming the running firmware version (NVR_VERSION=MAJOR.MINOR.PATCH)"),
		bootID:  fs.String("update-boot-id", "", "id of the running boot (the unit passes systemd's %b; default: read from /proc)"),
		interval: fs.Duration("update-interval", time.Hour,
			"how often to ask the fleet server for newer firmware"),
		confirmAfter: fs.Duration("update-confirm-after", 2*time.Minute,
			"how long nvrd must be ready and healthy after a boot before the booted slot is marked good"),
	}
}

// startUpdate starts the update agent when -update-repo is set: it marks the booted slot good once nvrd
// has been ready and healthy (every camera pipeline alive) for -update-confirm-after, then polls the fleet
// server, installs newer firmware into the other slot with RAUC and asks for a reboot into it. It runs until
// ctx ends; a configuration error is returned at once.
func startUpdate(ctx context.Context, f *updateFlags, prof board.Profile, ready func() bool,
	healthy func(time.Duration) (bool, []string), log *slog.Logger) error {
	if *f.repo == "" {
		log.Info("update agent off: no -update-repo")
		return nil
	}
	agent, err := newUpdateAgent(f, prof, ready, healthy, log)
	if err != nil {
		return err
	}
	go runUpdate(ctx, agent, log, time.After)
	return nil
}

func newUpdateAgent(f *updateFlags, prof board.Profile, ready func() bool,
	healthy func(time.Duration) (bool, []string), log *slog.Logger) (*update.Agent, error) {
	root, err := readBounded(*f.root, 512<<10)
	if err != nil {
		return nil, fmt.Errorf("update: trusted root: %w", err)
	}
	current, err := releaseVersion(*f.release)
	if err != nil {
		return nil, fmt.Errorf("update: running version: %w", err)
	}
	var boot update.Bootloader
	switch prof.Boot.Loader {
	case board.BootGRUB:
		boot = update.GRUBEnv{Path: prof.Boot.EnvPath, MaxTries: prof.Boot.MaxTries}
	case board.BootUBoot:
		boot = update.UBootEnv{Config: prof.Boot.EnvPath, MaxTries: prof.Boot.MaxTries}
	default:
		return nil, fmt.Errorf("update: board %s has no known bootloader %q", prof.Name, prof.Boot.Loader)
	}
	state := *f.state
	log = log.With("part", "update")
	return update.New(update.Config{
		Client: update.ClientConfig{
			RepositoryURL: *f.repo,
			TrustedRoot:   root,
			StateDir:      state,
			Board:         prof.Name,
			Current:       current,
		},
		Installer:  update.RAUC{},
		BootID:     bootID(*f.bootID),
		Bootloader: boot,
		Compatible: prof.Boot.Compatible,
		Healthy:    healthGate(ready, healthy),
		HealthyFor: *f.confirmAfter,
		Interval:   *f.interval,
		Installed: func(t update.Target) {
			if err := requestReboot(state); err != nil {
				log.Error("installed firmware, but could not ask for the reboot", "version", t.Version, "err", err)
				return
			}
			log.Info("installed firmware; rebooting into it on trial", "version", t.Version)
		},
	}, log)
}

// healthGate is what the agent marks a slot good on: nvrd told systemd READY (storage, TPM and web up)
// and every camera pipeline is alive, by the same judgment that feeds the watchdog.
func healthGate(ready func() bool, healthy func(time.Duration) (bool, []string)) func() bool {
	return func() bool {
		if !ready() {
			return false
		}
		ok, _ := healthy(watchdogMaxAge)
		return ok
	}
}

// runUpdate runs the agent until ctx ends, starting it again after a pause when it stops with an error
// (RAUC or D-Bus not up yet): an agent that gave up would never confirm the booted slot.
func runUpdate(ctx context.Context, agent *update.Agent, log *slog.Logger, after func(time.Duration) <-chan time.Time) {
	for {
		err := agent.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		log.Error("update agent stopped; starting it again in 30 s", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-after(30 * time.Second):
		}
	}
}

// bootID returns the boot id the unit passed; nil lets the agent read the kernel's (nvrd's sandbox hides
// /proc/sys, so the image passes it).
func bootID(id string) func() (string, error) {
	if id == "" {
		return nil
	}
	return func() (string, error) { return id, nil }
}

// rebootRequest is the file whose appearance makes the image's nvr-reboot.path reboot the machine:
// nvrd holds no right to reboot by itself.
const rebootRequest = "reboot"

func requestReboot(stateDir string) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("reboot request: %w", err)
	}
	name := filepath.Join(stateDir, rebootRequest)
	if err := os.WriteFile(name, []byte("firmware installed\n"), 0o600); err != nil {
		return fmt.Errorf("reboot request: %w", err)
	}
	return nil
}

// releaseVersion reads NVR_VERSION from an os-release style file.
func releaseVersion(name string) (update.Version, error) {
	b, err := readBounded(name, 64<<10)
	if err != nil {
		return update.Version{}, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && k == "NVR_VERSION" {
			return update.ParseVersion(strings.Trim(v, `"'`))
		}
	}
	return update.Version{}, fmt.Errorf("%s names no NVR_VERSION", name)
}

func readBounded(name string, max int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", name, st.Size(), max)
	}
	b := make([]byte, st.Size())
	if _, err := f.Read(b); err != nil && len(b) > 0 {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New(name + " is empty")
	}
	return b, nil
}
