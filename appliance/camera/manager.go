package camera

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
)

// Sealer seals and unseals a small secret (at most 128 bytes) to the
// appliance's TPM. *tpm.TPM satisfies it.
type Sealer interface {
	Seal(data []byte) ([]byte, error)
	Unseal(blob []byte) ([]byte, error)
}

// Config configures a Manager.
type Config struct {
	// Dir holds the camera registry (cameras.json). It must exist or be
	// creatable with mode 0700.
	Dir string
	// Sealer protects camera credentials: a data key sealed by the TPM,
	// unsealed once in New.
	Sealer Sealer
	// Interface is the camera network interface that WS-Discovery probes go
	// out on (e.g. the camera bridge).
	Interface string
	// Dial and ListenPacket reach the camera network; nil: the host's.
	Dial         DialFunc
	ListenPacket ListenPacketFunc

	// AllowPlainHTTP permits adopting a camera that offers no HTTPS. Its
	// new password then crosses the camera network in clear inside SetUser,
	// so it is off by default.
	AllowPlainHTTP bool

	// Timeout bounds one ONVIF request (default 10 s).
	Timeout time.Duration
	// CheckEvery is how often each camera's identity (certificate, serial,
	// MAC) is checked (default 30 s).
	CheckEvery time.Duration
	// RotateEvery is the password rotation schedule: a camera whose password
	// is older is rotated (default 30 days; negative disables).
	RotateEvery time.Duration
	// Parallel bounds concurrent cameras in bulk operations (default 8).
	Parallel int
	// PasswordLength is the length of generated passwords (default 40,
	// at least 32).
	PasswordLength int
	// PullWait is the long-poll time of event pulls (default 10 s).
	PullWait time.Duration
	// RebootTimeout bounds the wait for a camera after a firmware upload
	// (default 3 min).
	RebootTimeout time.Duration

	// AccountAuditEvery is how often each camera's accounts are listed
	// again and the account policy applied (default 1 h, the rotation
	// schedule's check; it cannot be disabled). Rotations audit too.
	AccountAuditEvery time.Duration

	// Alarm receives every alarm (audit log, dashboard, LCD). It must not
	// block for long.
	Alarm func(Alarm)
	// Audit receives every action on a camera's other accounts (deleted,
	// secured, left unsecured, kept, enforced) for the audit log. It must
	// not block for long.
	Audit func(AccountEvent)
	// Changed is called when what recording needs about a camera changes:
	// adopted, new password, quarantined, accepted, forgotten.
	Changed func(id string)

	// Now and Rand are injected for tests; defaults time.Now and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
}

func (c *Config) setDefaults() error {
	if c.Dir == "" {
		return errors.New("camera: no registry directory")
	}
	if c.Sealer == nil {
		return errors.New("camera: no sealer: camera credentials must be sealed by the TPM")
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	if c.ListenPacket == nil {
		c.ListenPacket = func(ctx context.Context, network, addr string) (net.PacketConn, error) {
			var lc net.ListenConfig
			return lc.ListenPacket(ctx, network, addr)
		}
	}
	if c.Interface == "" {
		c.Interface = "lo"
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.CheckEvery <= 0 {
		c.CheckEvery = 30 * time.Second
	}
	if c.RotateEvery == 0 {
		c.RotateEvery = 30 * 24 * time.Hour
	}
	if c.Parallel <= 0 {
		c.Parallel = 8
	}
	if c.PasswordLength == 0 {
		c.PasswordLength = 40
	}
	if c.PasswordLength < 32 || c.PasswordLength > 128 {
		return fmt.Errorf("camera: password length %d: 32 to 128", c.PasswordLength)
	}
	if c.AccountAuditEvery <= 0 {
		c.AccountAuditEvery = time.Hour
	}
	if c.PullWait <= 0 {
		c.PullWait = 10 * time.Second
	}
	if c.RebootTimeout <= 0 {
		c.RebootTimeout = 3 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return nil
}

// Camera is an adopted camera: its inventory and state. It holds no secret.
type Camera struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// HTTP and HTTPS are the host:port of its device service; HTTPS is
	// used whenever present, with CertSHA256 pinned.
	HTTP       string `json:"http,omitempty"`
	HTTPS      string `json:"https,omitempty"`
	CertSHA256 string `json:"cert_sha256,omitempty"`

	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Serial       string `json:"serial"`
	MAC          string `json:"mac"`
	Firmware     string `json:"firmware"`
	HardwareID   string `json:"hardware_id,omitempty"`
	// SupportsHTTPS and SupportsDot1X are what the camera reports (TLS 1.2
	// for its services, 802.1X on its port).
	SupportsHTTPS bool `json:"supports_https"`
	SupportsDot1X bool `json:"supports_dot1x"`

	StreamURI   string `json:"stream_uri"`
	MediaXAddr  string `json:"media_xaddr,omitempty"`
	EventsXAddr string `json:"events_xaddr,omitempty"`

	AdoptedAt       time.Time `json:"adopted_at"`
	FirmwareUpdated time.Time `json:"firmware_updated,omitzero"`
	PasswordRotated time.Time `json:"password_rotated"`
	LastSeen        time.Time `json:"last_seen,omitzero"`

	// Accounts are the accounts found on the camera and what the account
	// policy did about each (no password); AccountsAudited is when they
	// were last listed; AccountWarning says what is wrong ("account X could
	// not be secured", "accounts could not be audited: …"), empty when
	// every account is secured. KeepAccounts are an administrator's
	// exemptions from the strict policy ([Manager.KeepAccount]).
	Accounts        []Account     `json:"accounts,omitempty"`
	AccountsAudited time.Time     `json:"accounts_audited,omitzero"`
	AccountWarning  string        `json:"account_warning,omitempty"`
	KeepAccounts    []KeptAccount `json:"keep_accounts,omitempty"`

	// Quarantined cameras are not recorded until an administrator accepts
	// them ([Manager.Accept]).
	Quarantined      bool   `json:"quarantined,omitempty"`
	QuarantineReason string `json:"quarantine_reason,omitempty"`
}

// SinceFirmwareUpdate is how long ago the firmware was last updated (since
// adoption when the appliance never updated it).
func (c Camera) SinceFirmwareUpdate(now time.Time) time.Duration {
	if c.FirmwareUpdated.IsZero() {
		return now.Sub(c.AdoptedAt)
	}
	return now.Sub(c.FirmwareUpdated)
}

// secret is one camera's credentials. Pending is set while a new password
// is being set, so a crash in between loses neither.
type secret struct {
	Current credentials  `json:"current"`
	Pending *credentials `json:"pending,omitempty"`
}

// registryFile is the on-disk registry.
type registryFile struct {
	Version int       `json:"version"`
	Cameras []*Camera `json:"cameras"`
	// Key is the AES-256 data key sealed by the TPM; Secrets is the
	// credentials map, sealed with it (AES-256-GCM, nonce first).
	Key     []byte `json:"key"`
	Secrets []byte `json:"secrets"`
}

const (
	registryName    = "cameras.json"
	registryVersion = 1
	secretsAAD      = "edgenvr camera credentials v1"
	maxRegistry     = 16 << 20
	maxAlarms       = 512
)

// Manager owns the cameras: discovery, adoption, inventory, passwords,
// firmware, events and alarms.
type Manager struct {
	cfg Config
	log *slog.Logger

	opMu sync.Mutex // serialises registry writes
	mu   sync.Mutex
	cams map[string]*Camera
	sec  map[string]*secret
	aead cipher.AEAD
	key  []byte // sealed data key as stored
	busy map[string]string
	eps  map[string]*endpoint
	alm  []Alarm
	wake chan struct{}
}

// New loads the registry from cfg.Dir, unsealing the credentials once.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("camera: registry dir: %w", err)
	}
	m := &Manager{cfg: cfg, log: log, cams: map[string]*Camera{}, sec: map[string]*secret{},
		busy: map[string]string{}, eps: map[string]*endpoint{}, wake: make(chan struct{}, 1)}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) load() error {
	path := filepath.Join(m.cfg.Dir, registryName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := io.ReadFull(m.cfg.Rand, key); err != nil {
			return fmt.Errorf("camera: data key: %w", err)
		}
		sealed, err := m.cfg.Sealer.Seal(key)
		if err != nil {
			return fmt.Errorf("camera: seal data key: %w", err)
		}
		if err := m.setKey(key); err != nil {
			return err
		}
		m.key = sealed
		return m.save()
	}
	if err != nil {
		return fmt.Errorf("camera: open registry: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRegistry+1))
	if err != nil {
		return fmt.Errorf("camera: read registry: %w", err)
	}
	if len(b) > maxRegistry {
		return fmt.Errorf("camera: registry %s over %d bytes", path, maxRegistry)
	}
	var rf registryFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return fmt.Errorf("camera: registry %s: %w", path, err)
	}
	if rf.Version != registryVersion {
		return fmt.Errorf("camera: registry %s: version %d, want %d", path, rf.Version, registryVersion)
	}
	key, err := m.cfg.Sealer.Unseal(rf.Key)
	if err != nil {
		return fmt.Errorf("camera: unseal data key: %w", err)
	}
	if err := m.setKey(key); err != nil {
		return err
	}
	m.key = rf.Key
	ns := m.aead.NonceSize()
	if len(rf.Secrets) < ns {
		return fmt.Errorf("camera: registry %s: secrets truncated", path)
	}
	plain, err := m.aead.Open(nil, rf.Secrets[:ns], rf.Secrets[ns:], []byte(secretsAAD))
	if err != nil {
		return fmt.Errorf("camera: registry %s: secrets do not authenticate", path)
	}
	if err := json.Unmarshal(plain, &m.sec); err != nil {
		return fmt.Errorf("camera: registry %s: secrets: %w", path, err)
	}
	for _, c := range rf.Cameras {
		if c == nil || c.ID == "" || m.sec[c.ID] == nil {
			return fmt.Errorf("camera: registry %s: camera without id or credentials", path)
		}
		m.cams[c.ID] = c
	}
	m.log.Info("camera registry loaded", "cameras", len(m.cams))
	return nil
}

func (m *Manager) setKey(key []byte) error {
	if len(key) != 32 {
		return fmt.Errorf("camera: data key of %d bytes", len(key))
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("camera: data key: %w", err)
	}
	m.aead, err = cipher.NewGCM(blk)
	return err
}

// save writes the registry atomically. The caller holds no lock; it takes
// a consistent snapshot under m.mu.
func (m *Manager) save() error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	rf := registryFile{Version: registryVersion, Key: m.key}
	for _, c := range m.cams {
		cp := *c
		rf.Cameras = append(rf.Cameras, &cp)
	}
	plain, err := json.Marshal(m.sec)
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("camera: encode secrets: %w", err)
	}
	slices.SortFunc(rf.Cameras, func(a, b *Camera) int { return compareStrings(a.ID, b.ID) })
	nonce := make([]byte, m.aead.NonceSize())
	if _, err := io.ReadFull(m.cfg.Rand, nonce); err != nil {
		return fmt.Errorf("camera: nonce: %w", err)
	}
	rf.Secrets = m.aead.Seal(nonce, nonce, plain, []byte(secretsAAD))
	clear(plain)
	b, err := json.MarshalIndent(rf, "", "  ")
	if err != nil {
		return fmt.Errorf("camera: encode registry: %w", err)
	}
	return writeAtomic(filepath.Join(m.cfg.Dir, registryName), b)
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeAtomic writes data through a temporary file, fsync and rename, then
// fsyncs the directory.
func writeAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".cameras-*")
	if err != nil {
		return fmt.Errorf("camera: write registry: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("camera: write registry: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("camera: write registry: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("camera: sync registry dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("camera: sync registry dir: %w", err)
	}
	return nil
}

// Cameras returns every adopted camera, sorted by id.
func (m *Manager) Cameras() []Camera {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Camera, 0, len(m.cams))
	for _, c := range m.cams {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Camera) int { return compareStrings(a.ID, b.ID) })
	return out
}

// Camera returns one adopted camera.
func (m *Manager) Camera(id string) (Camera, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cams[id]
	if !ok {
		return Camera{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return *c, nil
}

// Source is what the recorder needs to pull a camera's stream.
type Source struct {
	URL                string // rtsp:// or rtsps://, without credentials
	Username, Password string
}

// Source returns the stream address and current credentials of a camera
// for the ingest. It returns ErrQuarantined for a camera held after a
// suspected swap: nothing may be recorded from it.
func (m *Manager) Source(id string) (Source, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cams[id]
	if !ok {
		return Source{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if c.Quarantined {
		return Source{}, fmt.Errorf("%w: %s: %s", ErrQuarantined, id, c.QuarantineReason)
	}
	s := m.sec[id]
	return Source{URL: c.StreamURI, Username: s.Current.Username, Password: s.Current.Password}, nil
}

// claim marks a camera busy with op, or fails with ErrBusy.
func (m *Manager) claim(id, op string) (func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.cams[id]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if cur, ok := m.busy[id]; ok {
		return nil, fmt.Errorf("%w: %s is running %s", ErrBusy, id, cur)
	}
	m.busy[id] = op
	return func() {
		m.mu.Lock()
		delete(m.busy, id)
		m.mu.Unlock()
	}, nil
}

// session returns the endpoint and credentials for a camera: HTTPS with the
// pinned certificate when the camera has it, else HTTP.
func (m *Manager) session(id string) (*Camera, *endpoint, credentials, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cams[id]
	if !ok {
		return nil, nil, credentials{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	cp := *c
	e := m.eps[id]
	if e == nil || e.pin != c.CertSHA256 {
		if e != nil {
			e.close()
		}
		if c.HTTPS != "" {
			e = newEndpoint("https", c.HTTPS, c.CertSHA256, m.cfg.Dial, m.cfg.Timeout+m.cfg.PullWait)
		} else {
			e = newEndpoint("http", c.HTTP, "", m.cfg.Dial, m.cfg.Timeout+m.cfg.PullWait)
		}
		m.eps[id] = e
	}
	return &cp, e, m.sec[id].Current, nil
}

func (m *Manager) notify(id string) {
	if m.cfg.Changed != nil {
		m.cfg.Changed(id)
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// opCtx bounds one request.
func (m *Manager) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.cfg.Timeout)
}

// Run watches the adopted cameras until ctx ends: event subscriptions
// (tamper, signal loss), identity checks, and the password rotation
// schedule. A camera adopted while Run runs is picked up at once.
func (m *Manager) Run(ctx context.Context) error {
	m.recoverPending(ctx)
	loops := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	defer func() {
		for _, cancel := range loops {
			cancel()
		}
		wg.Wait()
		m.mu.Lock()
		for _, e := range m.eps {
			e.close()
		}
		m.mu.Unlock()
	}()
	check := time.NewTicker(m.cfg.CheckEvery)
	defer check.Stop()
	rotateTick := time.NewTicker(min(time.Hour, max(time.Second, m.cfg.RotateEvery/24)))
	defer rotateTick.Stop()
	auditTick := time.NewTicker(m.cfg.AccountAuditEvery)
	defer auditTick.Stop()
	for {
		// Reconcile event loops with the registry.
		m.mu.Lock()
		for id, c := range m.cams {
			if _, ok := loops[id]; !ok && !c.Quarantined {
				lctx, cancel := context.WithCancel(ctx)
				loops[id] = cancel
				wg.Add(1)
				go func() {
					defer wg.Done()
					m.runEvents(lctx, id)
				}()
			}
		}
		for id, cancel := range loops {
			if c, ok := m.cams[id]; !ok || c.Quarantined {
				cancel()
				delete(loops, id)
			}
		}
		m.mu.Unlock()

		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		case <-check.C:
			m.checkAll(ctx)
		case <-rotateTick.C:
			if m.cfg.RotateEvery > 0 {
				m.rotateDue(ctx)
			}
		case <-auditTick.C:
			m.auditAccountsDue(ctx)
		}
	}
}

// checkAll checks every camera's identity, in parallel.
func (m *Manager) checkAll(ctx context.Context) {
	ids := m.ids(func(c *Camera) bool { return !c.Quarantined })
	m.parallel(ctx, ids, func(ctx context.Context, id string) error {
		err := m.Check(ctx, id)
		if err != nil && !errors.Is(err, ErrBusy) {
			m.log.Warn("camera check failed", "camera", id, "err", err)
		}
		return nil
	})
}

// ids lists the cameras that keep returns true for, sorted.
func (m *Manager) ids(keep func(*Camera) bool) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for id, c := range m.cams {
		if keep(c) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// parallel runs f on ids with at most cfg.Parallel at once and returns the
// errors by id.
func (m *Manager) parallel(ctx context.Context, ids []string, f func(context.Context, string) error) map[string]error {
	out := make(map[string]error, len(ids))
	var mu sync.Mutex
	sem := make(chan struct{}, m.cfg.Parallel)
	var wg sync.WaitGroup
	for _, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			mu.Lock()
			out[id] = ctx.Err()
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := f(ctx, id)
			mu.Lock()
			out[id] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// HandleIngestEvent turns the ingest's own video-loss detection into alarms.
// The appliance calls it from its ingest event handler.
func (m *Manager) HandleIngestEvent(e ingest.Event) {
	switch e.Kind {
	case ingest.EventVideoLoss:
		m.raise(Alarm{Time: e.Time, Camera: e.Camera, Kind: AlarmVideoLoss, Active: true, Detail: "no picture from the camera"})
	case ingest.EventVideoRestored:
		m.raise(Alarm{Time: e.Time, Camera: e.Camera, Kind: AlarmVideoLoss, Active: false, Detail: "pictures flow again"})
	}
}
