package vault_test

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/edgenvr/nvr/appliance/vault"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

// TestTPMUnwrap writes a segment to the TPM's vault public key and reads it
// back with the TPM doing the ECDH, across a restart of the TPM connection.
func TestTPMUnwrap(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp, err := tpm.Open(dev, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tp.VaultKey()
	if err != nil {
		t.Fatal(err)
	}
	s := writeSegment(t, t.TempDir(), pub, 3, 1000, false)
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	tp, err = tpm.Open(dev, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tp.Close(); err != nil {
			t.Errorf("tpm Close: %v", err)
		}
	}()
	res, err := vault.Repair(s.path, tp)
	if err != nil || res.Chunks != 4 || res.Chain != s.chain {
		t.Fatalf("Repair via TPM = %+v, %v", res, err)
	}
	got, chain, err := readAll(s.path, tp)
	if err != nil || len(got) != 4 || chain != s.chain {
		t.Fatalf("read via TPM: %d chunks, %v", len(got), err)
	}
	// A segment for a software key does not open with the TPM.
	other := writeSegment(t, t.TempDir(), newSoftKey(t).priv.PublicKey(), 1, 10, true)
	if _, err := vault.Open(other.path, tp); !errors.Is(err, vault.ErrAuth) {
		t.Errorf("Open of a foreign segment via TPM: %v, want ErrAuth", err)
	}
}
