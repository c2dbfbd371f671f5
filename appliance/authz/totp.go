package authz

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

const totpPeriod = 30

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// TOTPEnrolment is what an authenticator app needs: the otpauth:// URL (also as a QR code) and the
// secret in base32 for manual entry. It is shown once, to its owner only.
type TOTPEnrolment struct {
	Secret string
	URL    string
	QRPNG  []byte
}

func (s *Service) newTOTP(account string) (TOTPEnrolment, error) {
	k, err := totp.Generate(totp.GenerateOpts{Issuer: s.cfg.Issuer, AccountName: account, Period: totpPeriod,
		SecretSize: 20, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1, Rand: lockedReader{s}})
	if err != nil {
		return TOTPEnrolment{}, fmt.Errorf("totp: %w", err)
	}
	e := TOTPEnrolment{Secret: k.Secret(), URL: k.URL()}
	if img, err := k.Image(200, 200); err == nil {
		e.QRPNG, _ = encodePNG(img)
	}
	return e, nil
}

type lockedReader struct{ s *Service }

func (l lockedReader) Read(b []byte) (int, error) { return l.s.readRand(b) }

// checkTOTP returns the time step a code matches (within one step of now) if that step is after last.
func checkTOTP(secret, code string, now time.Time, last uint64) (uint64, bool) {
	code = strings.TrimSpace(code)
	if len(code) != 6 {
		return 0, false
	}
	step := uint64(now.Unix()) / totpPeriod
	var matched uint64
	ok := 0
	for _, st := range []uint64{step - 1, step, step + 1} {
		want, err := totp.GenerateCodeCustom(secret, time.Unix(int64(st*totpPeriod), 0), totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && st > last {
			matched, ok = st, 1
		}
	}
	return matched, ok == 1
}

// TOTPCode computes the current code for a base32 secret; for tests and tools.
func TOTPCode(secret string, t time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, t, totpOpts)
}

const recoveryAlphabet = "abcdefghjkmnpqrstuvwxyz23456789"

// newRecoveryCodes returns n codes (shown once) and their hashes (stored).
func (s *Service) newRecoveryCodes(n int) ([]string, []string, error) {
	var codes, hashes []string
	for range n {
		b := make([]byte, 10)
		if _, err := s.readRand(b); err != nil {
			return nil, nil, fmt.Errorf("recovery code: %w", err)
		}
		var sb strings.Builder
		for i, c := range b {
			if i == 5 {
				sb.WriteByte('-')
			}
			sb.WriteByte(recoveryAlphabet[int(c)%len(recoveryAlphabet)])
		}
		codes = append(codes, sb.String())
		hashes = append(hashes, hashRecovery(sb.String()))
	}
	return codes, hashes, nil
}

func normRecovery(c string) string {
	return strings.ToLower(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(c)))
}

func hashRecovery(c string) string {
	h := sha256.Sum256([]byte("edgenvr recovery v1\n" + normRecovery(c)))
	return hex.EncodeToString(h[:])
}

// useRecovery removes a matching recovery code from u and reports whether one matched.
func useRecovery(u *User, code string) bool {
	n := normRecovery(code)
	if len(n) != 10 {
		return false
	}
	h := hashRecovery(n)
	for i, r := range u.Recovery {
		if subtle.ConstantTimeCompare([]byte(r), []byte(h)) == 1 {
			u.Recovery = append(u.Recovery[:i:i], u.Recovery[i+1:]...)
			return true
		}
	}
	return false
}

var setupAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

func normSetupCode(c string) string {
	return strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(c)))
}
