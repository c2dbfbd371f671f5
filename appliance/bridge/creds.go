package bridge

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

// Sealer keeps a small secret bound to the TPM; *tpm.TPM satisfies it.
type Sealer interface {
	Seal(data []byte) ([]byte, error)
	Unseal(blob []byte) ([]byte, error)
}

// ErrNoCredential is returned when an account has no bridge credential.
var ErrNoCredential = errors.New("no bridge credential")

// ErrNotHolder is returned when an account may not hold a bridge credential (see [CheckHolder]).
var ErrNotHolder = errors.New("this account may not hold a bridge credential")

// CredentialInfo describes a bridge credential without its secret.
type CredentialInfo struct {
	User   string
	Serial uint64
	Issued time.Time
}

// Credential file names inside the credential directory.
const (
	keyFile   = "bridge-key"
	credsFile = "bridge-credentials.json"
	keyPrefix = "nvrb_"
)

// key file formats: the first byte says how the 32-byte key is kept.
const (
	keyClear  = 0 // no TPM (make run): the key is in the file, which only root reads
	keySealed = 1 // sealed to the TPM
)

// Credentials is the store of bridge credentials: per account a serial number, from which the
// credential is derived as HMAC-SHA256(key, account, serial) under a 32-byte key sealed to the TPM. The
// file holds no secret; revoking deletes the serial, rotating increments it. Safe for concurrent use.
type Credentials struct {
	dir string
	key []byte
	now func() time.Time

	mu   sync.Mutex
	recs map[string]CredentialInfo
}

// OpenCredentials opens (creating if needed) the credential store in dir. A nil sealer keeps the key in
// clear in a root-only file (no TPM); rnd nil means crypto/rand; now nil means time.Now.
func OpenCredentials(dir string, sealer Sealer, rnd io.Reader, now func() time.Time) (*Credentials, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bridge credentials: %w", err)
	}
	key, err := loadKey(filepath.Join(dir, keyFile), sealer, rnd)
	if err != nil {
		return nil, fmt.Errorf("bridge credential key: %w", err)
	}
	c := &Credentials{dir: dir, key: key, now: now, recs: map[string]CredentialInfo{}}
	b, err := os.ReadFile(filepath.Join(dir, credsFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("bridge credentials: %w", err)
	default:
		var recs []CredentialInfo
		if err := json.Unmarshal(b, &recs); err != nil {
			return nil, fmt.Errorf("bridge credentials: %s: %w", credsFile, err)
		}
		for _, r := range recs {
			c.recs[r.User] = r
		}
	}
	return c, nil
}

func loadKey(path string, sealer Sealer, rnd io.Reader) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) < 1 || len(b) > 4096 {
			return nil, errors.New("key file has a bad size")
		}
		switch b[0] {
		case keySealed:
			if sealer == nil {
				return nil, errors.New("the key is sealed to a TPM, and none is configured")
			}
			k, err := sealer.Unseal(b[1:])
			if err != nil {
				return nil, fmt.Errorf("unseal: %w", err)
			}
			if len(k) != 32 {
				return nil, errors.New("unsealed key has a bad size")
			}
			return k, nil
		case keyClear:
			if len(b) != 33 {
				return nil, errors.New("key file has a bad size")
			}
			return b[1:], nil
		default:
			return nil, errors.New("key file of an unknown kind")
		}
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k := make([]byte, 32)
	if _, err := io.ReadFull(rnd, k); err != nil {
		return nil, fmt.Errorf("random key: %w", err)
	}
	out := append([]byte{keyClear}, k...)
	if sealer != nil {
		blob, err := sealer.Seal(k)
		if err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
		out = append([]byte{keySealed}, blob...)
	}
	if err := writeFileAtomic(path, out); err != nil {
		return nil, err
	}
	return k, nil
}

// derive computes the credential of user at serial. The account's creation time is bound in, so an account
// deleted and created again under the same name does not inherit the old account's credential.
func (c *Credentials) derive(user string, created time.Time, serial uint64) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("nvr bridge credential v1\x00"))
	m.Write([]byte(user))
	var n [17]byte
	binary.BigEndian.PutUint64(n[1:9], serial)
	binary.BigEndian.PutUint64(n[9:], uint64(created.UnixNano()))
	m.Write(n[:])
	return keyPrefix + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:24])
}

// mac computes a keyed hash for nonces, under a key separate from the credentials'.
func (c *Credentials) mac(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("nvr bridge nonce v1\x00"))
	for _, p := range parts {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		m.Write(l[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// issue creates (or replaces) the credential of user (an account created at created) and returns it. It is
// shown once; only the serial is stored.
func (c *Credentials) issue(user string, created time.Time) (string, CredentialInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.recs[user]
	r.User = user
	r.Serial++
	r.Issued = c.now().UTC()
	prev, had := c.recs[user]
	c.recs[user] = r
	if err := c.saveLocked(); err != nil {
		if had {
			c.recs[user] = prev
		} else {
			delete(c.recs, user)
		}
		return "", CredentialInfo{}, err
	}
	return c.derive(user, created, r.Serial), r, nil
}

// CheckHolder reports whether account u may hold and use a bridge credential: service accounts, and people
// who issue their own after a full sign-in (password and second factor). It refuses, with [ErrNotHolder]:
// a disabled account; a directory account (its roles are read from the directory at each sign-in, and
// the directory may stop vouching for it, which a long-lived credential would outlive); and a person whose
// sign-ins need a second person's approval (dual authorization, which a credential would bypass). It is
// checked when a credential is issued and again at every authentication, so an account that becomes one
// of these loses the bridge at once. Rights are not checked here: the right to hold one
// ([authz.UseBridge]) is decided by whoever issues it (the web pages), and every stream is decided per
// camera by the bridge.
func CheckHolder(u authz.User) error {
	switch {
	case u.Disabled:
		return fmt.Errorf("%w: the account is disabled", ErrNotHolder)
	case u.Directory != "":
		return fmt.Errorf("%w: %s is a directory account, whose roles come from the directory at each sign-in", ErrNotHolder, u.Name)
	case u.DualAuth && !u.Service:
		return fmt.Errorf("%w: the sign-ins of %s need a second person's approval, which a credential would bypass", ErrNotHolder, u.Name)
	}
	return nil
}

// Issue creates or rotates the bridge credential of account u and returns it: shown once, never stored
// (only the serial is). The previous credential stops working at once. The caller has decided that the
// request is allowed (web: the account itself, or an administrator for a service account) and audits it.
func (c *Credentials) Issue(u authz.User) (string, CredentialInfo, error) {
	if err := CheckHolder(u); err != nil {
		return "", CredentialInfo{}, err
	}
	if u.Created.IsZero() {
		return "", CredentialInfo{}, fmt.Errorf("bridge credential for %s: the account has no creation time", u.Name)
	}
	return c.issue(u.Name, u.Created)
}

// Revoke deletes the bridge credential of user; [ErrNoCredential] if there is none. The caller decides and
// audits.
func (c *Credentials) Revoke(user string) error { return c.revoke(user) }

// Info returns user's credential without its secret.
func (c *Credentials) Info(user string) (CredentialInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.recs[user]
	return r, ok
}

// revoke deletes user's credential.
func (c *Credentials) revoke(user string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, ok := c.recs[user]
	if !ok {
		return fmt.Errorf("%s: %w", user, ErrNoCredential)
	}
	delete(c.recs, user)
	if err := c.saveLocked(); err != nil {
		c.recs[user] = prev
		return err
	}
	return nil
}

// secret returns the current credential of user (an account created at created) and its serial.
func (c *Credentials) secret(user string, created time.Time) (string, uint64, bool) {
	c.mu.Lock()
	r, ok := c.recs[user]
	c.mu.Unlock()
	if !ok {
		return "", 0, false
	}
	return c.derive(user, created, r.Serial), r.Serial, true
}

// List returns the issued credentials without secrets, by user.
func (c *Credentials) List() []CredentialInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]CredentialInfo, 0, len(c.recs))
	for _, r := range c.recs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}

func (c *Credentials) saveLocked() error {
	recs := make([]CredentialInfo, 0, len(c.recs))
	for _, r := range c.recs {
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].User < recs[j].User })
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(c.dir, credsFile), append(b, '\n')); err != nil {
		return fmt.Errorf("save bridge credentials: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path through a synced temporary file and a rename, readable by the owner only.
func writeFileAtomic(path string, b []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err = tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
