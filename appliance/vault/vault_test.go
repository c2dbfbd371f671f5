package vault_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/vault"
)

// softKey is an in-Go Unwrapper: the test stands in for the TPM.
type softKey struct {
	priv  *ecdh.PrivateKey
	calls int
}

func (k *softKey) ECDH(peer *ecdh.PublicKey) ([]byte, error) {
	k.calls++
	return k.priv.ECDH(peer)
}

func newSoftKey(t testing.TB) *softKey {
	t.Helper()
	p, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &softKey{priv: p}
}

var testStart = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func initSegment() []byte {
	return []byte("\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso6\x00\x00\x00\x10moov-init-data!!")
}

func fragment(i, n int) []byte {
	b := fmt.Appendf(nil, "\x00\x00\x00\x20moof fragment %03d ....\x00\x00\x00\x10mdat", i)
	for len(b) < n {
		b = append(b, byte(i), 'x')
	}
	return b
}

type segment struct {
	path   string
	hdr    vault.Header
	chunks [][]byte
	infos  []vault.ChunkInfo
	chain  [32]byte
	bytes  []byte
}

// writeSegment records an init chunk and n fragments of size bytes each.
func writeSegment(t testing.TB, dir string, to *ecdh.PublicKey, n, size int, close bool) segment {
	t.Helper()
	init := initSegment()
	h := vault.Header{Camera: "front-door", Start: testStart, Codec: "avc1.64001f", InitHash: sha256.Sum256(init)}
	path := filepath.Join(dir, "rec", "front-door", "2025-03-14", "seg.seg")
	w, err := vault.Create(path, h, to, rand.Reader)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	s := segment{path: path, hdr: w.Header()}
	for i := 0; i <= n; i++ {
		p := init
		if i > 0 {
			p = fragment(i, size)
		}
		info, err := w.Append(p)
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if info.Index != uint64(i) || info.Plain != len(p) || info.Hash != sha256.Sum256(p) || info.Final {
			t.Fatalf("Append %d: info %+v", i, info)
		}
		s.chunks = append(s.chunks, p)
		s.infos = append(s.infos, info)
	}
	s.chain = w.Chain()
	if w.Chunks() != uint64(n+1) {
		t.Fatalf("Chunks = %d, want %d", w.Chunks(), n+1)
	}
	if close {
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	} else if err := w.Abandon(); err != nil {
		t.Fatalf("Abandon: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s.bytes = b
	return s
}

// readAll reads a segment to the end and returns its chunks and chain.
func readAll(path string, u vault.Unwrapper) ([][]byte, [32]byte, error) {
	r, err := vault.Open(path, u)
	if err != nil {
		return nil, [32]byte{}, err
	}
	defer r.Close()
	var out [][]byte
	for {
		p, _, err := r.Next()
		if err == io.EOF {
			return out, r.Chain(), nil
		}
		if err != nil {
			return out, r.Chain(), err
		}
		out = append(out, p)
	}
}

func chainOf(chunks [][]byte) [32]byte {
	var c [32]byte
	for i, p := range chunks {
		h := sha256.Sum256(p)
		if i == 0 {
			c = sha256.Sum256(h[:])
		} else {
			c = sha256.Sum256(append(c[:], h[:]...))
		}
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	k := newSoftKey(t)
	s := writeSegment(t, t.TempDir(), k.priv.PublicKey(), 5, 4096, true)
	if s.hdr.SegmentID == ([16]byte{}) {
		t.Error("SegmentID not filled")
	}
	if len(s.hdr.Keys) != 1 || s.hdr.Keys[0].Type != vault.KeyECIESP256 {
		t.Errorf("Keys = %+v", s.hdr.Keys)
	}
	if s.chain != chainOf(s.chunks) {
		t.Error("writer chain differs from the definition")
	}
	r, err := vault.Open(s.path, k)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	h := r.Header()
	if h.Camera != "front-door" || h.Codec != "avc1.64001f" || !h.Start.Equal(testStart) ||
		h.SegmentID != s.hdr.SegmentID || h.InitHash != sha256.Sum256(initSegment()) {
		t.Errorf("header = %+v", h)
	}
	for i := 0; ; i++ {
		p, info, err := r.Next()
		if err == io.EOF {
			if i != len(s.chunks) {
				t.Fatalf("EOF after %d chunks, want %d", i, len(s.chunks))
			}
			break
		}
		if err != nil {
			t.Fatalf("Next %d: %v", i, err)
		}
		if !bytes.Equal(p, s.chunks[i]) {
			t.Fatalf("chunk %d differs", i)
		}
		if info != s.infos[i] {
			t.Fatalf("chunk %d info %+v, writer said %+v", i, info, s.infos[i])
		}
	}
	if r.Chain() != s.chain {
		t.Error("reader chain differs from writer chain")
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after EOF: %v", err)
	}
	if k.calls != 1 {
		t.Errorf("%d ECDH calls, want 1", k.calls)
	}
}

func TestCiphertextHidesBoxes(t *testing.T) {
	k := newSoftKey(t)
	s := writeSegment(t, t.TempDir(), k.priv.PublicKey(), 8, 2048, true)
	for _, tag := range []string{"ftyp", "moov", "moof", "mdat", "fragment"} {
		if bytes.Contains(s.bytes, []byte(tag)) {
			t.Errorf("segment file contains plaintext %q", tag)
		}
	}
}

func TestCreate(t *testing.T) {
	k := newSoftKey(t)
	dir := t.TempDir()
	s := writeSegment(t, dir, k.priv.PublicKey(), 1, 10, true)
	for _, d := range []string{"rec", "rec/front-door", "rec/front-door/2025-03-14"} {
		st, err := os.Stat(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %v, want 0700", d, st.Mode().Perm())
		}
	}
	st, err := os.Stat(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", st.Mode().Perm())
	}
	h := vault.Header{Camera: "c", Start: testStart, InitHash: sha256.Sum256(initSegment())}
	if _, err := vault.Create(s.path, h, k.priv.PublicKey(), rand.Reader); !errors.Is(err, os.ErrExist) {
		t.Errorf("Create over an existing file: %v, want ErrExist", err)
	}
	bad := []vault.Header{
		{Camera: "", Start: testStart},
		{Camera: strings.Repeat("c", 256), Start: testStart},
		{Camera: "c", Codec: "avc1\n"},
		{Camera: "c", Keys: []vault.WrappedKey{{Type: 1, Data: []byte{1}}}},
	}
	for i, h := range bad {
		p := filepath.Join(dir, fmt.Sprintf("bad%d.seg", i))
		if w, err := vault.Create(p, h, k.priv.PublicKey(), rand.Reader); err == nil {
			_ = w.Abandon()
			t.Errorf("Create(%+v) succeeded", h)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failed Create left %s behind", p)
		}
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Create(filepath.Join(dir, "x.seg"), h, x.PublicKey(), rand.Reader); err == nil {
		t.Error("Create accepted an X25519 vault key")
	}
}

func TestAppendInitMismatch(t *testing.T) {
	k := newSoftKey(t)
	h := vault.Header{Camera: "cam", Start: testStart, InitHash: sha256.Sum256([]byte("other"))}
	w, err := vault.Create(filepath.Join(t.TempDir(), "s.seg"), h, k.priv.PublicKey(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(initSegment()); err == nil {
		t.Error("Append accepted a chunk 0 that does not match InitHash")
	}
	if _, err := w.Append([]byte("other")); err != nil {
		t.Errorf("Append of the matching init: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWrongKey(t *testing.T) {
	k := newSoftKey(t)
	s := writeSegment(t, t.TempDir(), k.priv.PublicKey(), 1, 10, true)
	if _, err := vault.Open(s.path, newSoftKey(t)); !errors.Is(err, vault.ErrAuth) {
		t.Errorf("Open with another key: %v, want ErrAuth", err)
	}
	if _, err := vault.Repair(s.path, newSoftKey(t)); !errors.Is(err, vault.ErrAuth) {
		t.Errorf("Repair with another key: %v, want ErrAuth", err)
	}
	after, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, s.bytes) {
		t.Error("Repair with the wrong key changed the file")
	}
}

// TestFlipEveryByte flips each byte of a small segment in turn: Open or a
// later Next must fail, never read through to a clean EOF.
func TestFlipEveryByte(t *testing.T) {
	k := newSoftKey(t)
	dir := t.TempDir()
	s := writeSegment(t, dir, k.priv.PublicKey(), 2, 24, true)
	p := filepath.Join(dir, "flipped.seg")
	for i := range s.bytes {
		for _, mask := range []byte{0x01, 0x80} {
			b := bytes.Clone(s.bytes)
			b[i] ^= mask
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := readAll(p, k); err == nil {
				t.Fatalf("flip of byte %d (mask %#x) of %d went undetected", i, mask, len(b))
			}
		}
	}
}

// TestTruncateEveryOffset cuts a segment at every length: reading must fail,
// and Repair must keep exactly the chunks wholly before the cut.
func TestTruncateEveryOffset(t *testing.T) {
	k := newSoftKey(t)
	dir := t.TempDir()
	s := writeSegment(t, dir, k.priv.PublicKey(), 3, 20, true)
	hdrLen := s.infos[0].Offset
	p := filepath.Join(dir, "cut.seg")
	for cut := 0; cut < len(s.bytes); cut++ {
		if err := os.WriteFile(p, s.bytes[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := readAll(p, k)
		switch {
		case int64(cut) < hdrLen:
			if !errors.Is(err, vault.ErrFormat) {
				t.Fatalf("cut %d in header: read error %v, want ErrFormat", cut, err)
			}
		case !errors.Is(err, vault.ErrTruncated):
			t.Fatalf("cut %d: read error %v, want ErrTruncated", cut, err)
		}
		res, err := vault.Repair(p, k)
		if int64(cut) < hdrLen {
			if !errors.Is(err, vault.ErrFormat) {
				t.Fatalf("cut %d: Repair error %v, want ErrFormat", cut, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("cut %d: Repair: %v", cut, err)
		}
		var want uint64
		for _, in := range s.infos {
			if in.Offset+in.Size <= int64(cut) {
				want++
			}
		}
		kept := s.infos[:want]
		wantEnd := hdrLen
		if want > 0 {
			wantEnd = kept[want-1].Offset + kept[want-1].Size
		}
		if res.Chunks != want || res.HadTrailer || res.TruncatedBytes != int64(cut)-wantEnd || res.Chain != chainOf(s.chunks[:want]) {
			t.Fatalf("cut %d: Repair = %+v, want %d chunks, %d bytes cut", cut, res, want, int64(cut)-wantEnd)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != res.End {
			t.Fatalf("cut %d: size %d, End %d", cut, st.Size(), res.End)
		}
		got, chain, err := readAll(p, k)
		if err != nil {
			t.Fatalf("cut %d: read after Repair: %v", cut, err)
		}
		if uint64(len(got)) != want || chain != res.Chain {
			t.Fatalf("cut %d: read %d chunks after Repair, want %d", cut, len(got), want)
		}
		again, err := vault.Repair(p, k)
		if err != nil || !again.HadTrailer || again.TruncatedBytes != 0 || again.Chunks != want || again.End != res.End {
			t.Fatalf("cut %d: second Repair = %+v, %v", cut, again, err)
		}
	}
}

// frames splits a segment file into header and chunk frames.
func frames(s segment) (hdr []byte, fr [][]byte) {
	hdr = s.bytes[:s.infos[0].Offset]
	for off := s.infos[0].Offset; off < int64(len(s.bytes)); {
		n := int64(s.bytes[off])<<24 | int64(s.bytes[off+1])<<16 | int64(s.bytes[off+2])<<8 | int64(s.bytes[off+3])
		fr = append(fr, s.bytes[off:off+5+n])
		off += 5 + n
	}
	return hdr, fr
}

func TestTamper(t *testing.T) {
	k := newSoftKey(t)
	dir := t.TempDir()
	s := writeSegment(t, filepath.Join(dir, "a"), k.priv.PublicKey(), 3, 30, true)
	other := writeSegment(t, filepath.Join(dir, "b"), k.priv.PublicKey(), 3, 30, true)
	hdr, fr := frames(s)
	_, ofr := frames(other)
	if len(fr) != 5 {
		t.Fatalf("%d frames, want 5", len(fr))
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(append([][]byte{hdr}, parts...), nil) }
	setFinal := func(f []byte) []byte { f = bytes.Clone(f); f[4] |= 1; return f }
	tests := []struct {
		name  string
		file  []byte
		index uint64
		want  error
	}{
		{"swap 1 and 2", join(fr[0], fr[2], fr[1], fr[3], fr[4]), 1, vault.ErrAuth},
		{"drop 1", join(fr[0], fr[2], fr[3], fr[4]), 1, vault.ErrAuth},
		{"duplicate 1", join(fr[0], fr[1], fr[1], fr[2], fr[3], fr[4]), 2, vault.ErrAuth},
		{"drop trailer", join(fr[0], fr[1], fr[2], fr[3]), 4, vault.ErrTruncated},
		{"drop last media", join(fr[0], fr[1], fr[2], fr[4]), 3, vault.ErrAuth},
		{"final flag on media", join(fr[0], setFinal(fr[1])), 1, vault.ErrAuth},
		{"chunk from other segment", join(fr[0], ofr[1], fr[2], fr[3], fr[4]), 1, vault.ErrAuth},
		{"data after trailer", join(fr[0], fr[1], fr[2], fr[3], fr[4], fr[1]), 4, vault.ErrFormat},
		{"reserved flag", join(fr[0], func() []byte { f := bytes.Clone(fr[1]); f[4] |= 2; return f }()), 1, vault.ErrFormat},
	}
	p := filepath.Join(dir, "t.seg")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(p, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := readAll(p, k)
			var ce *vault.ChunkError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v, want *ChunkError", err)
			}
			if ce.Index != tc.index || ce.Path != p || !errors.Is(err, tc.want) {
				t.Fatalf("error %v (index %d), want index %d wrapping %v", err, ce.Index, tc.index, tc.want)
			}
		})
	}
	// The message names the segment and the chunk.
	if err := os.WriteFile(p, join(fr[0], fr[2]), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := readAll(p, k)
	if want := fmt.Sprintf("segment %s chunk 1: authentication failed", p); err == nil || err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	// A header from another segment (its own wrapped key) over this one's
	// chunks fails on chunk 0.
	ohdr, _ := frames(other)
	if err := os.WriteFile(p, bytes.Join([][]byte{ohdr, fr[0], fr[1]}, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readAll(p, k); !errors.Is(err, vault.ErrAuth) {
		t.Errorf("foreign header: %v, want ErrAuth", err)
	}
}

func TestAbandonScanRepair(t *testing.T) {
	k := newSoftKey(t)
	s := writeSegment(t, t.TempDir(), k.priv.PublicKey(), 4, 100, false)
	h, sc, err := vault.Scan(s.path)
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if h.SegmentID != s.hdr.SegmentID || sc.Chunks != 5 || sc.Final || sc.TornBytes != 0 || sc.Size != int64(len(s.bytes)) {
		t.Errorf("Scan = %+v", sc)
	}
	if _, _, err := readAll(s.path, k); !errors.Is(err, vault.ErrTruncated) {
		t.Errorf("read of abandoned segment: %v, want ErrTruncated", err)
	}
	// A torn partial frame after the last chunk, as a crash mid-write leaves.
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0, 0, 1, 0, 0, 9, 9, 9}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, sc, err = vault.Scan(s.path); err != nil || sc.TornBytes != 8 || sc.Chunks != 5 {
		t.Errorf("Scan torn = %+v, %v", sc, err)
	}
	res, err := vault.Repair(s.path, k)
	if err != nil {
		t.Fatalf("Repair: %v", err)
	}
	if res.Chunks != 5 || res.TruncatedBytes != 8 || res.HadTrailer || res.Chain != s.chain {
		t.Errorf("Repair = %+v", res)
	}
	if _, sc, err = vault.Scan(s.path); err != nil || !sc.Final || sc.Chunks != 5 || sc.TornBytes != 0 || sc.Size != res.End {
		t.Errorf("Scan after Repair = %+v, %v", sc, err)
	}
	got, chain, err := readAll(s.path, k)
	if err != nil || len(got) != 5 || chain != s.chain {
		t.Errorf("read after Repair: %d chunks, %v", len(got), err)
	}
}

func TestRepairTornHeader(t *testing.T) {
	k := newSoftKey(t)
	dir := t.TempDir()
	h := vault.Header{Camera: "cam", Start: testStart, InitHash: sha256.Sum256(initSegment())}
	p := filepath.Join(dir, "s.seg")
	w, err := vault.Create(p, h, k.priv.PublicKey(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Abandon(); err != nil {
		t.Fatal(err)
	}
	// Header only, no chunks: repairable into an empty closed segment.
	res, err := vault.Repair(p, k)
	if err != nil || res.Chunks != 0 || res.HadTrailer {
		t.Fatalf("Repair of header-only segment = %+v, %v", res, err)
	}
	if err := os.Truncate(p, 20); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.Repair(p, k); !errors.Is(err, vault.ErrFormat) {
		t.Errorf("Repair of torn header: %v, want ErrFormat", err)
	}
	if _, _, err := vault.Scan(p); !errors.Is(err, vault.ErrFormat) {
		t.Errorf("Scan of torn header: %v, want ErrFormat", err)
	}
}

func TestKeyCache(t *testing.T) {
	k := newSoftKey(t)
	dir := t.TempDir()
	a := writeSegment(t, filepath.Join(dir, "a"), k.priv.PublicKey(), 1, 10, true)
	b := writeSegment(t, filepath.Join(dir, "b"), k.priv.PublicKey(), 1, 10, true)
	now := testStart
	c := vault.NewKeyCache(time.Minute, 1, func() time.Time { return now })
	k.calls = 0
	open := func(path string) {
		t.Helper()
		r, err := vault.OpenCached(path, k, c)
		if err != nil {
			t.Fatalf("OpenCached: %v", err)
		}
		if _, _, err := r.Next(); err != nil {
			t.Fatalf("Next: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	open(a.path)
	open(a.path)
	if k.calls != 1 {
		t.Errorf("%d unwraps for two opens within the TTL, want 1", k.calls)
	}
	now = now.Add(time.Minute)
	open(a.path)
	if k.calls != 2 {
		t.Errorf("%d unwraps after expiry, want 2", k.calls)
	}
	open(b.path) // evicts a: the cache holds one key
	open(a.path)
	if k.calls != 4 || c.Len() != 1 {
		t.Errorf("%d unwraps, %d cached; want 4 and 1", k.calls, c.Len())
	}
	c.Purge()
	if c.Len() != 0 {
		t.Errorf("Len after Purge = %d", c.Len())
	}
	// A wrong key is not cached.
	if _, err := vault.OpenCached(a.path, newSoftKey(t), c); !errors.Is(err, vault.ErrAuth) {
		t.Errorf("OpenCached with the wrong key: %v", err)
	}
	if c.Len() != 0 {
		t.Error("failed unwrap was cached")
	}
}
