package authz

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

// TestSeedsSealedByTPM stores TOTP seeds under a key sealed by a real (software) TPM: auth.db holds no
// seed in clear, logins work across a restart, and another TPM cannot open the database's seeds.
func TestSeedsSealedByTPM(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp, err := tpm.Open(dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	open := func(sealer Sealer) (*Service, error) {
		return New(Config{DataDir: dir, Signer: key, Now: clk.Now, Sleep: clk.Sleep, Argon2: testArgon2, Sealer: sealer}, slog.New(slog.DiscardHandler))
	}
	s, err := open(tp)
	if err != nil {
		t.Fatal(err)
	}
	secret := setupAdmin(t, s, clk)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "auth.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secret)) {
		t.Fatal("the TOTP seed is in auth.db in clear")
	}
	s, err = open(tp)
	if err != nil {
		t.Fatal(err)
	}
	if st := login(t, s, clk, "admin", adminPW, secret, "10.0.0.1"); st.Session == nil {
		t.Fatal("no session after restart")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	other, err := tpm.Open(swtpmtest.Start(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if s, err := open(other); err == nil {
		s.Close()
		t.Fatal("auth.db opened with another TPM")
	}
	// Without the TPM, a second factor cannot be checked: login fails closed.
	s, err = open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ls, err := s.Login(context.Background(), "admin", adminPW, "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := TOTPCode(secret, clk.Now())
	if _, err := s.LoginCode(context.Background(), ls.Pending, c, "10.0.0.1"); err == nil {
		t.Fatal("second factor accepted without the TPM")
	}
}
