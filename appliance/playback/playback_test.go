package playback

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

// A real SPS and PPS from libx264 (baseline, 320x240), so that init segments carry real parameters.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80}
	testPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
	params  = &ingest.Params{Codec: ingest.CodecH264, SPS: testSPS, PPS: testPPS}
)

// fixture is a data directory recorded by the real recorder, read back through swtpm.
type fixture struct {
	dir string
	db  *store.DB
	tpm *tpm.TPM
}

var (
	tpmOnce sync.Once
	tpmDev  string
)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "index.db"), store.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Verify(); err != nil {
			t.Errorf("index integrity: %v", err)
		}
		db.Close()
	})
	dev, err := tpm.Open(swtpmtest.Start(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return &fixture{dir: dir, db: db, tpm: dev}
}

// record feeds the real recorder n pictures at 25 fps, a key frame every 25 (1 s fragments), from wall0
// on, in 5 s segments, and closes it.
func (f *fixture) record(t testing.TB, camera string, session uint64, wall0 time.Time, n int) {
	t.Helper()
	vk, err := f.tpm.VaultKey()
	if err != nil {
		t.Fatal(err)
	}
	r, err := record.New(record.Config{Camera: camera, DataDir: f.dir, SegmentDuration: 5 * time.Second, FragmentDuration: time.Second,
		VaultKey: vk, Index: f.db}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		dts := int64(i) * 3600
		nal := []byte{0x41, 0x9a, byte(i), byte(i >> 8)}
		if i%25 == 0 {
			nal = []byte{0x65, 0x88, byte(i), byte(i >> 8)}
		}
		r.Unit(&ingest.Unit{Session: session, Params: params, DTS: dts, PTS: dts,
			Wall:  wall0.Add(time.Duration(dts) * time.Second / record.TimeScale),
			NALUs: [][]byte{nal}, AVCC: append([]byte{0, 0, 0, byte(len(nal))}, nal...), RandomAccess: i%25 == 0})
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) source(t testing.TB, now func() time.Time) *Source {
	t.Helper()
	s, err := New(Config{DataDir: f.dir, Index: f.db, Keys: f.tpm, Now: now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2026, 3, 14, 9, 26, 0, 0, time.UTC)

func collect(t *testing.T, s *Source, req Request) ([]Fragment, Result, error) {
	t.Helper()
	var out []Fragment
	res, err := s.Stream(context.Background(), req, func(f Fragment) error {
		out = append(out, f)
		return nil
	})
	return out, res, err
}

func sec(ticks int64) time.Time { return record.TimeOf(ticks) }

// TestTimelineAndStream records 15 s, a 10 s hole, then 10 s more, and reads it back: the timeline, seeks
// into the middle, into the hole, past the end, bounded streams, and the continuation point.
func TestTimelineAndStream(t *testing.T) {
	f := newFixture(t)
	f.record(t, "cam1", 1, t0, 15*25+1)
	f.record(t, "cam1", 2, t0.Add(25*time.Second), 10*25+1)
	s := f.source(t, func() time.Time { return t0.Add(time.Hour) })

	tl, err := s.Timeline("cam1", t0.Add(-time.Minute), t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(tl.Recorded) != 2 || len(tl.Gaps) != 3 || tl.Open {
		t.Fatalf("timeline: %+v", tl)
	}
	if !tl.Recorded[0].Start.Equal(t0) || tl.Recorded[0].End.Sub(t0) < 14*time.Second || !tl.Recorded[1].Start.Equal(t0.Add(25*time.Second)) {
		t.Errorf("recorded spans: %+v", tl.Recorded)
	}
	if g := tl.Gaps[1]; g.End.Sub(g.Start) < 9*time.Second || g.End.Sub(g.Start) > 11*time.Second {
		t.Errorf("the hole: %+v", g)
	}

	// A seek into the middle starts with the init segment and the key fragment that holds the instant.
	at := t0.Add(7*time.Second + 400*time.Millisecond)
	frags, res, err := collect(t, s, Request{Camera: "cam1", At: at})
	if err != nil {
		t.Fatal(err)
	}
	if frags[0].Kind != KindInit || !bytes.Contains(frags[0].Data, []byte("avcC")) {
		t.Fatalf("first frame is kind %d", frags[0].Kind)
	}
	m := frags[1]
	if m.Kind != KindMedia || !m.Key || sec(m.Start).After(at) || !sec(m.End).After(at) {
		t.Fatalf("first fragment %s–%s (key %v) does not hold %s", sec(m.Start), sec(m.End), m.Key, at)
	}
	var prev int64
	media := 0
	for _, fr := range frags[1:] {
		if fr.Kind == KindInit {
			continue
		}
		if fr.Start < prev {
			t.Fatalf("fragments out of order at %s", sec(fr.Start))
		}
		prev = fr.End
		media++
	}
	if res.Fragments != media || sec(prev).Sub(t0) < 34*time.Second || !res.Next.Equal(sec(prev)) {
		t.Errorf("stream: %d fragments, ends %s, next %s", res.Fragments, sec(prev), res.Next)
	}

	// Into the hole: the first recorded picture after it.
	frags, _, err = collect(t, s, Request{Camera: "cam1", At: t0.Add(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if got := sec(frags[1].Start); !got.Equal(t0.Add(25 * time.Second)) {
		t.Errorf("seek into the hole starts at %s", got)
	}

	// Bounded: until 3 s later.
	frags, _, err = collect(t, s, Request{Camera: "cam1", At: t0.Add(2 * time.Second), Until: t0.Add(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range frags {
		if fr.Kind == KindMedia && !sec(fr.Start).Before(t0.Add(5*time.Second)) {
			t.Errorf("fragment at %s after the end of the range", sec(fr.Start))
		}
	}

	// Past the end, and another camera: nothing recorded.
	if _, _, err := collect(t, s, Request{Camera: "cam1", At: t0.Add(time.Minute)}); !errors.Is(err, ErrNothingRecorded) {
		t.Errorf("past the end: %v", err)
	}
	if _, _, err := collect(t, s, Request{Camera: "cam2", At: t0}); !errors.Is(err, ErrNothingRecorded) {
		t.Errorf("another camera: %v", err)
	}

	// The keys stay in memory for a short time only, and all go when the source stops.
	if s.CachedKeys() == 0 {
		t.Error("no key cached after playback")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.CachedKeys(); n != 0 {
		t.Errorf("%d keys cached after Run ended", n)
	}
}

// TestStreamRefusesBadFiles: a segment file moved in place of another, and a tampered chunk.
func TestStreamRefusesBadFiles(t *testing.T) {
	f := newFixture(t)
	f.record(t, "cam1", 1, t0, 12*25+1)
	segs, err := f.db.Segments("cam1", t0, t0.Add(time.Minute))
	if err != nil || len(segs) < 2 {
		t.Fatalf("%d segments, %v", len(segs), err)
	}
	s := f.source(t, nil)
	a, b := filepath.Join(f.dir, segs[0].Path), filepath.Join(f.dir, segs[1].Path)
	orig, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := collect(t, s, Request{Camera: "cam1", At: t0}); !errors.Is(err, ErrForeignFile) {
		t.Errorf("a foreign file: %v", err)
	}
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 0x40
	if err := os.WriteFile(a, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	frags, _, err := collect(t, s, Request{Camera: "cam1", At: t0})
	var ce *vault.ChunkError
	if !errors.Is(err, vault.ErrAuth) || !errors.As(err, &ce) {
		t.Errorf("a tampered chunk: %v", err)
	}
	for _, fr := range frags {
		if fr.Kind == KindMedia && ce != nil && fr.End > 0 && len(fr.Data) == 0 {
			t.Error("an empty fragment was served")
		}
	}
}

// TestFrameRoundTrip writes frames and reads them back, and refuses torn and malformed ones.
func TestFrameRoundTrip(t *testing.T) {
	in := []Fragment{{Kind: KindInit, Data: []byte("ftypmoov")}, {Kind: KindMedia, Data: []byte("moofmdat"), Start: 1 << 40, End: 1<<40 + 90000, Key: true},
		{Kind: KindEnd, Start: 7, Data: []byte("continue")}}
	var buf bytes.Buffer
	for _, f := range in {
		if err := WriteFrame(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	raw := bytes.Clone(buf.Bytes())
	for i, want := range in {
		got, err := ReadFrame(&buf)
		if err != nil || got.Kind != want.Kind || got.Key != want.Key || got.Start != want.Start || got.End != want.End || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("frame %d: %+v, %v", i, got, err)
		}
	}
	if _, err := ReadFrame(&buf); err != io.EOF {
		t.Errorf("after the last frame: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader(raw[:30])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("torn frame: %v", err)
	}
	for _, c := range frameSeeds() {
		if c.ok {
			continue
		}
		if _, err := ReadFrame(bytes.NewReader(c.b)); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	if _, err := AppendFrame(nil, Fragment{Kind: 9}); !errors.Is(err, ErrFrame) {
		t.Errorf("kind 9 written: %v", err)
	}
}

type frameSeed struct {
	name string
	b    []byte
	ok   bool
}

func frame(kind, flags byte, n uint32, start, end int64, payload []byte) []byte {
	h := make([]byte, FrameHeader)
	h[0], h[1] = kind, flags
	h[4], h[5], h[6], h[7] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	for i := range 8 {
		h[8+i] = byte(uint64(start) >> (56 - 8*i))
		h[16+i] = byte(uint64(end) >> (56 - 8*i))
	}
	return append(h, payload...)
}

// frameSeeds feeds both TestFrameRoundTrip and the fuzz corpus.
func frameSeeds() []frameSeed {
	return []frameSeed{
		{"init", frame(1, 0, 4, 0, 0, []byte("ftyp")), true},
		{"media", frame(2, 1, 4, 90000, 180000, []byte("moof")), true},
		{"end", frame(3, 0, 8, 5, 0, []byte("continue")), true},
		{"kind zero", frame(0, 0, 0, 0, 0, nil), false},
		{"kind four", frame(4, 0, 0, 0, 0, nil), false},
		{"reserved flag", frame(2, 2, 0, 0, 0, nil), false},
		{"huge", frame(2, 0, MaxFramePayload+1, 0, 0, nil), false},
		{"backwards", frame(2, 0, 0, 100, 50, nil), false},
		{"short payload", frame(1, 0, 100, 0, 0, []byte("x")), false},
	}
}

// FuzzReadFrame: any bytes give frames or an error, never a panic or an allocation beyond the bound.
func FuzzReadFrame(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for range 64 {
			fr, err := ReadFrame(r)
			if err != nil {
				return
			}
			if len(fr.Data) > MaxFramePayload {
				t.Fatalf("payload of %d bytes", len(fr.Data))
			}
			out, err := AppendFrame(nil, fr)
			if err != nil {
				t.Fatalf("a frame read cannot be written: %v", err)
			}
			back, err := ReadFrame(bytes.NewReader(out))
			if err != nil || back.Kind != fr.Kind || !bytes.Equal(back.Data, fr.Data) {
				t.Fatalf("round trip: %v", err)
			}
		}
	})
}
