package tpm_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

func TestSealUnsealSWTPM(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp := open(t, dev)
	secret := bytes.Repeat([]byte{0xa5, 0x5a}, 16)
	blob, err := tp.Seal(secret)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if bytes.Contains(blob, secret) {
		t.Fatal("sealed blob holds the secret in clear")
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	// A new connection (as after a restart) unseals it.
	tp = open(t, dev)
	got, err := tp.Unseal(blob)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %x, %v", got, err)
	}
	for name, bad := range map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("XXXXXXXX"), blob[8:]...),
		"truncated": blob[:len(blob)-3],
		"trailing":  append(append([]byte(nil), blob...), 0),
	} {
		if _, err := tp.Unseal(bad); !errors.Is(err, tpm.ErrSealedBlob) {
			t.Errorf("%s blob: err %v, want ErrSealedBlob", name, err)
		}
	}
	flipped := append([]byte(nil), blob...)
	flipped[len(flipped)-5] ^= 1
	if _, err := tp.Unseal(flipped); err == nil {
		t.Error("tampered private part unsealed")
	}
	if _, err := tp.Seal(make([]byte, tpm.MaxSealSize+1)); err == nil {
		t.Error("oversized Seal accepted")
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoTransient(t, dev)

	// Another TPM (another owner seed) cannot unseal it.
	other := open(t, swtpmtest.Start(t))
	defer other.Close()
	if _, err := other.Unseal(blob); err == nil {
		t.Error("a different TPM unsealed the blob")
	}
}
