package evidence

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/edgenvr/nvr/appliance/store"
)

var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

var testSPS = []byte{0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
	0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20}

// pssKey is a software RSA key signing RSASSA-PSS with the salt length the TPM uses (the hash length).
type pssKey struct{ *rsa.PrivateKey }

func (k pssKey) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if _, ok := o.(*rsa.PSSOptions); !ok {
		return nil, errors.New("PSS only")
	}
	return k.PrivateKey.Sign(r, d, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash})
}

// countingSigner counts signatures.
type countingSigner struct {
	crypto.Signer
	mu sync.Mutex
	n  int
}

func (c *countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.Signer.Sign(r, d, o)
}

type keys struct {
	log    *ecdsa.PrivateKey
	export pssKey
	cert   []byte
	id     *Identity
}

var (
	keysOnce sync.Once
	keysA    keys
	keysB    keys
)

func newKeys(tb testing.TB) keys {
	tb.Helper()
	lk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	k := keys{log: lk, export: pssKey{rk}}
	if k.cert, err = NewDeviceCert(k.export, k.log, t0); err != nil {
		tb.Fatal(err)
	}
	if k.id, err = ParseDeviceCert(k.cert); err != nil {
		tb.Fatal(err)
	}
	return k
}

func testKeys(tb testing.TB) (keys, keys) {
	keysOnce.Do(func() { keysA, keysB = newKeys(tb), newKeys(tb) })
	return keysA, keysB
}

func initSegment(tb testing.TB) []byte {
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: TimeScale, Codec: &fmp4.CodecH264{SPS: testSPS, PPS: []byte{0x08}}}}}
	var b seekablebuffer.Buffer
	if err := init.Marshal(&b); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// fragment makes one recorded fragment of 25 pictures starting at t.
func fragment(tb testing.TB, seq uint32, t time.Time, pad int) []byte {
	var samples []*fmp4.Sample
	for i := range 25 {
		payload := fmt.Appendf(nil, "\x00\x00\x00\x10picture %d %d....", seq, i)
		payload = append(payload, make([]byte, pad)...)
		samples = append(samples, &fmp4.Sample{Duration: 3600, IsNonSyncSample: i > 0, Payload: payload})
	}
	p := fmp4.Part{SequenceNumber: seq, Tracks: []*fmp4.PartTrack{{ID: 1, BaseTime: uint64(ticksOf(t)), Samples: samples}}}
	var b seekablebuffer.Buffer
	if err := p.Marshal(&b); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// memRecordings is a camera's recording held in memory.
type memRecordings struct {
	segs    []RecordedSegment
	chunks  map[[16]byte][][]byte
	missing map[[16]byte]bool
	hidden  map[[16]byte]bool
}

func (m *memRecordings) Segments(camera string, from, to time.Time) ([]RecordedSegment, error) {
	var out []RecordedSegment
	for _, s := range m.segs {
		if !m.hidden[s.ID] && s.Start.Before(to) && s.End.After(from) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (m *memRecordings) Chunks(id [16]byte, fn func(uint64, []byte) error) error {
	if m.missing[id] {
		return errors.New("open segment file: no such file or directory")
	}
	for i, c := range m.chunks[id] {
		if err := fn(uint64(i), c); err != nil {
			return err
		}
	}
	return nil
}

func (m *memRecordings) CameraURL(string) string { return "rtsp://192.0.2.10/stream1" }

// fixture is a log in a real index with a recorded camera.
type fixture struct {
	db     *store.DB
	log    *Log
	rec    *memRecordings
	k      keys
	signer *countingSigner
	early  []byte // a checkpoint signed after the first segment only
}

func newFixture(t *testing.T, segments int) *fixture {
	t.Helper()
	return makeFixture(t, segments, 5, 5*time.Second, 0)
}

func newBenchFixture(b *testing.B, segments int) *fixture {
	b.Helper()
	return makeFixture(b, segments, 60, time.Minute, 2000)
}

// openIndex opens a fresh index, whose integrity and log are verified when the test ends.
func openIndex(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "index.db"), store.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Verify(); err != nil {
			t.Errorf("Verify: %v", err)
		}
		if err := db.VerifyLog(); err != nil {
			t.Errorf("VerifyLog: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

// makeFixture records segments of frags fragments each; after each segment's leaf, between (if any) may
// append other leaves.
func makeFixture(t testing.TB, segments, frags int, segLen time.Duration, pad int, between ...func(i int, l *Log)) *fixture {
	t.Helper()
	k, _ := testKeys(t)
	db := openIndex(t)
	f := &fixture{db: db, k: k, signer: &countingSigner{Signer: k.log},
		rec: &memRecordings{chunks: map[[16]byte][][]byte{}, missing: map[[16]byte]bool{}, hidden: map[[16]byte]bool{}}}
	lfp, _ := KeyFingerprint(k.log.Public())
	efp, _ := KeyFingerprint(k.export.Public())
	clock := t0
	var err error
	f.log, err = New(Config{Store: db, Key: f.signer, Appliance: k.id.Appliance, LogKeyFingerprint: lfp, ExportKeyFingerprint: efp,
		Clock: func() time.Time { return clock }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	init := initSegment(t)
	seq := uint32(0)
	for i := range segments {
		start := t0.Add(time.Duration(i) * segLen)
		var id [16]byte
		id[0], id[15] = byte(i+1), 0x5e
		chunks := [][]byte{init}
		hashes := [][32]byte{sha256.Sum256(init)}
		for j := range frags {
			seq++
			fr := fragment(t, seq, start.Add(time.Duration(j)*time.Second), pad)
			chunks = append(chunks, fr)
			hashes = append(hashes, sha256.Sum256(fr))
		}
		s := store.Segment{ID: id, Camera: "cam1", Path: "rec/x.seg", Codec: "avc1.42c028", Start: start, End: start.Add(segLen),
			Chunks: uint64(len(chunks)), InitHash: hashes[0], Chain: Chain(hashes), State: store.StateOpen}
		if err := db.BeginSegment(s); err != nil {
			t.Fatal(err)
		}
		s.State = store.StateClosed
		if err := db.CloseSegment(s); err != nil {
			t.Fatal(err)
		}
		idx, err := f.log.Append(Segment{ID: id, Camera: "cam1", Start: s.Start, End: s.End, Chunks: s.Chunks, Init: s.InitHash, Chain: s.Chain})
		if err != nil {
			t.Fatal(err)
		}
		f.rec.segs = append(f.rec.segs, RecordedSegment{ID: id, Start: s.Start, End: s.End, LogIndex: idx})
		f.rec.chunks[id] = chunks
		for _, fn := range between {
			fn(i, f.log)
		}
		clock = clock.Add(segLen)
		if i == 0 {
			if _, f.early, err = f.log.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, _, err := f.log.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) export(t testing.TB, req ExportRequest) ([]byte, ExportReport) {
	t.Helper()
	e := &Exporter{Log: f.log, Recordings: f.rec, ExportKey: f.k.export, CertDER: f.k.cert, Clock: func() time.Time { return t0.Add(time.Hour) }}
	var buf bytes.Buffer
	rep, err := e.Export(context.Background(), req, &buf)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	return buf.Bytes(), rep
}

func defaultRequest() ExportRequest {
	return ExportRequest{Camera: "cam1", From: t0.Add(2 * time.Second), To: t0.Add(13 * time.Second), User: "alice", Reason: "case 42"}
}

func verifyBytes(t *testing.T, b []byte, pin []byte) *Report {
	t.Helper()
	rep := Verify(bytes.NewReader(b), int64(len(b)), VerifyOptions{DeviceCert: pin})
	var out strings.Builder
	rep.Print(&out)
	t.Log("\n" + out.String())
	return rep
}

func TestExportVerifyRoundTrip(t *testing.T) {
	f := newFixture(t, 4)
	b, er := f.export(t, defaultRequest())
	if er.Segments != 3 || er.Fragments != 11 {
		t.Fatalf("export of %d segments, %d fragments; want 3, 11", er.Segments, er.Fragments)
	}
	rep := verifyBytes(t, b, f.k.cert)
	if !rep.OK() {
		t.Fatalf("round trip does not verify: %+v", rep.Failed())
	}
	if !rep.Start.Equal(t0.Add(2*time.Second)) || !rep.End.Equal(t0.Add(13*time.Second)) {
		t.Errorf("range %s–%s", rep.Start, rep.End)
	}
	// Unpinned: consistent, but not established.
	if rep := verifyBytes(t, b, nil); rep.OK() || len(rep.Failed()) != 0 {
		t.Errorf("unpinned verification: OK=%v failed=%v", rep.OK(), rep.Failed())
	}
	n, err := f.log.VerifyCheckpoints()
	if err != nil || n != 2 {
		t.Errorf("VerifyCheckpoints = %d, %v", n, err)
	}
}

// rezip rewrites an export zip, letting edit change entries.
func rezip(t *testing.T, b []byte, edit func(map[string][]byte)) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	var order []string
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		m[f.Name], err = io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		order = append(order, f.Name)
	}
	edit(m)
	// Entries the edit removed are left out; entries it added go last, by name.
	var added []string
	for name := range m {
		if !slices.Contains(order, name) {
			added = append(added, name)
		}
	}
	slices.Sort(added)
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, name := range append(order, added...) {
		if _, ok := m[name]; !ok {
			continue
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(m[name])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func manifestOf(t *testing.T, m map[string][]byte) *Manifest {
	man, err := ParseManifest(m[EntryManifest])
	if err != nil {
		t.Fatal(err)
	}
	return man
}

func resign(t *testing.T, m map[string][]byte, man *Manifest, key crypto.Signer) {
	b, err := man.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m[EntryManifest] = b
	d := sha256.Sum256(b)
	if m[EntrySignature], err = key.Sign(rand.Reader, d[:], &rsa.PSSOptions{Hash: crypto.SHA256}); err != nil {
		t.Fatal(err)
	}
}

func TestTamperingIsDetected(t *testing.T) {
	f := newFixture(t, 4)
	good, _ := f.export(t, defaultRequest())
	_, other := testKeys(t)
	frag := func(m map[string][]byte, i int) (int64, int64) {
		var all []ManifestChunk
		for _, s := range manifestOf(t, m).Segments {
			for _, c := range s.Chunks {
				if c.Size > 0 {
					all = append(all, c)
				}
			}
		}
		return all[i].Offset, all[i].Size
	}
	cases := []struct {
		name  string
		edit  func(map[string][]byte)
		check string // a failed check's name
		words string // words in its detail
	}{
		{"byte flipped in video.mp4", func(m map[string][]byte) {
			off, size := frag(m, 3)
			m[EntryVideo][off+size-5] ^= 0x40
		}, "video.mp4 fragments", "altered"},
		{"fragment removed", func(m map[string][]byte) {
			off, size := frag(m, 4)
			v := m[EntryVideo]
			m[EntryVideo] = append(append([]byte(nil), v[:off]...), v[off+size:]...)
		}, "video.mp4 fragments", "removed"},
		{"two fragments swapped", func(m map[string][]byte) {
			o1, s1 := frag(m, 5)
			o2, s2 := frag(m, 6)
			v := m[EntryVideo]
			var n []byte
			n = append(n, v[:o1]...)
			n = append(n, v[o2:o2+s2]...)
			n = append(n, v[o1:o1+s1]...)
			n = append(n, v[o2+s2:]...)
			m[EntryVideo] = n
		}, "video.mp4 fragments", "reordered"},
		{"manifest time range edited", func(m map[string][]byte) {
			var raw map[string]any
			json.Unmarshal(m[EntryManifest], &raw)
			raw["start"] = t0.Add(-time.Hour).Format(time.RFC3339Nano)
			m[EntryManifest], _ = json.MarshalIndent(raw, "", " ")
		}, "export signature", "changed"},
		{"manifest re-signed with another key", func(m map[string][]byte) {
			man := manifestOf(t, m)
			man.Start = man.Start.Add(-time.Hour)
			resign(t, m, man, other.export)
		}, "export signature", "another key"},
		{"older checkpoint substituted", func(m map[string][]byte) {
			man := manifestOf(t, m)
			man.Checkpoint = string(f.early)
			m[EntryCheckpoint] = f.early
			resign(t, m, man, f.k.export)
		}, "segment", "older checkpoint"},
		{"certificate swapped", func(m map[string][]byte) {
			m[EntryCert] = CertPEM(other.cert)
		}, "signer pinned", "not by the pinned device"},
		{"certificate swapped and everything re-signed", func(m map[string][]byte) {
			m[EntryCert] = CertPEM(other.cert)
			man := manifestOf(t, m)
			man.Appliance = other.id.Appliance
			resign(t, m, man, other.export)
		}, "signer pinned", "not by the pinned device"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := rezip(t, good, c.edit)
			rep := verifyBytes(t, bad, f.k.cert)
			if rep.OK() {
				t.Fatal("tampered export verified")
			}
			for _, fc := range rep.Failed() {
				if strings.HasPrefix(fc.Name, c.check) && strings.Contains(fc.Detail, c.words) {
					return
				}
			}
			t.Errorf("no failed check %q saying %q; failed: %+v", c.check, c.words, rep.Failed())
		})
	}
}

func TestMissingSegmentShowsAsGap(t *testing.T) {
	for _, how := range []string{"file deleted", "record deleted"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t, 4)
			id := f.rec.segs[1].ID
			if how == "file deleted" {
				f.rec.missing[id] = true
			} else {
				f.rec.hidden[id] = true
			}
			b, _ := f.export(t, defaultRequest())
			rep := verifyBytes(t, b, f.k.cert)
			if rep.OK() {
				t.Fatal("export with a missing segment verified")
			}
			for _, c := range rep.Failed() {
				if c.Name == "completeness" && strings.Contains(c.Detail, "missing from the export") {
					return
				}
			}
			t.Errorf("no completeness failure: %+v", rep.Failed())
		})
	}
}

func TestEncryptedExport(t *testing.T) {
	f := newFixture(t, 2)
	req := defaultRequest()
	req.To = t0.Add(6 * time.Second)
	req.Passphrase = []byte("correct horse battery staple")
	b, _ := f.export(t, req)
	if !bytes.HasPrefix(b, []byte(ageMagic)) {
		t.Fatal("not an age file")
	}
	path := filepath.Join(t.TempDir(), "export.zip.age")
	writeFile(t, path, b)
	rep, err := VerifyFile(path, VerifyOptions{Passphrase: req.Passphrase, DeviceCert: f.k.cert, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("encrypted export does not verify: %+v", rep.Failed())
	}
	if _, err := VerifyFile(path, VerifyOptions{Passphrase: []byte("wrong"), DeviceCert: f.k.cert}); err == nil {
		t.Error("a wrong passphrase verified")
	}
	if _, err := VerifyFile(path, VerifyOptions{DeviceCert: f.k.cert}); err == nil {
		t.Error("no passphrase verified")
	}
}

func TestSignaturesPerHourDoNotGrowWithCameras(t *testing.T) {
	for _, cams := range []int{1, 64} {
		sigs := signaturesPerHour(t, cams)
		if sigs != 720 {
			t.Errorf("%d cameras: %d signatures per hour, want 720 (one per 5 s)", cams, sigs)
		}
	}
}
