package tpm_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

func open(t *testing.T, dev string) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(dev, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open(%s): %v", dev, err)
	}
	return tp
}

// checkNoTransient fails the test if any transient handle is loaded, seen
// through a fresh connection.
func checkNoTransient(t *testing.T, dev string) {
	t.Helper()
	tp := open(t, dev)
	defer func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	hs, err := tp.TransientHandles()
	if err != nil {
		t.Fatalf("TransientHandles: %v", err)
	}
	if len(hs) != 0 {
		t.Errorf("transient handles leaked: %x", hs)
	}
}

func TestVaultKeyStableAcrossOpens(t *testing.T) {
	dev := swtpmtest.Start(t)
	a := open(t, dev)
	ka, err := a.VaultKey()
	if err != nil {
		t.Fatalf("VaultKey: %v", err)
	}
	ka2, err := a.VaultKey()
	if err != nil {
		t.Fatalf("VaultKey again: %v", err)
	}
	if !ka.Equal(ka2) {
		t.Error("VaultKey differs between calls")
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b := open(t, dev)
	kb, err := b.VaultKey()
	if err != nil {
		t.Fatalf("VaultKey second open: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !ka.Equal(kb) {
		t.Errorf("vault key changed across opens:\n%x\n%x", ka.Bytes(), kb.Bytes())
	}
	if ka.Curve() != ecdh.P256() {
		t.Errorf("curve = %v, want P-256", ka.Curve())
	}
	checkNoTransient(t, dev)
}

func TestVaultKeyStableAcrossRestart(t *testing.T) {
	state := t.TempDir()
	var keys [][]byte
	for i := range 2 {
		// Each iteration starts swtpm on the same state; the sub-test's
		// cleanup stops it before the next one starts.
		t.Run("", func(t *testing.T) {
			tp := open(t, swtpmtest.StartDir(t, state))
			k, err := tp.VaultKey()
			if err != nil {
				t.Fatalf("VaultKey (start %d): %v", i, err)
			}
			keys = append(keys, k.Bytes())
			if err := tp.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
	if len(keys) != 2 || !bytes.Equal(keys[0], keys[1]) {
		t.Fatalf("vault key not stable across swtpm restarts: %x", keys)
	}
}

func TestECDHMatchesGo(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp := open(t, dev)
	defer func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkNoTransient(t, dev)
	}()
	pub, err := tp.VaultKey()
	if err != nil {
		t.Fatalf("VaultKey: %v", err)
	}
	for range 8 {
		eph, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		want, err := eph.ECDH(pub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tp.ECDH(eph.PublicKey())
		if err != nil {
			t.Fatalf("ECDH: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("TPM ECDH = %x, Go = %x", got, want)
		}
	}
	hs, err := tp.TransientHandles()
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 0 {
		t.Errorf("while open: %d transient handles (%x), want none: the vault key is persistent", len(hs), hs)
	}
}

func TestECDHConcurrent(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp := open(t, dev)
	defer func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkNoTransient(t, dev)
	}()
	pub, err := tp.VaultKey()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 4 {
		wg.Go(func() {
			for range 4 {
				eph, err := ecdh.P256().GenerateKey(rand.Reader)
				if err != nil {
					errs <- err
					return
				}
				want, _ := eph.ECDH(pub)
				got, err := tp.ECDH(eph.PublicKey())
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, want) {
					errs <- errors.New("mismatch")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestECDHRejectsOtherCurve(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp := open(t, dev)
	defer func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.ECDH(k.PublicKey()); err == nil {
		t.Fatal("ECDH accepted an X25519 key")
	}
}

func TestClosed(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp := open(t, dev)
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.VaultKey(); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("VaultKey after Close: %v, want ErrClosed", err)
	}
	if err := tp.Close(); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, dev := range []string{"", "swtpm:", "swtpm:unix:", "swtpm:unix:/nonexistent/sock", t.TempDir()} {
		if tp, err := tpm.Open(dev, nil); err == nil {
			_ = tp.Close()
			t.Errorf("Open(%q) succeeded", dev)
		}
	}
}
