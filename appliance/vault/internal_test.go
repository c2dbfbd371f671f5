package vault

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixedKey is the vault key of the fuzz seeds, so that mutated seeds reach
// the chunk decoder.
func fixedKey(t testing.TB) *ecdh.PrivateKey {
	t.Helper()
	s := sha256.Sum256([]byte("vault fuzz key"))
	k, err := ecdh.P256().NewPrivateKey(s[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type privUnwrapper struct{ k *ecdh.PrivateKey }

func (p privUnwrapper) ECDH(peer *ecdh.PublicKey) ([]byte, error) { return p.k.ECDH(peer) }

// seedSegments builds small deterministic segments: closed, abandoned,
// header only, and one with a torn tail.
func seedSegments(t testing.TB) map[string][]byte {
	t.Helper()
	k := fixedKey(t)
	dir := t.TempDir()
	rnd := mrand.NewChaCha8([32]byte{1})
	init := []byte("\x00\x00\x00\x10ftypisom\x00\x00\x00\x08moov")
	out := make(map[string][]byte)
	for _, tc := range []struct {
		name   string
		chunks int
		close  bool
	}{{"closed", 3, true}, {"abandoned", 2, false}, {"header-only", 0, false}, {"empty-closed", 0, true}} {
		p := filepath.Join(dir, tc.name+".seg")
		h := Header{Camera: "cam-" + tc.name, Start: time.Unix(1700000000, 5), Codec: "avc1.42e01e", InitHash: sha256.Sum256(init)}
		w, err := Create(p, h, k.PublicKey(), rnd)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < tc.chunks; i++ {
			c := init
			if i > 0 {
				c = fmt.Appendf(nil, "\x00\x00\x00\x10moof%04d\x00\x00\x00\x08mdat", i)
			}
			if _, err := w.Append(c); err != nil {
				t.Fatal(err)
			}
		}
		if tc.close {
			err = w.Close()
		} else {
			err = w.Abandon()
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[tc.name] = b
	}
	out["torn"] = append(bytes.Clone(out["abandoned"]), 0, 0, 0, 40, 0, 1, 2)
	return out
}

func headerBytes(t testing.TB, seg []byte) []byte {
	t.Helper()
	n, err := headerLen(seg)
	if err != nil {
		t.Fatal(err)
	}
	return seg[:n]
}

func FuzzParseHeader(f *testing.F) {
	for _, seg := range seedSegments(f) {
		f.Add(headerBytes(f, seg))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("parse error %v does not wrap ErrFormat", err)
			}
			return
		}
		// The encoding is canonical: what parses re-encodes to itself.
		again, err := marshalHeader(h)
		if err != nil {
			t.Fatalf("re-encode of a parsed header: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, again)
		}
	})
}

func FuzzReader(f *testing.F) {
	for _, seg := range seedSegments(f) {
		f.Add(seg)
	}
	u := privUnwrapper{fixedKey(f)}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "f.seg")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, sc, err := Scan(p)
		if err == nil && (sc.Size != int64(len(b)) || sc.TornBytes < 0 || sc.TornBytes > sc.Size) {
			t.Fatalf("Scan = %+v for %d bytes", sc, len(b))
		}
		r, err := Open(p, u)
		if err != nil {
			return
		}
		defer r.Close()
		var total int
		for i := 0; ; i++ {
			plain, info, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				var ce *ChunkError
				if !errors.As(err, &ce) || ce.Index != uint64(i) {
					t.Fatalf("Next error %v is not a ChunkError for chunk %d", err, i)
				}
				return
			}
			total += len(plain)
			if total > len(b) || info.Offset+info.Size > int64(len(b)) {
				t.Fatalf("read %d plaintext bytes from a %d-byte file", total, len(b))
			}
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpora when
// VAULT_WRITE_CORPUS=1; otherwise it checks that they exist.
func TestWriteFuzzCorpus(t *testing.T) {
	seeds := seedSegments(t)
	for _, target := range []string{"FuzzParseHeader", "FuzzReader"} {
		dir := filepath.Join("testdata", "fuzz", target)
		if os.Getenv("VAULT_WRITE_CORPUS") == "" {
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) == 0 {
				t.Errorf("seed corpus %s missing (regenerate with VAULT_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus): %v", dir, err)
			}
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, seg := range seeds {
			b := seg
			if target == "FuzzParseHeader" {
				b = headerBytes(t, seg)
			}
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestHeaderLimits(t *testing.T) {
	k := fixedKey(t)
	blob, err := wrapDEK(make([]byte, 32), k.PublicKey(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	base := Header{Camera: "c", Start: time.Unix(0, 1), Codec: "hvc1", Keys: []WrappedKey{{Type: KeyECIESP256, Data: blob}}}
	ok := []func(*Header){
		func(h *Header) { h.Camera = strings.Repeat("é", 127) },
		func(h *Header) { h.Codec = strings.Repeat("a", MaxCodecLen) },
		func(h *Header) { h.Keys = append(h.Keys, WrappedKey{Type: KeyAgeRecovery, Data: []byte("age1...")}) },
		func(h *Header) { h.Start = time.Unix(0, -1) },
	}
	bad := []func(*Header){
		func(h *Header) { h.Camera = strings.Repeat("c", MaxCameraLen+1) },
		func(h *Header) { h.Camera = "\xff" },
		func(h *Header) { h.Codec = strings.Repeat("a", MaxCodecLen+1) },
		func(h *Header) { h.Keys = nil },
		func(h *Header) { h.Keys[0].Type = 0 },
		func(h *Header) { h.Keys[0].Data = make([]byte, MaxKeyData+1) },
		func(h *Header) {
			for range MaxKeys {
				h.Keys = append(h.Keys, h.Keys[0])
			}
		},
	}
	for i, mod := range ok {
		h := cloneHeader(base)
		mod(&h)
		b, err := marshalHeader(h)
		if err != nil {
			t.Errorf("ok %d: %v", i, err)
			continue
		}
		got, err := parseHeader(b)
		if err != nil || got.Camera != h.Camera || got.Codec != h.Codec || !got.Start.Equal(h.Start) || len(got.Keys) != len(h.Keys) {
			t.Errorf("ok %d: round trip %+v, %v", i, got, err)
		}
	}
	for i, mod := range bad {
		h := cloneHeader(base)
		mod(&h)
		if _, err := marshalHeader(h); !errors.Is(err, ErrFormat) {
			t.Errorf("bad %d: marshal error %v, want ErrFormat", i, err)
		}
	}
	// The worked example in docs/segment-format.md.
	ex := cloneHeader(base)
	ex.Camera, ex.Codec = "front-door", "avc1.64001f"
	if b, err := marshalHeader(ex); err != nil || len(b) != 273 {
		t.Errorf("example header: %d bytes, %v; the doc says 273", len(b), err)
	}
	good, err := marshalHeader(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{
		nil,
		good[:11],
		append(bytes.Clone(good), 0),
		func() []byte { b := bytes.Clone(good); b[11] = 0xff; b[10] = 0xff; return b }(),
		func() []byte { b := bytes.Clone(good); b[7] = 3; return b }(),
		func() []byte { b := bytes.Clone(good); b[7] = 0; return b }(),
		func() []byte { b := bytes.Clone(good); b[0] = 'X'; return b }(),
	} {
		if _, err := parseHeader(b); !errors.Is(err, ErrFormat) {
			t.Errorf("parseHeader(%x...): %v, want ErrFormat", b[:min(len(b), 12)], err)
		}
	}
}

func TestKeyCacheZeroes(t *testing.T) {
	now := time.Unix(0, 0)
	c := NewKeyCache(time.Second, 2, func() time.Time { return now })
	dek := bytes.Repeat([]byte{7}, 32)
	k1 := cacheKey{id: [16]byte{1}}
	c.put(k1, dek)
	held := c.m[k1].dek
	if got := c.get(k1); !bytes.Equal(got, dek) {
		t.Fatalf("get = %x", got)
	}
	now = now.Add(time.Second)
	c.Sweep()
	if c.Len() != 0 || !bytes.Equal(held, make([]byte, 32)) {
		t.Errorf("expired key not zeroed: %x", held)
	}
	c.put(k1, dek)
	now = now.Add(time.Millisecond) // k1 is now the oldest
	c.put(cacheKey{id: [16]byte{2}}, dek)
	held = c.m[k1].dek
	c.put(cacheKey{id: [16]byte{3}}, dek)
	if c.Len() != 2 || !bytes.Equal(held, make([]byte, 32)) {
		t.Errorf("evicted key not zeroed (len %d): %x", c.Len(), held)
	}
}

var benchSizes = []int{64 << 10, 1 << 20}

func benchAEAD(b *testing.B) ([]byte, [32]byte) {
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		b.Fatal(err)
	}
	return dek, sha256.Sum256([]byte("header"))
}

// BenchmarkSealChunk measures Writer.Append to a file, fdatasync included.
func BenchmarkSealChunk(b *testing.B) {
	k := fixedKey(b)
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			init := []byte("init")
			w, err := Create(filepath.Join(b.TempDir(), "b.seg"), Header{Camera: "b", InitHash: sha256.Sum256(init)}, k.PublicKey(), rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.Append(init); err != nil {
				b.Fatal(err)
			}
			plain := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for b.Loop() {
				if _, err := w.Append(plain); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkSealOnly measures the seal path of a chunk (framing, AAD, nonce,
// AES-256-GCM) without I/O.
func BenchmarkSealOnly(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			dek, hh := benchAEAD(b)
			aead, err := newGCM(dek)
			if err != nil {
				b.Fatal(err)
			}
			plain := make([]byte, size)
			var buf []byte
			var idx uint64
			b.SetBytes(int64(size))
			for b.Loop() {
				buf = sealFrame(aead, FormatVersion, &hh, buf, plain, idx, 0)
				idx++
			}
		})
	}
}

// BenchmarkAESGCMBaseline is plain crypto/cipher AES-256-GCM on the same
// sizes, the floor for BenchmarkSealOnly.
func BenchmarkAESGCMBaseline(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			dek, _ := benchAEAD(b)
			aead, err := newGCM(dek)
			if err != nil {
				b.Fatal(err)
			}
			plain := make([]byte, size)
			dst := make([]byte, 0, size+gcmTag)
			nonce := make([]byte, 12)
			b.SetBytes(int64(size))
			for b.Loop() {
				dst = aead.Seal(dst[:0], nonce, plain, nil)
			}
		})
	}
}
