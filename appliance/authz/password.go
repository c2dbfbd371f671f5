package authz

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Argon2Params is the cost of the argon2id password hash (RFC 9106).
type Argon2Params struct {
	Time    uint32 // passes
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultArgon2 is the production cost: 3 passes over 64 MiB with 2 lanes (RFC 9106's second recommended
// option, with the lanes this two-core appliance has).
var DefaultArgon2 = Argon2Params{Time: 3, Memory: 64 * 1024, Threads: 2}

const (
	saltLen = 16
	keyLen  = 32
	// MinPasswordLen is the shortest password accepted, in characters.
	MinPasswordLen = 12
	// MaxPasswordLen bounds the work one login costs.
	MaxPasswordLen = 256
)

// ErrWeakPassword is returned when a new password fails the policy; the wrapped message says why without
// repeating the password.
var ErrWeakPassword = errors.New("password refused")

//go:generate go run ./internal/gencommon -o commonpasswords.txt

//go:embed commonpasswords.txt
var commonPasswordsFile []byte

var common struct {
	once sync.Once
	set  map[string]struct{}
}

func commonPasswords() map[string]struct{} {
	common.once.Do(func() {
		common.set = map[string]struct{}{}
		sc := bufio.NewScanner(bytes.NewReader(commonPasswordsFile))
		for sc.Scan() {
			w := strings.TrimSpace(sc.Text())
			if w != "" && !strings.HasPrefix(w, "#") {
				common.set[strings.ToLower(w)] = struct{}{}
			}
		}
	})
	return common.set
}

// IsCommonPassword reports whether pw (compared case-insensitively) is on the bundled list.
func IsCommonPassword(pw string) bool {
	_, ok := commonPasswords()[strings.ToLower(pw)]
	return ok
}

// CheckPasswordPolicy returns nil if pw may be set for user: at least [MinPasswordLen] characters, at most
// [MaxPasswordLen] bytes, not on the common-password list, not the user name, not one repeated character.
func CheckPasswordPolicy(user, pw string) error {
	n := utf8.RuneCountInString(pw)
	switch {
	case n < MinPasswordLen:
		return fmt.Errorf("%w: shorter than %d characters", ErrWeakPassword, MinPasswordLen)
	case len(pw) > MaxPasswordLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrWeakPassword, MaxPasswordLen)
	case !utf8.ValidString(pw):
		return fmt.Errorf("%w: not valid UTF-8", ErrWeakPassword)
	case IsCommonPassword(pw):
		return fmt.Errorf("%w: on the list of common passwords", ErrWeakPassword)
	case user != "" && strings.Contains(strings.ToLower(pw), strings.ToLower(user)):
		return fmt.Errorf("%w: contains the user name", ErrWeakPassword)
	case strings.Count(pw, pw[:1]) == len(pw):
		return fmt.Errorf("%w: one repeated character", ErrWeakPassword)
	}
	return nil
}

var b64 = base64.RawStdEncoding

// hashPassword returns the PHC string of pw under p with a fresh salt from s.rand.
func (s *Service) hashPassword(pw string, p Argon2Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := s.readRand(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// errBadHash means a stored hash could not be parsed.
var errBadHash = errors.New("stored password hash is malformed")

// verifyPassword checks pw against a PHC argon2id string in constant time.
func verifyPassword(phc, pw string) (bool, error) {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false, errBadHash
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false, errBadHash
	}
	if p.Memory == 0 || p.Memory > 1<<20 || p.Time == 0 || p.Time > 16 || p.Threads == 0 {
		return false, errBadHash
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, errBadHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 || len(want) > 64 {
		return false, errBadHash
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
