package vault

import (
	"bytes"
	"crypto/ecdh"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type fixtureKey struct{ k *ecdh.PrivateKey }

func (f fixtureKey) ECDH(peer *ecdh.PublicKey) ([]byte, error) { return f.k.ECDH(peer) }

// readAll opens path and returns every chunk's plaintext, the trailer excluded.
func readAll(t *testing.T, path string, u Unwrapper) (Header, [][]byte) {
	t.Helper()
	r, err := Open(path, u)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out [][]byte
	for {
		plain, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r.Header(), out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(plain))
	}
}

// TestVersion1Segments: a segment written by format version 1 (testdata/v1, made by the code of that
// version, with its key) still reads, and repairing a copy whose trailer was cut off gives it a version 1
// trailer that reads too.
func TestVersion1Segments(t *testing.T) {
	keyHex, err := os.ReadFile("testdata/v1/key.hex")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(keyHex)))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ecdh.P256().NewPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	key := fixtureKey{priv}
	want := [][]byte{[]byte("init segment of a v1 fixture"), []byte("fragment one"), []byte("fragment two")}
	h, got := readAll(t, "testdata/v1/segment.seg", key)
	if h.Version != 1 {
		t.Fatalf("fixture read as version %d", h.Version)
	}
	if len(got) != len(want) {
		t.Fatalf("%d chunks, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("chunk %d: %q", i, got[i])
		}
	}

	b, err := os.ReadFile("testdata/v1/segment.seg")
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.seg")
	if err := os.WriteFile(cut, b[:len(b)-(frameHeader+gcmTag)], 0o600); err != nil { // the trailer cut off
		t.Fatal(err)
	}
	res, err := Repair(cut, key)
	if err != nil {
		t.Fatal(err)
	}
	if res.HadTrailer || res.Chunks != 3 {
		t.Fatalf("repair: %+v", res)
	}
	if fixed, err := os.ReadFile(cut); err != nil || !bytes.Equal(fixed, b) {
		t.Fatalf("the repaired version 1 segment differs from the original (%v): its trailer must be sealed by version 1's rule", err)
	}
}

// TestTrailerNonce: in version 2 a trailer's nonce differs from the nonce of a data chunk at the same
// index (the flags are in it); version 1's are equal, which is why version 2 exists.
func TestTrailerNonce(t *testing.T) {
	for _, idx := range []uint64{0, 1, 7, 1 << 40} {
		if chunkNonce(2, idx, flagFinal) == chunkNonce(2, idx, 0) {
			t.Errorf("version 2, chunk %d: trailer and data share a nonce", idx)
		}
		if chunkNonce(1, idx, flagFinal) != chunkNonce(1, idx, 0) {
			t.Errorf("version 1, chunk %d: nonce changed", idx)
		}
		if chunkNonce(2, idx, 0) != chunkNonce(1, idx, 0) {
			t.Errorf("chunk %d: data chunk nonces must not depend on the version", idx)
		}
	}
}
