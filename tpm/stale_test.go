package tpm

import (
	"testing"

	"github.com/edgenvr/nvr/internal/swtpmtest"
)

// TestOpenFlushesWhatACrashLeft: a process that dies with the vault key loaded leaves it in swtpm (no
// resource manager). The next Open must clear it, or a crash-looping daemon exhausts the TPM's object slots.
func TestOpenFlushesWhatACrashLeft(t *testing.T) {
	dev := swtpmtest.Start(t)
	for i := 0; i < 5; i++ {
		crashed, err := Open(dev, nil)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if _, err := crashed.VaultKey(); err != nil {
			t.Fatalf("vault key %d: %v", i, err)
		}
		crashed.tr.Close() // the process dies: no flush
	}
	next, err := Open(dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	hs, err := next.TransientHandles()
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 0 {
		t.Fatalf("%d transient handles still loaded after Open: %x", len(hs), hs)
	}
	if _, err := next.VaultKey(); err != nil {
		t.Fatal(err)
	}
}

// TestKeysLeaveRoomForSealing: with the vault and log keys in use, the TPM still has the transient slots
// that sealing needs (swtpm has three). Before the keys were persistent, Seal failed with
// TPM_RC_OBJECT_MEMORY once the appliance had loaded its keys.
func TestKeysLeaveRoomForSealing(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp, err := Open(dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.VaultKey(); err != nil {
		t.Fatal(err)
	}
	lk, err := tp.LogKey()
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	ek, err := tp.ExportKey()
	if err != nil {
		t.Fatal(err)
	}
	defer ek.Close()
	blob, err := tp.Seal([]byte("camera credentials key"))
	if err != nil {
		t.Fatalf("seal with the keys in use: %v", err)
	}
	if _, err := tp.Unseal(blob); err != nil {
		t.Fatalf("unseal with the keys in use: %v", err)
	}
}
