package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgenvr/nvr/appliance/authz"
)

// TestAuditVerify writes a real audit log through authz, then checks `nvr audit verify` on it intact and
// after each kind of tampering.
func TestAuditVerify(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := authz.New(authz.Config{DataDir: dir, Signer: key, CheckpointEvery: 8, Argon2: authz.Argon2Params{Time: 1, Memory: 64, Threads: 1}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		s.Decide(authz.Request{Subject: authz.Subject{User: "u" + string(rune('a'+i))}, Action: authz.Live, Camera: "cam1", Source: "10.0.0.9"})
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	pubFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	run1 := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code, err := run(append([]string{"audit", "verify"}, args...), &out, &errb)
		if err != nil {
			t.Logf("err: %v", err)
		}
		return code, out.String()
	}
	if code, out := run1("-data", dir, "-pubkey", pubFile); code != 0 || !strings.Contains(out, "intact: 23 entries") || !strings.Contains(out, "pinned key") {
		t.Fatalf("intact log: %d %s", code, out)
	}
	if code, out := run1("-data", dir); code != 0 || !strings.Contains(out, "not pinned") {
		t.Fatalf("unpinned: %d %s", code, out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	edit := append([]string{}, lines...)
	edit[4] = strings.Replace(edit[4], `"result":"deny"`, `"result":"allow"`, 1)
	del := append(append([]string{}, lines[:10]...), lines[11:]...)
	reorder := append([]string{}, lines...)
	reorder[2], reorder[3] = reorder[3], reorder[2]
	for name, ls := range map[string][]string{"edited": edit, "deleted": del, "reordered": reorder} {
		f := filepath.Join(dir, name+".jsonl")
		if err := os.WriteFile(f, []byte(strings.Join(ls, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out := run1("-file", f, "-pubkey", pubFile); code != 1 || !strings.Contains(out, "PROBLEM:") || !strings.Contains(out, "NOT intact") {
			t.Errorf("%s log: %d %s", name, code, out)
		}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der2, _ := x509.MarshalPKIXPublicKey(other.Public())
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der2}), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := run1("-data", dir, "-pubkey", pubFile); code != 1 || !strings.Contains(out, "signed by another key") {
		t.Errorf("other key: %d %s", code, out)
	}
}
