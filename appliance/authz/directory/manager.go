package directory

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
	"os"
	"path/filepath"
	"sync"

	"github.com/edgenvr/nvr/appliance/authz"
)

// Sealer keeps a small secret bound to the TPM; *tpm.TPM satisfies it.
type Sealer = authz.Sealer

// ManagerConfig configures a [Manager].
type ManagerConfig struct {
	// Path is the settings file (DATA/directory.json).
	Path string
	// Sealer, if set (the TPM), seals the key under which the bind password and keytab are stored;
	// without it they are stored in clear (mode 0600) and a warning is logged.
	Sealer Sealer
	// Rand is the randomness source (default crypto/rand).
	Rand io.Reader
}

// Manager owns the directory settings at run time: it loads them at start, serves logins through the
// current [Directory], and replaces it when the configuration page saves new settings. It implements
// [authz.Negotiator]; install it once with [authz.Service.SetDirectory].
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger

	mu  sync.RWMutex
	s   Settings
	dir *Directory // nil when off
}

var _ authz.Negotiator = (*Manager)(nil)

// stored is the settings file: the settings without secrets, and the secrets sealed.
type stored struct {
	Version  int      `json:"version"`
	Settings Settings `json:"settings"`
	// KeyBlob is the TPM-sealed AES-256 key; Secrets is AES-GCM(nonce||ciphertext) of secretPart.
	KeyBlob []byte `json:"key_blob,omitempty"`
	Secrets []byte `json:"secrets,omitempty"`
	// Clear holds the secrets when no sealer exists.
	Clear *secretPart `json:"clear,omitempty"`
}

type secretPart struct {
	BindPassword string `json:"bind_password"`
	Keytab       []byte `json:"keytab"`
}

// maxSettingsFile bounds the settings file read at start.
const maxSettingsFile = 1 << 20

// NewManager loads the settings (none yet is directory login off). Settings that no longer validate
// leave directory login off and are reported in the log, so the appliance still starts.
func NewManager(cfg ManagerConfig, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Path == "" {
		return nil, errors.New("directory: no settings path")
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	m := &Manager{cfg: cfg, log: log}
	s, err := m.load()
	if err != nil {
		return nil, err
	}
	m.s = s
	if s.Enabled {
		d, err := New(s, log)
		if err != nil {
			log.Error("directory: stored settings are not usable: directory login is off", "err", err)
		} else {
			m.dir = d
		}
	}
	if cfg.Sealer == nil {
		log.Warn("directory: no TPM sealer: the bind password and keytab are stored unencrypted (mode 0600)")
	}
	return m, nil
}

func (m *Manager) load() (Settings, error) {
	f, err := os.Open(m.cfg.Path)
	if errors.Is(err, os.ErrNotExist) {
		return Settings{}.withDefaults(), nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("directory: open settings: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSettingsFile+1))
	if err != nil {
		return Settings{}, fmt.Errorf("directory: read settings: %w", err)
	}
	if len(b) > maxSettingsFile {
		return Settings{}, errors.New("directory: settings file too large")
	}
	var st stored
	if err := json.Unmarshal(b, &st); err != nil {
		return Settings{}, fmt.Errorf("directory: decode settings: %w", err)
	}
	s := st.Settings
	var sec secretPart
	switch {
	case st.Clear != nil:
		sec = *st.Clear
	case st.KeyBlob != nil:
		if m.cfg.Sealer == nil {
			return Settings{}, errors.New("directory: the secrets are sealed but no TPM is available")
		}
		key, err := m.cfg.Sealer.Unseal(st.KeyBlob)
		if err != nil {
			return Settings{}, fmt.Errorf("directory: unseal the settings key (another TPM?): %w", err)
		}
		plain, err := openAEAD(key, st.Secrets)
		if err != nil {
			return Settings{}, fmt.Errorf("directory: secrets: %w", err)
		}
		if err := json.Unmarshal(plain, &sec); err != nil {
			return Settings{}, fmt.Errorf("directory: decode secrets: %w", err)
		}
	}
	s.BindPassword, s.Keytab = sec.BindPassword, sec.Keytab
	return s.withDefaults(), nil
}

func openAEAD(key, blob []byte) ([]byte, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	if len(blob) < g.NonceSize() {
		return nil, errors.New("sealed secrets too short")
	}
	return g.Open(nil, blob[:g.NonceSize()], blob[g.NonceSize():], []byte("edgenvr directory secrets v1"))
}

func (m *Manager) save(s Settings) error {
	st := stored{Version: 1, Settings: s.Redacted()}
	sec := secretPart{BindPassword: s.BindPassword, Keytab: s.Keytab}
	if m.cfg.Sealer == nil {
		st.Clear = &sec
	} else {
		key := make([]byte, 32)
		if _, err := io.ReadFull(m.cfg.Rand, key); err != nil {
			return fmt.Errorf("random key: %w", err)
		}
		blob, err := m.cfg.Sealer.Seal(key)
		if err != nil {
			return fmt.Errorf("seal the settings key: %w", err)
		}
		plain, err := json.Marshal(sec)
		if err != nil {
			return err
		}
		blk, err := aes.NewCipher(key)
		if err != nil {
			return err
		}
		g, err := cipher.NewGCM(blk)
		if err != nil {
			return err
		}
		nonce := make([]byte, g.NonceSize())
		if _, err := io.ReadFull(m.cfg.Rand, nonce); err != nil {
			return fmt.Errorf("random nonce: %w", err)
		}
		st.KeyBlob, st.Secrets = blob, g.Seal(nonce, nonce, plain, []byte("edgenvr directory secrets v1"))
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(m.cfg.Path, b)
}

// writeAtomic writes a file by temp file, fsync and rename, then syncs the directory.
func writeAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".directory-*.tmp")
	if err != nil {
		return fmt.Errorf("directory: write settings: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("directory: write settings: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("directory: write settings: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("directory: sync settings: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("directory: close settings: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("directory: rename settings: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("directory: sync settings dir: %w", err)
	}
	defer d.Close()
	return d.Sync()
}

// Settings returns the current settings without secrets (see [Settings.HasBindPassword]).
func (m *Manager) Settings() Settings {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := m.s
	r := s.Redacted()
	if s.BindPassword != "" {
		r.BindPassword = secretKept
	}
	if len(s.Keytab) > 0 {
		r.Keytab = []byte(secretKept)
	}
	return r
}

// secretKept stands for a stored secret in redacted settings.
const secretKept = "\x00kept"

// Update validates and stores new settings and switches logins to them. An empty BindPassword or Keytab
// keeps the stored one (the page never shows them). It returns a description of the change for the
// audit log (no secret).
func (m *Manager) Update(s Settings) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.BindPassword == "" || s.BindPassword == secretKept {
		s.BindPassword = m.s.BindPassword
	}
	if len(s.Keytab) == 0 || string(s.Keytab) == secretKept {
		s.Keytab = m.s.Keytab
	}
	var d *Directory
	if s.Enabled {
		var err error
		if d, err = New(s, m.log); err != nil {
			return "", err
		}
	} else if err := s.Validate(); err != nil {
		return "", err
	}
	if err := m.save(s); err != nil {
		return "", err
	}
	m.s, m.dir = s.withDefaults(), d
	desc := fmt.Sprintf("enabled %v, %s %s, passwords by %s, single sign-on %v, %d group mappings", s.Enabled, s.Kind, s.URL, s.PasswordVia, s.SPNEGO, len(s.Mappings))
	m.log.Info("directory: settings changed", "summary", desc)
	return desc, nil
}

func (m *Manager) current() *Directory {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.dir
}

// Authenticate implements [authz.Directory]: with directory login off, every directory name is refused as
// unknown.
func (m *Manager) Authenticate(ctx context.Context, name, password string) (authz.DirectoryUser, error) {
	d := m.current()
	if d == nil {
		return authz.DirectoryUser{}, badCredentials(false, "directory login is off")
	}
	return d.Authenticate(ctx, name, password)
}

// Negotiate implements [authz.Negotiator].
func (m *Manager) Negotiate(ctx context.Context, token []byte) (authz.DirectoryUser, error) {
	d := m.current()
	if d == nil {
		return authz.DirectoryUser{}, &authz.DirectoryError{Err: authz.ErrNoDirectory}
	}
	return d.Negotiate(ctx, token)
}

// NegotiateEnabled implements [authz.Negotiator].
func (m *Manager) NegotiateEnabled() bool {
	d := m.current()
	return d != nil && d.NegotiateEnabled()
}

// TestLookup looks a user up with the current settings (see [Directory.TestLookup]).
func (m *Manager) TestLookup(ctx context.Context, name string) (authz.DirectoryUser, error) {
	d := m.current()
	if d == nil {
		return authz.DirectoryUser{}, authz.ErrNoDirectory
	}
	return d.TestLookup(ctx, name)
}
