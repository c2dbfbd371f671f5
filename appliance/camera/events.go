package camera

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// AlarmKind names what an alarm is about.
type AlarmKind string

// Alarm kinds.
const (
	AlarmTamper         AlarmKind = "tamper"          // the camera reports tampering (scene change, cover, defocus)
	AlarmSignalLoss     AlarmKind = "signal-loss"     // the camera reports the loss of its video signal
	AlarmVideoLoss      AlarmKind = "video-loss"      // the appliance receives no picture (ingest's detection)
	AlarmSwapped        AlarmKind = "swapped"         // certificate, serial or MAC changed at the camera's address
	AlarmUnreachable    AlarmKind = "unreachable"     // the camera stopped answering ONVIF
	AlarmAuthFailed     AlarmKind = "auth-failed"     // the camera refused the appliance's credentials
	AlarmRotationFailed AlarmKind = "rotation-failed" // a password rotation failed; the old password is kept
	AlarmFirmwareFailed AlarmKind = "firmware-failed" // a firmware update failed
	// AlarmAccountAppeared: an account appeared on the camera since the last
	// audit (or a kept account's level rose); it is being removed.
	AlarmAccountAppeared AlarmKind = "account-appeared"
	// AlarmAccountUnsecured: an account could be neither deleted nor given a
	// generated password, or the accounts could not be listed.
	AlarmAccountUnsecured AlarmKind = "account-unsecured"
)

// Alarm is one alarm raised or cleared. Detail never holds a secret.
type Alarm struct {
	Time   time.Time `json:"time"`
	Camera string    `json:"camera"`
	Kind   AlarmKind `json:"kind"`
	Active bool      `json:"active"` // false: the condition cleared
	Detail string    `json:"detail,omitempty"`
}

// raise records an alarm, logs it and hands it to the configured sink.
func (m *Manager) raise(a Alarm) {
	if a.Time.IsZero() {
		a.Time = m.cfg.Now()
	}
	m.mu.Lock()
	m.alm = append(m.alm, a)
	if len(m.alm) > maxAlarms {
		m.alm = slices.Clone(m.alm[len(m.alm)-maxAlarms:])
	}
	m.mu.Unlock()
	m.log.Warn("camera alarm", "camera", a.Camera, "kind", string(a.Kind), "active", a.Active, "detail", a.Detail)
	if m.cfg.Alarm != nil {
		m.cfg.Alarm(a)
	}
}

// Alarms returns the most recent alarms, oldest first.
func (m *Manager) Alarms() []Alarm {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.alm)
}

// alarmKind maps an ONVIF topic to an alarm kind, or "" for topics the
// appliance does not alarm on.
func alarmKind(topic string) AlarmKind {
	t := strings.ToLower(topic)
	switch {
	case strings.Contains(t, "signalloss"):
		return AlarmSignalLoss
	case strings.Contains(t, "globalscenechange"), strings.Contains(t, "tamper"),
		strings.Contains(t, "imagetoodark"), strings.Contains(t, "imagetooblurry"):
		return AlarmTamper
	}
	return ""
}

// runEvents keeps a pull-point subscription on one camera and turns its
// notifications into alarms, until ctx ends or the camera is quarantined.
func (m *Manager) runEvents(ctx context.Context, id string) {
	backoff := 500 * time.Millisecond
	failures := 0
	unreachable := false
	for ctx.Err() == nil {
		err := m.pullLoop(ctx, id, func() {
			backoff, failures = 500*time.Millisecond, 0
			if unreachable {
				unreachable = false
				m.raise(Alarm{Camera: id, Kind: AlarmUnreachable, Active: false, Detail: "events flow again"})
			}
		})
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, ErrCertChanged):
			m.quarantine(id, "HTTPS certificate changed")
			return
		case errors.Is(err, ErrNotFound):
			return
		case errors.Is(err, ErrUnauthorized):
			if failures == 0 {
				m.raise(Alarm{Camera: id, Kind: AlarmAuthFailed, Active: true, Detail: "the camera refused the appliance's credentials"})
			}
		default:
			if failures == 2 && !unreachable {
				unreachable = true
				m.raise(Alarm{Camera: id, Kind: AlarmUnreachable, Active: true, Detail: err.Error()})
			}
		}
		failures++
		m.log.Debug("camera events: retrying", "camera", id, "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// pullLoop subscribes once and pulls until an error. ok is called after
// every successful pull.
func (m *Manager) pullLoop(ctx context.Context, id string, ok func()) error {
	c, e, cred, err := m.session(id)
	if err != nil {
		return err
	}
	sctx, cancel := m.opCtx(ctx)
	sub, err := subscribe(sctx, e, cred, c.EventsXAddr)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = e.call(uctx, sub, cred, unsubscribe{}, nil) // best effort: the subscription expires anyway
	}()
	for {
		pctx, cancel := context.WithTimeout(ctx, m.cfg.PullWait+m.cfg.Timeout)
		ns, err := pull(pctx, e, cred, sub, m.cfg.PullWait)
		cancel()
		if err != nil {
			return err
		}
		ok()
		m.mu.Lock()
		if cam := m.cams[id]; cam != nil {
			cam.LastSeen = m.cfg.Now()
		}
		m.mu.Unlock()
		for _, n := range ns {
			kind := alarmKind(n.Topic)
			if kind == "" {
				m.log.Debug("camera event ignored", "camera", id, "topic", n.Topic)
				continue
			}
			active := n.State == nil || *n.State
			m.raise(Alarm{Time: m.cfg.Now(), Camera: id, Kind: kind, Active: active, Detail: n.Topic})
		}
	}
}
