package authz

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Sealer keeps a small secret bound to the TPM; *tpm.TPM satisfies it.
type Sealer interface {
	Seal(data []byte) ([]byte, error)
	Unseal(blob []byte) ([]byte, error)
}

var (
	bucketMeta     = []byte("meta")
	keySealedSeeds = []byte("seed-key-sealed")
)

const sealedPrefix = "sealed:v1:"

// loadSeedKey unseals (creating at first start) the AES-256 key under which TOTP seeds are stored, so a
// copy of auth.db without the TPM reveals none.
func (s *Service) loadSeedKey() error {
	if s.cfg.Sealer == nil {
		return nil
	}
	var blob []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := b.Get(keySealedSeeds); v != nil {
			blob = append([]byte(nil), v...)
			return nil
		}
		key := make([]byte, 32)
		if _, err := s.readRand(key); err != nil {
			return err
		}
		if blob, err = s.cfg.Sealer.Seal(key); err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		return b.Put(keySealedSeeds, blob)
	})
	if err != nil {
		return fmt.Errorf("seed key: %w", err)
	}
	key, err := s.cfg.Sealer.Unseal(blob)
	if err != nil {
		return fmt.Errorf("seed key: unseal (another TPM, or a cleared one?): %w", err)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("seed key: %w", err)
	}
	s.seeds, err = cipher.NewGCM(blk)
	return err
}

// sealSeed encrypts a TOTP seed for storage, bound to its user.
func (s *Service) sealSeed(user, seed string) (string, error) {
	if s.seeds == nil {
		return seed, nil
	}
	nonce := make([]byte, s.seeds.NonceSize())
	if _, err := s.readRand(nonce); err != nil {
		return "", err
	}
	ct := s.seeds.Seal(nonce, nonce, []byte(seed), []byte("totp\x00"+user))
	return sealedPrefix + base64.RawStdEncoding.EncodeToString(ct), nil
}

var errSeed = errors.New("stored TOTP seed cannot be opened")

// openSeed returns a stored TOTP seed in clear.
func (s *Service) openSeed(user, stored string) (string, error) {
	rest, ok := strings.CutPrefix(stored, sealedPrefix)
	if !ok {
		return stored, nil // stored before sealing was configured
	}
	if s.seeds == nil {
		return "", errSeed
	}
	b, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil || len(b) < s.seeds.NonceSize() {
		return "", errSeed
	}
	pt, err := s.seeds.Open(nil, b[:s.seeds.NonceSize()], b[s.seeds.NonceSize():], []byte("totp\x00"+user))
	if err != nil {
		return "", errSeed
	}
	return string(pt), nil
}
