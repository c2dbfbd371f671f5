package camera

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// AdoptRequest names a camera to adopt and its factory (or installer's)
// account. The password is used once, to log in and replace itself with a
// generated one; it is never stored in clear nor logged.
type AdoptRequest struct {
	// HTTP and HTTPS are host:port of the device service (from discovery).
	// HTTPS is used when given; HTTP alone is accepted only for cameras
	// without TLS, and the inventory says so.
	HTTP, HTTPS string
	Username    string
	Password    string
	// Name is the operator's name for the camera (default: its id).
	Name string
	// CertSHA256, when set, is the certificate fingerprint the installer
	// read off the camera; adoption fails unless it matches. Empty: the
	// certificate seen now is pinned (trust on first use, by an
	// administrator's action).
	CertSHA256 string
	// Keep exempts named accounts from the strict account policy (another
	// system uses them): an administrator's explicit, audited choice. Every
	// other account on the camera is deleted or secured at adoption.
	Keep []KeepRequest `json:"keep,omitempty"`
}

// passwordAlphabet is URL-safe and XML-safe, so no camera mangles it.
const passwordAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"

// newPassword returns n characters drawn uniformly from passwordAlphabet
// (about 6 bits each) by rejection sampling.
func newPassword(r io.Reader, n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, 64)
	limit := 256 - 256%len(passwordAlphabet)
	for len(out) < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, passwordAlphabet[int(b)%len(passwordAlphabet)])
			}
		}
	}
	return string(out), nil
}

// idFor derives a camera id from its serial: letters, digits, '-' and '_'.
func idFor(serial string) string {
	var b strings.Builder
	b.WriteString("cam-")
	for _, r := range strings.ToLower(serial) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '_' {
			b.WriteRune(r)
		}
		if b.Len() >= 60 {
			break
		}
	}
	return b.String()
}

// Adopt takes a camera under management: it pins the HTTPS certificate,
// reads the inventory, replaces the account's password with a generated one
// (proven by logging in with it) and records the camera. On any failure the
// camera is not adopted and its password is what it was.
func (m *Manager) Adopt(ctx context.Context, req AdoptRequest) (Camera, error) {
	if req.HTTP == "" && req.HTTPS == "" {
		return Camera{}, errors.New("adopt: no camera address")
	}
	if req.Username == "" || req.Password == "" {
		return Camera{}, errors.New("adopt: the camera's current account is needed")
	}
	scheme, host := "https", req.HTTPS
	if host == "" {
		if !m.cfg.AllowPlainHTTP {
			return Camera{}, fmt.Errorf("adopt %s: %w", req.HTTP, ErrNoHTTPS)
		}
		scheme, host = "http", req.HTTP
	}
	pin := strings.ToLower(req.CertSHA256)
	e := newEndpoint(scheme, host, pin, m.cfg.Dial, m.cfg.Timeout)
	defer e.close()
	factory := credentials{Username: req.Username, Password: req.Password}

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, 4*m.cfg.Timeout)
	defer cancel()
	info, err := getDeviceInfo(ctx, e, factory)
	if err != nil {
		return Camera{}, fmt.Errorf("adopt %s: %w", host, err)
	}
	if scheme == "https" && pin == "" {
		pin = *e.seen
		e.pin = pin // every later request of this adoption must meet the same certificate
	}
	caps, err := getCapabilities(ctx, e, factory)
	if err != nil {
		return Camera{}, fmt.Errorf("adopt %s: %w", host, err)
	}
	mac, err := getMAC(ctx, e, factory)
	if err != nil {
		return Camera{}, fmt.Errorf("adopt %s: %w", host, err)
	}
	uri, err := getStreamURI(ctx, e, factory, caps.MediaXAddr)
	if err != nil {
		return Camera{}, fmt.Errorf("adopt %s: %w", host, err)
	}
	now := m.cfg.Now()
	c := &Camera{
		ID: idFor(info.Serial), HTTP: req.HTTP, HTTPS: req.HTTPS, CertSHA256: pin,
		Manufacturer: info.Manufacturer, Model: info.Model, Serial: info.Serial, MAC: mac,
		Firmware: info.Firmware, HardwareID: info.HardwareID,
		SupportsHTTPS: caps.TLS12 || req.HTTPS != "", SupportsDot1X: caps.Dot1X,
		StreamURI: uri, MediaXAddr: pathOf(caps.MediaXAddr), EventsXAddr: pathOf(caps.EventsXAddr),
		AdoptedAt: now, LastSeen: now, Name: req.Name,
	}
	if c.Name == "" {
		c.Name = c.ID
	}
	by := actorFrom(ctx)
	for _, k := range req.Keep {
		kept, err := checkKeep(k, req.Username, nil)
		if err != nil {
			return Camera{}, fmt.Errorf("adopt %s: %w", host, err)
		}
		kept.By, kept.Since = by, now
		c.KeepAccounts = append(c.KeepAccounts, kept)
	}
	newPass, err := newPassword(m.cfg.Rand, m.cfg.PasswordLength)
	if err != nil {
		return Camera{}, err
	}
	next := credentials{Username: req.Username, Password: newPass}

	// Record the camera with both passwords before touching it, so a crash
	// at any point leaves a password that works in the sealed registry.
	m.mu.Lock()
	for _, other := range m.cams {
		if other.Serial == c.Serial {
			m.mu.Unlock()
			return Camera{}, fmt.Errorf("adopt %s: %w as %s", host, ErrAlreadyAdopted, other.ID)
		}
	}
	m.cams[c.ID] = c
	m.sec[c.ID] = &secret{Current: factory, Pending: &next}
	m.busy[c.ID] = "adopt"
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.busy, c.ID)
		m.mu.Unlock()
	}()
	forget := func(cause error) (Camera, error) {
		m.mu.Lock()
		delete(m.cams, c.ID)
		delete(m.sec, c.ID)
		m.mu.Unlock()
		return Camera{}, errors.Join(cause, m.save())
	}
	if err := m.save(); err != nil {
		return forget(err)
	}
	if err := m.changePassword(ctx, e, factory, next); err != nil {
		return forget(fmt.Errorf("adopt %s: %w", host, err))
	}
	m.mu.Lock()
	m.sec[c.ID] = &secret{Current: next}
	c.PasswordRotated = m.cfg.Now()
	out := *c
	m.mu.Unlock()
	if err := m.save(); err != nil {
		return Camera{}, fmt.Errorf("adopt %s: %w", host, err)
	}
	for _, k := range c.KeepAccounts {
		m.auditEvent(AccountEvent{Camera: c.ID, Account: k.Username, Level: k.Level, Action: "keep", Result: "ok", By: k.By, Cause: "adoption", Detail: k.Reason})
	}
	// Every other account: deleted, or given a password nobody knows. A
	// failure here leaves the camera adopted (its own password is already
	// replaced), alarmed and marked; the periodic audit tries again.
	if err := m.secureAccounts(parent, c.ID, e, next, "adoption"); err != nil {
		m.log.Warn("camera accounts not audited at adoption", "camera", c.ID, "err", err)
	}
	if cam, err := m.Camera(c.ID); err == nil {
		out = cam
	}
	m.log.Info("camera adopted", "camera", out.ID, "model", out.Model, "serial", out.Serial, "https", out.HTTPS != "")
	m.notify(out.ID)
	return out, nil
}

// pathOf keeps only the path of a camera-provided service address.
func pathOf(addr string) string {
	if i := strings.Index(addr, "://"); i >= 0 {
		rest := addr[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return clip(rest[j:], 200)
		}
		return ""
	}
	return clip(addr, 200)
}

// changePassword sets next over ONVIF using cur, then proves next by
// logging in with it. It returns nil only when next works.
func (m *Manager) changePassword(ctx context.Context, e *endpoint, cur, next credentials) error {
	setErr := setPassword(ctx, e, cur, next.Username, next.Password)
	// Whatever SetUser said (a lost answer may hide a success), the new
	// password counts only once it logs in.
	if _, err := getDeviceInfo(ctx, e, next); err == nil {
		return nil
	} else if setErr == nil {
		return fmt.Errorf("new password does not log in after SetUser: %w", err)
	}
	return setErr
}

// Check verifies that the camera is still the one adopted: the pinned
// certificate (on every HTTPS handshake), the serial number and the MAC
// address. A mismatch quarantines the camera and raises a swapped alarm.
// It also notes a firmware version changed outside the appliance.
func (m *Manager) Check(ctx context.Context, id string) error {
	done, err := m.claim(id, "check")
	if err != nil {
		return err
	}
	defer done()
	c, e, cred, err := m.session(id)
	if err != nil {
		return err
	}
	if c.Quarantined {
		return fmt.Errorf("%w: %s", ErrQuarantined, id)
	}
	ctx, cancel := m.opCtx(ctx)
	defer cancel()
	info, err := getDeviceInfo(ctx, e, cred)
	if errors.Is(err, ErrCertChanged) {
		m.quarantine(id, "HTTPS certificate changed")
		return fmt.Errorf("check %s: %w", id, err)
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", id, err)
	}
	mac, err := getMAC(ctx, e, cred)
	if err != nil {
		return fmt.Errorf("check %s: %w", id, err)
	}
	switch {
	case info.Serial != c.Serial:
		m.quarantine(id, "serial number changed")
		return fmt.Errorf("check %s: %w: serial number", id, ErrIdentityChanged)
	case mac != c.MAC:
		m.quarantine(id, "MAC address changed")
		return fmt.Errorf("check %s: %w: MAC address", id, ErrIdentityChanged)
	}
	m.mu.Lock()
	if cam := m.cams[id]; cam != nil {
		cam.LastSeen = m.cfg.Now()
		if cam.Firmware != info.Firmware {
			cam.Firmware, cam.FirmwareUpdated = info.Firmware, m.cfg.Now()
		}
	}
	m.mu.Unlock()
	return nil
}

// quarantine holds a camera after a suspected swap.
func (m *Manager) quarantine(id, reason string) {
	m.mu.Lock()
	c := m.cams[id]
	if c == nil || c.Quarantined {
		m.mu.Unlock()
		return
	}
	c.Quarantined, c.QuarantineReason = true, reason
	m.mu.Unlock()
	if err := m.save(); err != nil {
		m.log.Error("save quarantine", "camera", id, "err", err)
	}
	m.raise(Alarm{Camera: id, Kind: AlarmSwapped, Active: true, Detail: reason + "; recording stopped until an administrator accepts the camera"})
	m.notify(id)
}

// Accept is an administrator's decision that a quarantined camera is
// legitimate (a replacement, say): its current certificate, serial and MAC
// are pinned and recording may resume. The appliance's credentials must work
// on it; a camera that refuses them must be forgotten and adopted again.
func (m *Manager) Accept(ctx context.Context, id string) (Camera, error) {
	done, err := m.claim(id, "accept")
	if err != nil {
		return Camera{}, err
	}
	defer done()
	m.mu.Lock()
	c := m.cams[id]
	cred := m.sec[id].Current
	host, scheme := c.HTTPS, "https"
	if host == "" {
		host, scheme = c.HTTP, "http"
	}
	m.mu.Unlock()
	e := newEndpoint(scheme, host, "", m.cfg.Dial, m.cfg.Timeout)
	defer e.close()
	ctx, cancel := m.opCtx(ctx)
	defer cancel()
	info, err := getDeviceInfo(ctx, e, cred)
	if err != nil {
		return Camera{}, fmt.Errorf("accept %s: %w", id, err)
	}
	pin := *e.seen
	e.pin = pin
	if scheme == "https" && pin == "" {
		return Camera{}, fmt.Errorf("accept %s: no certificate seen", id)
	}
	mac, err := getMAC(ctx, e, cred)
	if err != nil {
		return Camera{}, fmt.Errorf("accept %s: %w", id, err)
	}
	m.mu.Lock()
	if scheme == "https" {
		c.CertSHA256 = pin
	}
	c.Serial, c.MAC, c.Firmware, c.Model, c.Manufacturer = info.Serial, mac, info.Firmware, info.Model, info.Manufacturer
	c.Quarantined, c.QuarantineReason = false, ""
	c.LastSeen = m.cfg.Now()
	out := *c
	m.mu.Unlock()
	if err := m.save(); err != nil {
		return Camera{}, fmt.Errorf("accept %s: %w", id, err)
	}
	m.raise(Alarm{Camera: id, Kind: AlarmSwapped, Active: false, Detail: "accepted by an administrator; new identity pinned"})
	m.notify(id)
	return out, nil
}

// Forget removes a camera from the registry (its credentials with it).
func (m *Manager) Forget(id string) error {
	done, err := m.claim(id, "forget")
	if err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.cams, id)
	delete(m.sec, id)
	if e := m.eps[id]; e != nil {
		e.close()
		delete(m.eps, id)
	}
	m.mu.Unlock()
	done()
	if err := m.save(); err != nil {
		return err
	}
	m.notify(id)
	return nil
}

// recoverPending settles password changes a crash interrupted: the pending
// password wins if it logs in, else the current one stays.
func (m *Manager) recoverPending(ctx context.Context) {
	for _, id := range m.ids(func(*Camera) bool { return true }) {
		m.mu.Lock()
		s := m.sec[id]
		pending := s.Pending
		m.mu.Unlock()
		if pending == nil {
			continue
		}
		_, e, _, err := m.session(id)
		if err != nil {
			continue
		}
		octx, cancel := m.opCtx(ctx)
		_, err = getDeviceInfo(octx, e, *pending)
		cancel()
		m.mu.Lock()
		if err == nil {
			s.Current = *pending
		}
		s.Pending = nil
		m.mu.Unlock()
		if err := m.save(); err != nil {
			m.log.Error("save after password recovery", "camera", id, "err", err)
		}
		m.notify(id)
	}
}
