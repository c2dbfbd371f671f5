package update

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config is the update agent's configuration.
type Config struct {
	Client ClientConfig
	// Installer installs bundles and marks slots (RAUC in production).
	Installer Installer
	// Bootloader tells whether the booted slot is on trial. Optional: without it the agent asks only RAUC.
	Bootloader Bootloader
	// Compatible is this system's RAUC compatible string; a bundle for another is refused before install.
	Compatible string
	// Healthy reports whether nvrd is healthy (storage, TPM and every pipeline making progress).
	Healthy func() bool
	// HealthyFor is how long Healthy must hold without a break after boot before the slot is marked good
	// (default 2 minutes).
	HealthyFor time.Duration
	// Interval between polls of the fleet server (default 1 hour); Jitter adds up to this much at random.
	Interval time.Duration
	// Installed is called after a bundle is installed: the slot switch takes effect at the next boot, so
	// production reboots here (at a time the owner allows); nil only logs.
	Installed func(Target)
	// Now is the clock (default time.Now); After makes timers (default time.After).
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// BootID identifies the running boot (default: the kernel's /proc/sys/kernel/random/boot_id), so the
	// agent tells "installed, reboot pending" from "rebooted, and the bootloader fell back".
	BootID func() (string, error)
}

// Agent is the long-lived update agent: it marks the booted slot good once healthy, then polls.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	client *Client

	// What ConfirmBoot learned from the install record (trial.go), for CheckAndInstall.
	pending  *installRecord // installed during this boot: waiting for the reboot, install nothing more
	confirms *installRecord // this boot runs the firmware of that record, on trial
}

// New checks the configuration.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Installer == nil {
		return nil, errors.New("update: no installer")
	}
	if cfg.Healthy == nil {
		return nil, errors.New("update: no health check")
	}
	if !ValidName(cfg.Compatible) {
		return nil, fmt.Errorf("update: bad compatible %q", clip(cfg.Compatible))
	}
	if cfg.HealthyFor <= 0 {
		cfg.HealthyFor = 2 * time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.BootID == nil {
		cfg.BootID = kernelBootID
	}
	if cfg.Client.Now == nil {
		cfg.Client.Now = cfg.Now
	}
	c, err := NewClient(cfg.Client, log)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, log: log, client: c}, nil
}

// Run marks the booted slot good once nvrd has been healthy for HealthyFor, then checks for updates every
// Interval until ctx ends. A slot that never becomes healthy is never marked: the bootloader falls back
// to the other slot when its attempts run out.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.ConfirmBoot(ctx); err != nil {
		return err
	}
	for {
		if _, err := a.CheckAndInstall(ctx); err != nil && !errors.Is(err, ErrNoUpdate) {
			a.log.Error("update rejected or failed; the running slot is untouched", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.After(a.cfg.Interval):
		}
	}
}

// ConfirmBoot waits until Healthy has held for HealthyFor and marks the booted slot good, if it is on
// trial. It returns nil without marking when ctx ends first.
func (a *Agent) ConfirmBoot(ctx context.Context) error {
	st, err := a.cfg.Installer.Status(ctx)
	if err != nil {
		return fmt.Errorf("slot status: %w", err)
	}
	name, slot, _ := st.BootedSlot()
	if err := a.reconcileInstall(st.Booted); err != nil {
		return err
	}
	trial := slot.BootStatus != "good"
	if a.cfg.Bootloader != nil {
		onTrial, left, err := a.cfg.Bootloader.Trial(ctx, st.Booted)
		if err != nil {
			return fmt.Errorf("boot environment: %w", err)
		}
		trial = trial || onTrial
		if onTrial {
			a.log.Info("booted slot is on trial", "slot", name, "bootname", st.Booted, "attempts_left", left)
		}
	}
	if !trial {
		return a.confirmed(name)
	}
	var since time.Time
	for {
		now := a.cfg.Now()
		if a.cfg.Healthy() {
			if since.IsZero() {
				since = now
			}
			if now.Sub(since) >= a.cfg.HealthyFor {
				break
			}
		} else {
			since = time.Time{}
		}
		select {
		case <-ctx.Done():
			a.log.Warn("stopping before the booted slot was confirmed; the bootloader will fall back", "slot", name)
			return nil
		case <-a.cfg.After(time.Second):
		}
	}
	if err := a.cfg.Installer.MarkGood(ctx); err != nil {
		return fmt.Errorf("mark slot %s good: %w", name, err)
	}
	a.log.Info("booted slot marked good", "slot", name, "bootname", st.Booted)
	return a.confirmed(name)
}

// CheckAndInstall asks the fleet server for newer firmware; if there is some, downloads and verifies it,
// checks the bundle's own signature and manifest, and installs it into the inactive slot.
func (a *Agent) CheckAndInstall(ctx context.Context) (Target, error) {
	if a.pending != nil {
		return Target{}, fmt.Errorf("%w: %s is installed and waits for the reboot", ErrNoUpdate, a.pending.Version)
	}
	t, err := a.client.Check(ctx)
	if err != nil {
		return t, err
	}
	if err := a.refuseFailed(t); err != nil {
		return t, err
	}
	a.log.Info("newer firmware offered", "version", t.Version, "bytes", t.Length)
	path, err := a.client.Download(ctx, t)
	if err != nil {
		return t, err
	}
	info, err := a.cfg.Installer.Info(ctx, path)
	if err != nil {
		return t, fmt.Errorf("bundle %s: %w", t.Version, err)
	}
	if err := CheckBundle(info, t, a.cfg.Compatible, a.cfg.Client.Current); err != nil {
		return t, err
	}
	start := a.cfg.Now()
	st, err := a.cfg.Installer.Status(ctx)
	if err != nil {
		return t, fmt.Errorf("slot status: %w", err)
	}
	bootID, err := a.cfg.BootID()
	if err != nil {
		return t, fmt.Errorf("boot id: %w", err)
	}
	if err := a.cfg.Installer.Install(ctx, path); err != nil {
		return t, fmt.Errorf("install %s: %w", t.Version, err)
	}
	a.recordInstall(t, st.Booted, bootID)
	a.log.Info("firmware installed into the inactive slot; it boots on trial next", "version", t.Version,
		"took", a.cfg.Now().Sub(start).Round(time.Millisecond))
	if a.cfg.Installed != nil {
		a.cfg.Installed(t)
	}
	return t, nil
}

// CheckBundle checks a bundle's manifest against the signed target that delivered it and against this
// system: the same compatible string everywhere and the same version, newer than the one running.
func CheckBundle(info BundleInfo, t Target, compatible string, current Version) error {
	if info.Compatible != compatible || t.Compatible != compatible {
		return fmt.Errorf("%w: bundle is for %q, this system is %q", ErrIncompatible, clip(info.Compatible), compatible)
	}
	bv, err := ParseVersion(info.Version)
	if err != nil {
		return fmt.Errorf("bundle manifest: %w", err)
	}
	tv, err := ParseVersion(t.Version)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if bv != tv {
		return fmt.Errorf("%w: bundle manifest says %s, signed target says %s", ErrHashMismatch, bv, tv)
	}
	if bv.Compare(current) <= 0 {
		return fmt.Errorf("%w: bundle %s is not newer than running %s", ErrRollback, bv, current)
	}
	return nil
}
