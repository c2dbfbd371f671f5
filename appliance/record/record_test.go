package record

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
)

// A real SPS and PPS from libx264 (baseline, 320x240), so that the init segment carries real parameters.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80}
	testPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// softKey is an Unwrapper with a software key: the vault's logic under test without a TPM (the e2e tests
// run the same paths through swtpm).
type softKey struct{ k *ecdh.PrivateKey }

func (s softKey) ECDH(peer *ecdh.PublicKey) ([]byte, error) { return s.k.ECDH(peer) }

type fixture struct {
	dir string
	db  *store.DB
	key softKey
	rec *Recorder
	log *slog.Logger
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := store.Open(filepath.Join(dir, "index.db"), store.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Verify(); err != nil {
			t.Errorf("index integrity: %v", err)
		}
		db.Close()
	})
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Camera, cfg.DataDir, cfg.VaultKey, cfg.Index = "cam1", dir, k.PublicKey(), db
	r, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, db: db, key: softKey{k}, rec: r, log: log}
}

var params1 = &ingest.Params{Codec: ingest.CodecH264, SPS: testSPS, PPS: testPPS}

// feed sends n pictures at 25 fps with a key frame every gop pictures, starting at DTS start.
func feed(r *Recorder, session uint64, p *ingest.Params, wall0 time.Time, start, n, gop int) {
	for i := start; i < start+n; i++ {
		dts := int64(i) * 3600
		nal := []byte{0x41, 0x9a, byte(i)}
		if i%gop == 0 {
			nal = []byte{0x65, 0x88, byte(i)}
		}
		r.Unit(&ingest.Unit{
			Session: session, Params: p, DTS: dts, PTS: dts,
			Wall:  wall0.Add(time.Duration(dts) * time.Second / TimeScale),
			NALUs: [][]byte{nal}, AVCC: append([]byte{0, 0, 0, byte(len(nal))}, nal...), RandomAccess: i%gop == 0,
		})
	}
}

func segments(t *testing.T, db *store.DB) []store.Segment {
	t.Helper()
	var out []store.Segment
	if err := db.AllSegments(func(s store.Segment) error { out = append(out, s); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// chunks decrypts a segment and returns the plaintext of each chunk: the init segment, then the fragments.
func chunks(t *testing.T, f *fixture, s store.Segment) [][]byte {
	t.Helper()
	r, err := vault.Open(filepath.Join(f.dir, s.Path), f.key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out [][]byte
	for {
		plain, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(plain))
	}
}

// fragmentsOf decrypts a segment and returns the spans of its fragments.
func fragmentsOf(t *testing.T, f *fixture, s store.Segment) []FragmentSpan {
	t.Helper()
	var spans []FragmentSpan
	for _, plain := range chunks(t, f, s)[1:] {
		sp, err := ParseFragment(plain)
		if err != nil {
			t.Fatal(err)
		}
		spans = append(spans, sp)
	}
	return spans
}

func TestSegmentsAndFragments(t *testing.T) {
	f := newFixture(t, Config{SegmentDuration: 4 * time.Second})
	wall := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	feed(f.rec, 1, params1, wall, 3, 25*10, 25) // starts mid-GOP: 22 pictures dropped
	if err := f.rec.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, f.db)
	if len(segs) != 3 { // 4 s + 4 s + the rest
		t.Fatalf("%d segments, want 3", len(segs))
	}
	if st := f.rec.Status(); st.Dropped != 22 {
		t.Errorf("dropped %d pictures before the first key frame, want 22", st.Dropped)
	}
	var prevEnd int64
	total := 0
	for i, s := range segs {
		if s.State != store.StateClosed {
			t.Errorf("segment %d state %v", i, s.State)
		}
		spans := fragmentsOf(t, f, s)
		if int(s.Chunks) != len(spans)+1 {
			t.Errorf("segment %d: %d chunks for %d fragments", i, s.Chunks, len(spans))
		}
		for j, sp := range spans {
			if prevEnd != 0 && sp.Start != prevEnd {
				t.Fatalf("segment %d fragment %d starts at %d, previous ended at %d: the timeline must be continuous", i, j, sp.Start, prevEnd)
			}
			if d := sp.End - sp.Start; j < len(spans)-1 && d != 25*3600 {
				t.Errorf("segment %d fragment %d lasts %d ticks, want one GOP (90000)", i, j, d)
			}
			prevEnd = sp.End
			total += sp.Samples
		}
		if !TimeOf(spans[0].Start).Equal(s.Start) || !TimeOf(spans[len(spans)-1].End).Equal(s.End) {
			t.Errorf("segment %d: index %v–%v, fragments %v–%v", i, s.Start, s.End, TimeOf(spans[0].Start), TimeOf(spans[len(spans)-1].End))
		}
	}
	if want := 25*10 + 3 - 25; total != want {
		t.Errorf("%d pictures recorded, want %d", total, want)
	}
	if first := segs[0].Start; !first.Equal(wall.Add(time.Second)) {
		t.Errorf("first segment starts %v, want the first key frame's wall time %v", first, wall.Add(time.Second))
	}
}

func TestNewSessionAndParameterChange(t *testing.T) {
	f := newFixture(t, Config{})
	wall := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	feed(f.rec, 1, params1, wall, 0, 50, 25)
	// A reconnect whose wall clock is (wrongly) earlier than what was recorded: the timeline must not go back.
	feed(f.rec, 2, params1, wall.Add(-time.Hour), 0, 50, 25)
	sps2 := bytes.Clone(testSPS)
	sps2[len(sps2)-1] ^= 0x80
	p2 := &ingest.Params{Codec: ingest.CodecH264, SPS: sps2, PPS: testPPS}
	feed(f.rec, 2, p2, wall.Add(-time.Hour), 50, 50, 25)
	if err := f.rec.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, f.db)
	if len(segs) != 3 {
		t.Fatalf("%d segments, want 3 (session 1, session 2, new parameters)", len(segs))
	}
	for i := 1; i < len(segs); i++ {
		if segs[i].Start.Before(segs[i-1].End) {
			t.Errorf("segment %d starts %v before segment %d ends %v", i, segs[i].Start, i-1, segs[i-1].End)
		}
	}
	if segs[1].InitHash != segs[0].InitHash || segs[2].InitHash == segs[1].InitHash {
		t.Error("init segments: the same parameters must give the same init, new ones a new init")
	}
}

func TestLongGOPIsCutAtMaxFragment(t *testing.T) {
	f := newFixture(t, Config{FragmentDuration: time.Second, MaxFragmentDuration: 2 * time.Second})
	feed(f.rec, 1, params1, time.Unix(1800000000, 0), 0, 250, 250) // one key frame in 10 s
	if err := f.rec.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, f.db)
	if len(segs) != 1 {
		t.Fatalf("%d segments", len(segs))
	}
	for i, sp := range fragmentsOf(t, f, segs[0]) {
		if d := sp.End - sp.Start; d > 2*TimeScale {
			t.Errorf("fragment %d lasts %.2f s: a crash could lose more than the bound", i, float64(d)/TimeScale)
		}
	}
}

// TestRecoverAfterCrash leaves a segment as a crash would (the writer abandoned, the record open) and
// expects Recover to close it at its last fragment, remove what has no video and sweep orphan files.
func TestRecoverAfterCrash(t *testing.T) {
	f := newFixture(t, Config{})
	wall := time.Unix(1800000000, 0)
	feed(f.rec, 1, params1, wall, 0, 100, 25)
	// Crash: abandon the open segment without a trailer.
	if f.rec.seg == nil {
		t.Fatal("no open segment")
	}
	if err := f.rec.seg.w.Abandon(); err != nil {
		t.Fatal(err)
	}
	f.rec.seg = nil
	open, err := f.db.OpenSegments()
	if err != nil || len(open) != 1 {
		t.Fatalf("open segments: %v %v", open, err)
	}
	rep, err := Recover(f.dir, f.db, f.key, f.log)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Repaired != 1 {
		t.Fatalf("report %+v", rep)
	}
	s, err := f.db.Segment(open[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != store.StateRecovered || s.Chunks != 4 { // init + 3 whole GOPs; the 4th was pending
		t.Errorf("recovered segment: state %v chunks %d", s.State, s.Chunks)
	}
	if want := wall.Add(3 * time.Second); !s.End.Equal(want) {
		t.Errorf("recovered end %v, want %v", s.End, want)
	}
	rep2, err := Fsck(f.dir, f.db)
	if err != nil || !rep2.Clean() || len(rep2.Pending) != 0 {
		t.Errorf("fsck after recovery: %+v %v", rep2, err)
	}
}

// TestExportIsByteIdentical: the export is the init segment followed by the recorded fragments, exactly.
func TestExportIsByteIdentical(t *testing.T) {
	f := newFixture(t, Config{SegmentDuration: 2 * time.Second})
	wall := time.Unix(1800000000, 0)
	feed(f.rec, 1, params1, wall, 0, 150, 25)
	if err := f.rec.Close(); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i, s := range segments(t, f.db) {
		c := chunks(t, f, s)
		if i > 0 {
			c = c[1:] // the init segment once
		}
		for _, plain := range c {
			want.Write(plain)
		}
	}
	var got bytes.Buffer
	rep, err := Export(f.dir, f.db, f.key, "cam1", wall.Add(-time.Hour), wall.Add(time.Hour), &got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("export (%d bytes) differs from the recorded chunks (%d bytes)", got.Len(), want.Len())
	}
	if rep.Fragments != 6 || len(rep.Gaps) != 0 {
		t.Errorf("report %+v", rep)
	}
	// A sub-range takes the fragments that overlap it.
	got.Reset()
	rep, err = Export(f.dir, f.db, f.key, "cam1", wall.Add(2500*time.Millisecond), wall.Add(3500*time.Millisecond), &got)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Fragments != 2 || !rep.Start.Equal(wall.Add(2*time.Second)) || !rep.End.Equal(wall.Add(4*time.Second)) {
		t.Errorf("sub-range report %+v", rep)
	}
	if _, err := Export(f.dir, f.db, f.key, "cam2", wall, wall.Add(time.Hour), io.Discard); !errors.Is(err, ErrNothingRecorded) {
		t.Errorf("export of an unknown camera: %v", err)
	}
}

func TestCameraNames(t *testing.T) {
	for name, ok := range map[string]bool{"cam1": true, "Gate_2-east": true, "": false, "../x": false, "a/b": false, "-x": false, "a b": false} {
		if ValidCameraName(name) != ok {
			t.Errorf("ValidCameraName(%q) = %v", name, !ok)
		}
	}
}

// TestLiveSubscribers: a viewer gets the init segment and then fragments from a key frame on, byte for byte
// what is recorded; a viewer that does not read loses fragments without holding the recorder up.
func TestLiveSubscribers(t *testing.T) {
	f := newFixture(t, Config{})
	wall := time.Unix(1800000000, 0)
	live, cancel := f.rec.Subscribe()
	defer cancel()
	stuck, cancelStuck := f.rec.Subscribe()
	_ = stuck
	defer cancelStuck()
	feed(f.rec, 1, params1, wall, 0, 25*20, 25) // 20 s: more fragments than a stuck viewer's queue
	var got []LiveFragment
	for len(got) < liveQueue {
		got = append(got, <-live)
	}
	if got[0].Init == nil || got[1].Data == nil || !got[1].Key {
		t.Fatalf("first live items: init=%v data=%v key=%v", got[0].Init != nil, got[1].Data != nil, got[1].Key)
	}
	sp, err := ParseFragment(got[1].Data)
	if err != nil || sp.Start != got[1].Start || sp.End != got[1].End {
		t.Fatalf("live fragment %+v, parsed %+v %v", got[1], sp, err)
	}
	if err := f.rec.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSegmentThatCannotBeCreated makes segment creation fail (the day's directory cannot be made, as on a
// full disk) and checks that no record is left without its file, and that recording resumes once the
// directory can be made.
func TestSegmentThatCannotBeCreated(t *testing.T) {
	f := newFixture(t, Config{SegmentDuration: 2 * time.Second})
	wall := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	blocker := filepath.Join(f.dir, "rec", "cam1", "2026-11-23")
	if err := os.MkdirAll(filepath.Dir(blocker), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	feed(f.rec, 1, params1, wall, 0, 100, 25)
	if segs := segments(t, f.db); len(segs) != 0 {
		t.Fatalf("%d records after every creation failed, want none: %+v", len(segs), segs)
	}
	if st := f.rec.Status(); st.WriteErrs == 0 {
		t.Error("creation failures not counted")
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	feed(f.rec, 1, params1, wall, 100, 100, 25)
	if err := f.rec.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, f.db)
	if len(segs) == 0 {
		t.Fatal("nothing recorded once the directory could be made")
	}
	for _, s := range segs {
		if _, err := os.Stat(filepath.Join(f.dir, s.Path)); err != nil {
			t.Errorf("segment %x: %v", s.ID, err)
		}
	}
}
