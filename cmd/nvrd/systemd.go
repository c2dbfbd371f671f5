package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// systemd speaks sd_notify for nvrd: READY=1 once the appliance is up, then WATCHDOG=1 at half the
// watchdog interval, but only while healthy(maxAge) holds, so a wedged pipeline gets nvrd restarted. Outside
// systemd (no NOTIFY_SOCKET) every call is a no-op.
type systemd struct {
	log *slog.Logger
	// notify sends one state string; daemon.SdNotify in production.
	notify func(state string) (bool, error)
	// interval returns the watchdog interval, 0 when systemd set none; daemon.SdWatchdogEnabled in production.
	interval func() (time.Duration, error)
	// isUp is set once the appliance is up (ready was called), whether or not systemd listens.
	isUp atomic.Bool
}

// watchdogMaxAge is the progress age the watchdog and the update agent judge camera pipelines by.
const watchdogMaxAge = 15 * time.Second

func newSystemd(log *slog.Logger) *systemd {
	return &systemd{
		log:      log,
		notify:   func(s string) (bool, error) { return daemon.SdNotify(false, s) },
		interval: func() (time.Duration, error) { return daemon.SdWatchdogEnabled(false) },
	}
}

// ready tells systemd the service is up: appliance.Config.Ready.
func (s *systemd) ready() {
	s.isUp.Store(true)
	if ok, err := s.notify(daemon.SdNotifyReady); err != nil {
		s.log.Error("sd_notify READY failed", "err", err)
	} else if ok {
		s.log.Info("told systemd: ready")
	}
}

// up reports whether the appliance has been up (READY) in this run.
func (s *systemd) up() bool { return s.isUp.Load() }

// stopping tells systemd the service is shutting down.
func (s *systemd) stopping() {
	_, _ = s.notify(daemon.SdNotifyStopping)
}

// watchdog feeds systemd's watchdog until ctx ends, skipping every beat at which healthy(maxAge) fails.
// It returns at once when systemd set no watchdog. tick makes the ticker (time.NewTicker's channel in
// production) so tests drive it.
func (s *systemd) watchdog(ctx context.Context, maxAge time.Duration, healthy func(time.Duration) (bool, []string), tick func(time.Duration) (<-chan time.Time, func())) {
	iv, err := s.interval()
	if err != nil {
		s.log.Error("watchdog setting unreadable", "err", err)
		return
	}
	if iv <= 0 {
		return
	}
	if maxAge <= 0 || maxAge > iv {
		maxAge = iv
	}
	if tick == nil {
		tick = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	c, stop := tick(iv / 2)
	defer stop()
	wasHealthy := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-c:
		}
		ok, stale := healthy(maxAge)
		if !ok {
			if wasHealthy {
				s.log.Error("not feeding the watchdog: camera pipelines made no progress", "cameras", stale, "max_age", maxAge)
			}
			wasHealthy = false
			continue
		}
		if !wasHealthy {
			s.log.Info("camera pipelines progressing again; feeding the watchdog")
		}
		wasHealthy = true
		if _, err := s.notify(daemon.SdNotifyWatchdog); err != nil {
			s.log.Error("sd_notify WATCHDOG failed", "err", err)
		}
	}
}
