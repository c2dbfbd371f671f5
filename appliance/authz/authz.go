package authz

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	bolt "go.etcd.io/bbolt"
)

// Sentinel errors callers branch on. Their messages carry no secret.
var (
	ErrBadCredentials = errors.New("wrong user name, password or code")
	ErrThrottled      = errors.New("too many attempts: wait before trying again")
	ErrNotFound       = errors.New("not found")
	ErrExists         = errors.New("already exists")
	ErrExpired        = errors.New("expired")
	ErrSetupDone      = errors.New("setup is already done")
	ErrDenied         = errors.New("access denied")
	ErrLastAdmin      = errors.New("the last administrator cannot be removed")
)

// Config configures a [Service].
type Config struct {
	// DataDir holds auth.db and audit.jsonl.
	DataDir string
	// Signer signs the audit log's checkpoints (a TPM-held key in production). Required.
	Signer crypto.Signer
	// Anchor, if set, replaces the signed checkpoints written into the audit log itself (for example by
	// the evidence log once it exists).
	Anchor Anchor
	// Now and Sleep are the clock; nil means the real one.
	Now   func() time.Time
	Sleep func(context.Context, time.Duration) error
	// Rand is the randomness source; nil means crypto/rand.
	Rand io.Reader
	// Argon2 is the password hash cost; zero means [DefaultArgon2].
	Argon2 Argon2Params
	// SessionIdle and SessionMax end sessions (default 15 min and 12 h).
	SessionIdle, SessionMax time.Duration
	// SetupCodeTTL is how long a setup code is valid (default 30 min); a new one is shown after.
	SetupCodeTTL time.Duration
	// CheckpointEvery and CheckpointInterval decide when a checkpoint is signed: after so many entries or
	// so much time with new entries (defaults 256 and 5 s).
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// Issuer names the appliance in authenticator apps (default "Edge NVR").
	Issuer string
	// WebAuthn relying party: ID (host name) and origins ("https://host:port"). Empty disables WebAuthn.
	RPID      string
	RPOrigins []string
	// Throttle tunes the progressive delays; zero values take the defaults.
	Throttle ThrottleConfig
	// Forward, if set, receives every audit entry after it is written (for the syslog forwarder).
	Forward func(Entry)
	// Sealer, if set (the TPM), keeps the key under which TOTP seeds are stored; without it they are
	// stored in clear in auth.db.
	Sealer Sealer
}

// Service is the access-control service. Its methods are safe for concurrent use.
type Service struct {
	cfg   Config
	log   *slog.Logger
	db    *bolt.DB
	audit *auditLog
	wa    *webauthn.WebAuthn
	thr   *throttle

	randMu    sync.Mutex
	dummyOnce sync.Once
	dummyHash string

	mu        sync.Mutex
	sessions  map[string]*Session // by token hash
	pending   map[string]*pendingLogin
	approvals map[string]*Approval
	setup     *setupState
	enrol     map[string]*setupEnrol
	waReg     map[string]*webauthn.SessionData // by session id
	seeds     cipher.AEAD                      // TOTP seed encryption, nil without a Sealer

	dir atomic.Pointer[directoryHolder] // the directory for names that are no local account, see SetDirectory
}

var (
	bucketUsers  = []byte("users")
	bucketRoles  = []byte("roles")
	bucketTokens = []byte("tokens")
)

// New opens (creating if needed) DATA/auth.db and DATA/audit.jsonl.
func New(cfg Config, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("authz: no data directory")
	}
	if cfg.Signer == nil && cfg.Anchor == nil {
		return nil, errors.New("authz: no checkpoint signer")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleepCtx
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Argon2 == (Argon2Params{}) {
		cfg.Argon2 = DefaultArgon2
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 15 * time.Minute
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = 12 * time.Hour
	}
	if cfg.SetupCodeTTL <= 0 {
		cfg.SetupCodeTTL = 30 * time.Minute
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = 256
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = 5 * time.Second
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "Edge NVR"
	}
	if cfg.Anchor == nil {
		cfg.Anchor = SignerAnchor{Signer: cfg.Signer}
	}
	s := &Service{cfg: cfg, log: log, sessions: map[string]*Session{}, pending: map[string]*pendingLogin{},
		approvals: map[string]*Approval{}, enrol: map[string]*setupEnrol{}, waReg: map[string]*webauthn.SessionData{}}
	s.thr = newThrottle(cfg.Throttle, cfg.Now)
	if cfg.RPID != "" {
		wa, err := webauthn.New(&webauthn.Config{RPID: cfg.RPID, RPDisplayName: cfg.Issuer, RPOrigins: cfg.RPOrigins})
		if err != nil {
			return nil, fmt.Errorf("authz: webauthn: %w", err)
		}
		s.wa = wa
	}
	db, err := bolt.Open(filepath.Join(cfg.DataDir, "auth.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("authz: open auth.db: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketUsers, bucketRoles, bucketTokens} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, errors.Join(fmt.Errorf("authz: init auth.db: %w", err), db.Close())
	}
	s.db = db
	if err := s.loadSeedKey(); err != nil {
		return nil, errors.Join(fmt.Errorf("authz: %w", err), db.Close())
	}
	al, err := openAuditLog(filepath.Join(cfg.DataDir, "audit.jsonl"), cfg.Anchor, cfg.Now, log)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("authz: %w", err), db.Close())
	}
	al.every, al.forward = cfg.CheckpointEvery, cfg.Forward
	s.audit = al
	return s, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Run syncs the audit log, signs checkpoints and expires sessions until ctx ends, then writes a final
// checkpoint. Close the service after Run returns.
func (s *Service) Run(ctx context.Context) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lastCP := s.cfg.Now()
	for {
		select {
		case <-ctx.Done():
			return s.audit.checkpoint()
		case <-tick.C:
		}
		if err := s.audit.sync(); err != nil {
			s.log.Error("audit sync failed", "err", err)
		}
		now := s.cfg.Now()
		if s.audit.sinceCheckpoint() > 0 && now.Sub(lastCP) >= s.cfg.CheckpointInterval {
			if err := s.audit.checkpoint(); err != nil {
				s.log.Error("audit checkpoint failed", "err", err)
			}
			lastCP = now
		}
		s.expire(now)
	}
}

// Close closes the audit log and auth.db.
func (s *Service) Close() error {
	return errors.Join(s.audit.close(), s.db.Close())
}

func (s *Service) readRand(b []byte) (int, error) {
	s.randMu.Lock()
	defer s.randMu.Unlock()
	return io.ReadFull(s.cfg.Rand, b)
}

// User is an account. Secret fields are never rendered by the web layer.
type User struct {
	Name     string    `json:"name"`
	Roles    []string  `json:"roles"`
	Hash     string    `json:"hash,omitempty"`
	DualAuth bool      `json:"dual_auth"` // a login needs a second person's approval
	Service  bool      `json:"service"`   // a service account: API tokens only, no interactive login
	Disabled bool      `json:"disabled"`
	Created  time.Time `json:"created"`

	TOTPSecret string   `json:"totp_secret,omitempty"`
	TOTPLast   uint64   `json:"totp_last,omitempty"` // last accepted time step, against replay
	Recovery   []string `json:"recovery,omitempty"`  // SHA-256 of unused recovery codes

	WebAuthnID  []byte                `json:"webauthn_id,omitempty"`
	Credentials []webauthn.Credential `json:"credentials,omitempty"`

	// Directory is set on accounts that a [Directory] vouches for (no local password; roles from the
	// directory at each login): it names the directory. DirectoryDN and DirectorySynced say which entry
	// and when it was last read.
	Directory       string    `json:"directory,omitempty"`
	DirectoryDN     string    `json:"directory_dn,omitempty"`
	DirectorySynced time.Time `json:"directory_synced,omitzero"`

	// Set by Public, which drops the secrets they summarise.
	totpEnrolled bool
	recoveryLeft int
}

// HasTOTP reports whether TOTP is enrolled.
func (u User) HasTOTP() bool { return u.TOTPSecret != "" || u.totpEnrolled }

// HasWebAuthn reports whether a security key is enrolled.
func (u User) HasWebAuthn() bool { return len(u.Credentials) > 0 }

// RecoveryLeft is the number of unused recovery codes.
func (u User) RecoveryLeft() int { return len(u.Recovery) + u.recoveryLeft }

// Public returns a copy without secret fields.
func (u User) Public() User {
	u.totpEnrolled, u.recoveryLeft = u.HasTOTP(), len(u.Recovery)
	u.Hash, u.TOTPSecret, u.Recovery = "", "", nil
	return u
}

func (s *Service) getUser(tx *bolt.Tx, name string) (*User, error) {
	v := tx.Bucket(bucketUsers).Get([]byte(name))
	if v == nil {
		return nil, fmt.Errorf("user %s: %w", name, ErrNotFound)
	}
	var u User
	if err := json.Unmarshal(v, &u); err != nil {
		return nil, fmt.Errorf("user %s: decode: %w", name, err)
	}
	return &u, nil
}

func putJSON(tx *bolt.Tx, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), b)
}

// User returns the account named name, without secrets.
func (s *Service) User(name string) (User, error) {
	var u *User
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		u, err = s.getUser(tx, name)
		return err
	})
	if err != nil {
		return User{}, err
	}
	return u.Public(), nil
}

// Users lists every account, without secrets, by name.
func (s *Service) Users() ([]User, error) {
	var out []User
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u User
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("user %s: decode: %w", k, err)
			}
			out = append(out, u.Public())
			return nil
		})
	})
	return out, err
}

// Roles lists every role by name.
func (s *Service) Roles() ([]Role, error) {
	var out []Role
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRoles).ForEach(func(k, v []byte) error {
			var r Role
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("role %s: decode: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

func (s *Service) rolesOf(tx *bolt.Tx, names []string) []Role {
	var out []Role
	for _, n := range names {
		v := tx.Bucket(bucketRoles).Get([]byte(n))
		if v == nil {
			continue
		}
		var r Role
		if json.Unmarshal(v, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// needsSetup reports whether no account exists yet.
func (s *Service) needsSetup() bool {
	empty := true
	_ = s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketUsers).Cursor().First()
		empty = k == nil
		return nil
	})
	return empty
}

// NeedsSetup reports whether the appliance still has no account (first boot).
func (s *Service) NeedsSetup() bool { return s.needsSetup() }
