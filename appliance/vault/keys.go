package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Unwrapper performs ECDH with the vault private key: it multiplies peer by
// the private key and returns the 32-byte X coordinate. *tpm.TPM satisfies
// it; the private key never has to exist in this process.
type Unwrapper interface {
	ECDH(peer *ecdh.PublicKey) ([]byte, error)
}

const (
	dekSize   = 32
	p256Point = 65 // uncompressed SEC 1 point
	// eciesLen is the type-1 blob: ephemeral public key, recipient public
	// key, sealed DEK with its tag.
	eciesLen  = 2*p256Point + dekSize + gcmTag
	wrapLabel = "edgenvr segment DEK wrap v1"
)

// wrapDEK seals dek to the vault public key (type 1).
func wrapDEK(dek []byte, to *ecdh.PublicKey, rnd io.Reader) ([]byte, error) {
	if to == nil || to.Curve() != ecdh.P256() {
		return nil, errors.New("vault key is not a P-256 public key")
	}
	eph, err := ephemeralKey(rnd)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(to)
	if err != nil {
		return nil, fmt.Errorf("ecdh: %w", err)
	}
	ephPub, toPub := eph.PublicKey().Bytes(), to.Bytes()
	aead, err := wrapAEAD(z, ephPub, toPub)
	clear(z)
	if err != nil {
		return nil, err
	}
	blob := make([]byte, 0, eciesLen)
	blob = append(blob, ephPub...)
	blob = append(blob, toPub...)
	var nonce [12]byte // the wrapping key is used exactly once
	return aead.Seal(blob, nonce[:], dek, nil), nil
}

// ephemeralKey draws a P-256 private scalar from rnd, so tests that inject
// randomness get reproducible files.
func ephemeralKey(rnd io.Reader) (*ecdh.PrivateKey, error) {
	var s [32]byte
	defer clear(s[:])
	for range 8 {
		if _, err := io.ReadFull(rnd, s[:]); err != nil {
			return nil, fmt.Errorf("ephemeral key: %w", err)
		}
		k, err := ecdh.P256().NewPrivateKey(s[:])
		if err == nil {
			return k, nil
		}
	}
	return nil, errors.New("ephemeral key: no valid scalar from the random source")
}

func wrapAEAD(z, ephPub, toPub []byte) (cipher.AEAD, error) {
	salt := make([]byte, 0, 2*p256Point)
	salt = append(salt, ephPub...)
	salt = append(salt, toPub...)
	k, err := hkdf.Key(sha256.New, z, salt, wrapLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("hkdf: %w", err)
	}
	defer clear(k)
	return newGCM(k)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return g, nil
}

// unwrapDEK recovers the DEK from the first type-1 key of h through u.
func unwrapDEK(h *Header, u Unwrapper) ([]byte, error) {
	if u == nil {
		return nil, errors.New("unwrap DEK: nil Unwrapper")
	}
	var blob []byte
	for _, k := range h.Keys {
		if k.Type == KeyECIESP256 {
			blob = k.Data
			break
		}
	}
	if blob == nil {
		return nil, fmt.Errorf("unwrap DEK: %w: no type-%d wrapped key", ErrFormat, KeyECIESP256)
	}
	if len(blob) != eciesLen {
		return nil, fmt.Errorf("unwrap DEK: %w: type-1 key of %d bytes, want %d", ErrFormat, len(blob), eciesLen)
	}
	ephPub, toPub, sealed := blob[:p256Point], blob[p256Point:2*p256Point], blob[2*p256Point:]
	eph, err := ecdh.P256().NewPublicKey(ephPub)
	if err != nil {
		return nil, fmt.Errorf("unwrap DEK: %w: ephemeral key: %v", ErrAuth, err)
	}
	z, err := u.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("unwrap DEK: %w", err)
	}
	aead, err := wrapAEAD(z, ephPub, toPub)
	clear(z)
	if err != nil {
		return nil, fmt.Errorf("unwrap DEK: %w", err)
	}
	var nonce [12]byte
	dek, err := aead.Open(nil, nonce[:], sealed, nil)
	if err != nil {
		return nil, fmt.Errorf("unwrap DEK: %w", ErrAuth)
	}
	return dek, nil
}

// KeyCache keeps recently unwrapped DEKs in memory for a short time, so that
// playback of consecutive chunks and segments does not ask the TPM for every
// file. Entries are keyed by segment id and the wrapped key they came from,
// expire after a TTL measured on an injected clock, and are zeroed when
// evicted. A KeyCache is safe for concurrent use; the zero value is not
// usable, use [NewKeyCache].
type KeyCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[cacheKey]*cacheEntry
}

type cacheKey struct {
	id   [16]byte
	blob [32]byte // SHA-256 of the type-1 wrapped key
}

type cacheEntry struct {
	dek     []byte
	expires time.Time
}

// NewKeyCache returns a cache holding at most max DEKs, each for ttl after it
// was unwrapped, reading the time from now (time.Now when nil).
func NewKeyCache(ttl time.Duration, max int, now func() time.Time) *KeyCache {
	if now == nil {
		now = time.Now
	}
	if max < 1 {
		max = 1
	}
	return &KeyCache{ttl: ttl, max: max, now: now, m: make(map[cacheKey]*cacheEntry)}
}

func cacheKeyOf(h *Header) (cacheKey, bool) {
	for _, k := range h.Keys {
		if k.Type == KeyECIESP256 {
			return cacheKey{id: h.SegmentID, blob: sha256.Sum256(k.Data)}, true
		}
	}
	return cacheKey{}, false
}

// get returns a copy of the cached DEK, or nil.
func (c *KeyCache) get(k cacheKey) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.sweepLocked(now)
	e, ok := c.m[k]
	if !ok {
		return nil
	}
	return append([]byte(nil), e.dek...)
}

func (c *KeyCache) put(k cacheKey, dek []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.sweepLocked(now)
	if old, ok := c.m[k]; ok {
		clear(old.dek)
	}
	for len(c.m) >= c.max {
		c.evictOldestLocked()
	}
	c.m[k] = &cacheEntry{dek: append([]byte(nil), dek...), expires: now.Add(c.ttl)}
}

func (c *KeyCache) sweepLocked(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			clear(e.dek)
			delete(c.m, k)
		}
	}
}

func (c *KeyCache) evictOldestLocked() {
	var oldest cacheKey
	var first *cacheEntry
	for k, e := range c.m {
		if first == nil || e.expires.Before(first.expires) {
			oldest, first = k, e
		}
	}
	if first != nil {
		clear(first.dek)
		delete(c.m, oldest)
	}
}

// Sweep zeroes and drops expired entries. Call it periodically if the cache
// may sit idle; lookups sweep as well.
func (c *KeyCache) Sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(c.now())
}

// Purge zeroes and drops every entry.
func (c *KeyCache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		clear(e.dek)
		delete(c.m, k)
	}
}

// Len returns the number of cached keys.
func (c *KeyCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// dekFor returns the segment's DEK, from the cache when c holds it.
func dekFor(h *Header, u Unwrapper, c *KeyCache) ([]byte, error) {
	if c == nil {
		return unwrapDEK(h, u)
	}
	k, ok := cacheKeyOf(h)
	if ok {
		if dek := c.get(k); dek != nil {
			return dek, nil
		}
	}
	dek, err := unwrapDEK(h, u)
	if err != nil {
		return nil, err
	}
	if ok {
		c.put(k, dek)
	}
	return dek, nil
}

// equal32 compares two hashes in constant time.
func equal32(a, b [32]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }
