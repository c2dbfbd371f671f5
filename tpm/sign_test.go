package tpm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

func TestLogKeySignsAndIsStable(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp := open(t, dev)
	k, err := tp.LogKey()
	if err != nil {
		t.Fatalf("LogKey: %v", err)
	}
	d := sha256.Sum256([]byte("checkpoint"))
	sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	pub := k.Public().(*ecdsa.PublicKey)
	if !ecdsa.VerifyASN1(pub, d[:], sig) {
		t.Fatal("log key signature does not verify")
	}
	if err := k.Close(); err != nil {
		t.Fatalf("Close key: %v", err)
	}
	k2, err := tp.LogKey()
	if err != nil {
		t.Fatalf("LogKey again: %v", err)
	}
	if !k2.Public().(*ecdsa.PublicKey).Equal(pub) {
		t.Error("log key changed between loads")
	}
	if err := k2.Close(); err != nil {
		t.Fatalf("Close key: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkNoTransient(t, dev)
}

func TestExportKeyPersistsAndSignsPSS(t *testing.T) {
	state := t.TempDir()
	p, err := swtpmtest.StartProcess(state, t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	tp := open(t, p.Device())
	k, err := tp.ExportKey()
	if err != nil {
		t.Fatalf("ExportKey: %v", err)
	}
	pub := k.Public().(*rsa.PublicKey)
	if pub.N.BitLen() != 2048 {
		t.Fatalf("modulus of %d bits", pub.N.BitLen())
	}
	d := sha256.Sum256([]byte("manifest"))
	sig, err := k.Sign(rand.Reader, d[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := rsa.VerifyPSS(pub, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err != nil {
		t.Errorf("PSS with salt = hash length: %v", err)
	}
	if _, err := k.Sign(rand.Reader, d[:], crypto.SHA256); err == nil {
		t.Error("export key signed PKCS #1 v1.5")
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	// A restarted TPM on the same state has the same key, read back from its persistent handle.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	p2, err := swtpmtest.StartProcess(state, t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2.Stop() })
	tp2 := open(t, p2.Device())
	defer tp2.Close()
	k2, err := tp2.ExportKey()
	if err != nil {
		t.Fatalf("ExportKey after restart: %v", err)
	}
	defer k2.Close()
	if !k2.Public().(*rsa.PublicKey).Equal(pub) {
		t.Error("export key changed across a TPM restart")
	}
}

// BenchmarkLogKeySign measures one checkpoint signature by the TPM (swtpm here): the evidence log makes
// 720 of them per hour whatever the number of cameras.
func BenchmarkLogKeySign(b *testing.B) {
	dev := swtpmtest.Start(b)
	tp, err := tpm.Open(dev, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	k, err := tp.LogKey()
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	d := sha256.Sum256([]byte("checkpoint"))
	for b.Loop() {
		if _, err := k.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
