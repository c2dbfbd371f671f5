package camera

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// RotationResult is one camera's outcome in a bulk rotation.
type RotationResult struct {
	Camera string `json:"camera"`
	OK     bool   `json:"ok"`
	// Error says what failed; the camera then keeps its previous password,
	// which was checked to still work unless OldWorks is false.
	Error    string `json:"error,omitempty"`
	OldWorks bool   `json:"old_works,omitempty"`
}

// Rotate replaces one camera's password with a freshly generated one:
// sealed as pending first, set over ONVIF, proven by logging in with it,
// and only then made current. On failure the old password stays current
// and the error says whether it still logs in.
func (m *Manager) Rotate(ctx context.Context, id string) error {
	done, err := m.claim(id, "rotate")
	if err != nil {
		return err
	}
	defer done()
	c, e, cur, err := m.session(id)
	if err != nil {
		return err
	}
	if c.Quarantined {
		return fmt.Errorf("rotate %s: %w", id, ErrQuarantined)
	}
	pw, err := newPassword(m.cfg.Rand, m.cfg.PasswordLength)
	if err != nil {
		return err
	}
	next := credentials{Username: cur.Username, Password: pw}
	m.mu.Lock()
	m.sec[id].Pending = &next
	m.mu.Unlock()
	if err := m.save(); err != nil {
		m.mu.Lock()
		m.sec[id].Pending = nil
		m.mu.Unlock()
		return fmt.Errorf("rotate %s: %w", id, err)
	}
	octx, cancel := context.WithTimeout(ctx, 3*m.cfg.Timeout)
	defer cancel()
	cerr := m.changePassword(octx, e, cur, next)
	m.mu.Lock()
	s := m.sec[id]
	s.Pending = nil
	if cerr == nil {
		s.Current = next
		if cam := m.cams[id]; cam != nil {
			cam.PasswordRotated = m.cfg.Now()
		}
	}
	m.mu.Unlock()
	if err := m.save(); err != nil {
		return fmt.Errorf("rotate %s: %w", id, errors.Join(cerr, err))
	}
	if cerr != nil {
		// Prove the old password still works, so the report is exact.
		vctx, vcancel := m.opCtx(ctx)
		_, verr := getDeviceInfo(vctx, e, cur)
		vcancel()
		err := &RotationError{Camera: id, Err: cerr, OldWorks: verr == nil}
		m.raise(Alarm{Camera: id, Kind: AlarmRotationFailed, Active: true, Detail: err.Error()})
		return err
	}
	m.log.Info("camera password rotated", "camera", id)
	m.notify(id)
	// Every rotation lists the camera's accounts again.
	if err := m.secureAccounts(ctx, id, e, next, "rotation"); err != nil {
		m.log.Warn("camera account audit after rotation failed", "camera", id, "err", err)
	}
	return nil
}

// RotationError reports a failed rotation.
type RotationError struct {
	Camera   string
	Err      error
	OldWorks bool // the previous password was verified to still log in
}

func (e *RotationError) Error() string {
	s := fmt.Sprintf("rotate %s: %v; previous password kept", e.Camera, e.Err)
	if !e.OldWorks {
		s += " but it no longer logs in"
	}
	return s
}

func (e *RotationError) Unwrap() error { return e.Err }

// RotateAll rotates the passwords of the given cameras (all adopted,
// unquarantined cameras when ids is empty), cfg.Parallel at a time, and
// reports each one. A failure on one camera never stops the others.
func (m *Manager) RotateAll(ctx context.Context, ids []string) []RotationResult {
	if len(ids) == 0 {
		ids = m.ids(func(c *Camera) bool { return !c.Quarantined })
	}
	errs := m.parallel(ctx, ids, m.Rotate)
	out := make([]RotationResult, 0, len(ids))
	for _, id := range ids {
		r := RotationResult{Camera: id, OK: errs[id] == nil}
		if err := errs[id]; err != nil {
			r.Error = err.Error()
			var re *RotationError
			r.OldWorks = errors.As(err, &re) && re.OldWorks
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b RotationResult) int { return compareStrings(a.Camera, b.Camera) })
	return out
}

// rotateDue rotates every camera whose password is older than RotateEvery.
func (m *Manager) rotateDue(ctx context.Context) {
	now := m.cfg.Now()
	due := m.ids(func(c *Camera) bool {
		return !c.Quarantined && now.Sub(c.PasswordRotated) >= m.cfg.RotateEvery
	})
	if len(due) == 0 {
		return
	}
	start := time.Now()
	res := m.RotateAll(ctx, due)
	failed := 0
	for _, r := range res {
		if !r.OK {
			failed++
		}
	}
	m.log.Info("scheduled password rotation", "cameras", len(res), "failed", failed, "took", time.Since(start))
}
