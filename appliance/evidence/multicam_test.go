package evidence

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/store"
)

// multiRecordings holds several cameras' recordings in memory.
type multiRecordings struct {
	byCam map[string]*memRecordings
}

func (m *multiRecordings) Segments(camera string, from, to time.Time) ([]RecordedSegment, error) {
	r := m.byCam[camera]
	if r == nil {
		return nil, nil
	}
	return r.Segments(camera, from, to)
}

func (m *multiRecordings) Chunks(id [16]byte, fn func(uint64, []byte) error) error {
	for _, r := range m.byCam {
		if _, ok := r.chunks[id]; ok || r.missing[id] {
			return r.Chunks(id, fn)
		}
	}
	return errors.New("no such segment")
}

func (m *multiRecordings) CameraURL(camera string) string { return "rtsp://192.0.2.10/" + camera }

// multiFixture is a log in a real index recording several cameras at once, their segments interleaved in
// the log as a running appliance logs them, with an audit leaf now and then.
type multiFixture struct {
	*fixture
	recs *multiRecordings
}

// newMultiFixture records segments 5 s segments of 5 fragments per camera; skip[camera] lists segment
// numbers the camera did not record (it was off: a gap in time, not in its log sequence).
func newMultiFixture(t *testing.T, cameras []string, segments int, skip map[string][]int) *multiFixture {
	t.Helper()
	k, _ := testKeys(t)
	db := openIndex(t)
	f := &multiFixture{fixture: &fixture{db: db, k: k, signer: &countingSigner{Signer: k.log}}, recs: &multiRecordings{byCam: map[string]*memRecordings{}}}
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
	for _, cam := range cameras {
		f.recs.byCam[cam] = &memRecordings{chunks: map[[16]byte][][]byte{}, missing: map[[16]byte]bool{}, hidden: map[[16]byte]bool{}}
	}
	for i := range segments {
		start := t0.Add(time.Duration(i) * 5 * time.Second)
		for ci, cam := range cameras {
			if containsInt(skip[cam], i) {
				continue
			}
			var id [16]byte
			id[0], id[1], id[15] = byte(i+1), byte(ci+1), 0x5e
			chunks := [][]byte{init}
			hashes := [][32]byte{sha256.Sum256(init)}
			for j := range 5 {
				seq++
				fr := fragment(t, seq, start.Add(time.Duration(j)*time.Second), ci*3)
				chunks = append(chunks, fr)
				hashes = append(hashes, sha256.Sum256(fr))
			}
			s := store.Segment{ID: id, Camera: cam, Path: "rec/x.seg", Codec: "avc1.42c028", Start: start, End: start.Add(5 * time.Second),
				Chunks: uint64(len(chunks)), InitHash: hashes[0], Chain: Chain(hashes), State: store.StateOpen}
			if err := db.BeginSegment(s); err != nil {
				t.Fatal(err)
			}
			s.State = store.StateClosed
			if err := db.CloseSegment(s); err != nil {
				t.Fatal(err)
			}
			idx, err := f.log.Append(Segment{ID: id, Camera: cam, Start: s.Start, End: s.End, Chunks: s.Chunks, Init: s.InitHash, Chain: s.Chain})
			if err != nil {
				t.Fatal(err)
			}
			r := f.recs.byCam[cam]
			r.segs = append(r.segs, RecordedSegment{ID: id, Start: s.Start, End: s.End, LogIndex: idx})
			r.chunks[id] = chunks
		}
		if i%2 == 1 {
			if _, err := f.log.AppendAudit(uint64(i), sha256.Sum256([]byte{byte(i)}), start); err != nil {
				t.Fatal(err)
			}
		}
		clock = clock.Add(5 * time.Second)
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

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func (f *multiFixture) exportErr(req ExportRequest) ([]byte, ExportReport, error) {
	e := &Exporter{Log: f.log, Recordings: f.recs, ExportKey: f.k.export, CertDER: f.k.cert, Clock: func() time.Time { return t0.Add(time.Hour) }}
	var buf bytes.Buffer
	rep, err := e.Export(context.Background(), req, &buf)
	return buf.Bytes(), rep, err
}

func (f *multiFixture) export(t testing.TB, req ExportRequest) ([]byte, ExportReport) {
	t.Helper()
	b, rep, err := f.exportErr(req)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	return b, rep
}

func multiRequest(cams ...string) ExportRequest {
	return ExportRequest{Cameras: cams, From: t0.Add(2 * time.Second), To: t0.Add(18 * time.Second), User: "alice", Reason: "case 43"}
}

func multiManifestOf(t *testing.T, m map[string][]byte) *MultiManifest {
	t.Helper()
	man, err := ParseMultiManifest(m[EntryManifest])
	if err != nil {
		t.Fatal(err)
	}
	return man
}

func resignMulti(t *testing.T, m map[string][]byte, man *MultiManifest, f *multiFixture) {
	t.Helper()
	b, err := man.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m[EntryManifest] = b
	d := sha256.Sum256(b)
	if m[EntrySignature], err = f.k.export.Sign(rand.Reader, d[:], &rsa.PSSOptions{Hash: crypto.SHA256}); err != nil {
		t.Fatal(err)
	}
}

func TestMultiCameraRoundTrip(t *testing.T) {
	f := newMultiFixture(t, []string{"entrance", "corridor", "car-park"}, 4, nil)
	signer := &countingSigner{Signer: f.k.export}
	e := &Exporter{Log: f.log, Recordings: f.recs, ExportKey: signer, CertDER: f.k.cert, Clock: func() time.Time { return t0.Add(time.Hour) }}
	var buf bytes.Buffer
	er, err := e.Export(context.Background(), multiRequest("entrance", "corridor", "car-park"), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(er.Cameras) != 3 || er.Fragments != 3*16 || er.Segments != 3*4 {
		t.Fatalf("export report: %d cameras, %d fragments, %d segments", len(er.Cameras), er.Fragments, er.Segments)
	}
	// One manifest signature and one ONVIF seal per video file; the log signed nothing more.
	if signer.n != 1+3 {
		t.Errorf("%d export-key signatures, want 4 (the manifest and three ONVIF seals)", signer.n)
	}
	b := buf.Bytes()
	z, err := openExportZip(bytesReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"video-entrance.mp4", "video-corridor.mp4", "video-car-park.mp4"}; strings.Join(z.videos, " ") != strings.Join(want, " ") {
		t.Errorf("video entries %v, want %v", z.videos, want)
	}
	mb, _ := z.read(EntryManifest)
	man, err := ParseMultiManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	if man.Format != ManifestFormatMulti || len(man.Cameras) != 3 {
		t.Fatalf("manifest %s with %d cameras", man.Format, len(man.Cameras))
	}
	for _, p := range man.Cameras {
		if len(p.Gaps) != 0 {
			t.Errorf("camera %s: gaps %+v in a continuous recording", p.Camera, p.Gaps)
		}
	}
	rep := verifyBytes(t, b, f.k.cert)
	if !rep.OK() {
		t.Fatalf("multi-camera export does not verify: %+v", rep.Failed())
	}
	if rep.Format != ManifestFormatMulti || len(rep.Cameras) != 3 {
		t.Fatalf("report: format %s, %d cameras", rep.Format, len(rep.Cameras))
	}
	for _, c := range rep.Cameras {
		if !rep.CameraOK(c.Camera) || c.Fragments != 16 || !c.Start.Equal(t0.Add(2*time.Second)) || !c.End.Equal(t0.Add(18*time.Second)) {
			t.Errorf("camera %+v", c)
		}
	}
	var out strings.Builder
	rep.Print(&out)
	for _, want := range []string{"Cameras:     3 (entrance, corridor, car-park)", "Camera corridor (video-corridor.mp4):", "camera car-park: every check passed",
		"Gaps:      none", "the recordings of all 3 cameras are complete"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}

	// One camera given through Cameras is a format-1 export, as before.
	one, _ := f.export(t, multiRequest("corridor"))
	z1, err := openExportZip(bytesReader(one), int64(len(one)))
	if err != nil {
		t.Fatal(err)
	}
	if mb, _ := z1.read(EntryManifest); !strings.Contains(string(mb), `"format": "edgenvr-evidence-manifest/1"`) || len(z1.videos) != 1 || z1.videos[0] != EntryVideo {
		t.Errorf("single camera: entries %v, manifest %.80s", z1.videos, mb)
	}
	if rep := verifyBytes(t, one, f.k.cert); !rep.OK() {
		t.Errorf("single-camera export does not verify: %+v", rep.Failed())
	}

	// Encrypted with a passphrase, as a single camera's.
	req := multiRequest("entrance", "car-park")
	req.Passphrase = []byte("correct horse battery staple")
	enc, _ := f.export(t, req)
	path := filepath.Join(t.TempDir(), "export.zip.age")
	writeFile(t, path, enc)
	if rep, err := VerifyFile(path, VerifyOptions{Passphrase: req.Passphrase, DeviceCert: f.k.cert, TempDir: t.TempDir()}); err != nil || !rep.OK() || len(rep.Cameras) != 2 {
		t.Errorf("encrypted multi-camera export: %v %+v", err, rep)
	}
}

func TestMultiCameraRequestErrors(t *testing.T) {
	f := newMultiFixture(t, []string{"cam1", "cam2"}, 2, nil)
	for _, c := range []struct {
		name string
		req  ExportRequest
		want string
	}{
		{"a camera with nothing recorded", multiRequest("cam1", "cam9"), "export cam9: nothing recorded"},
		{"a camera name unfit for a file name", multiRequest("cam1", "../cam2"), "camera name"},
		{"no camera", multiRequest(), "no camera"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := f.exportErr(c.req)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	// Camera and Cameras together, with a repeat, make each camera once.
	cams, err := ExportRequest{Camera: "cam1", Cameras: []string{"cam2", "cam1"}}.CameraList()
	if err != nil || strings.Join(cams, ",") != "cam1,cam2" {
		t.Errorf("CameraList = %v, %v", cams, err)
	}
	if !errors.Is(func() error { _, _, err := f.exportErr(multiRequest("cam1", "cam9")); return err }(), ErrNothingToExport) {
		t.Error("nothing recorded is not ErrNothingToExport")
	}
}

func TestMultiCameraGaps(t *testing.T) {
	// cam2 was off during its second segment (5 s to 10 s) and its fourth segment's file is unreadable.
	f := newMultiFixture(t, []string{"cam1", "cam2"}, 4, map[string][]int{"cam2": {1}})
	f.recs.byCam["cam2"].missing[f.recs.byCam["cam2"].segs[2].ID] = true
	b, er := f.export(t, multiRequest("cam1", "cam2"))
	want := []Gap{{From: t0.Add(5 * time.Second), To: t0.Add(10 * time.Second), Reason: GapNotRecorded},
		{From: t0.Add(15 * time.Second), To: t0.Add(18 * time.Second), Reason: GapMediaMissing}}
	if g := er.Cameras[1].Gaps; len(g) != 2 || !g[0].From.Equal(want[0].From) || !g[0].To.Equal(want[0].To) || g[0].Reason != want[0].Reason ||
		!g[1].From.Equal(want[1].From) || !g[1].To.Equal(want[1].To) || g[1].Reason != want[1].Reason {
		t.Errorf("cam2 gaps %+v, want %+v", g, want)
	}
	if len(er.Cameras[0].Gaps) != 0 {
		t.Errorf("cam1 gaps %+v", er.Cameras[0].Gaps)
	}
	rep := verifyBytes(t, b, f.k.cert)
	// The unreadable segment fails cam2's completeness; cam1 is untouched; the stated gaps are the true ones.
	if rep.OK() || !rep.CameraOK("cam1") || rep.CameraOK("cam2") {
		t.Fatalf("OK=%v cam1=%v cam2=%v", rep.OK(), rep.CameraOK("cam1"), rep.CameraOK("cam2"))
	}
	for _, c := range rep.Failed() {
		if c.Camera != "cam2" || c.Name != "completeness" {
			t.Errorf("unexpected failure %s: %s", c, c.Detail)
		}
	}
	var out strings.Builder
	rep.Print(&out)
	if !strings.Contains(out.String(), "Gap:       2026-03-14T09:00:05Z to 2026-03-14T09:00:10Z (5s): not recorded") {
		t.Errorf("the report does not show cam2's gap:\n%s", out.String())
	}

	// Without the unreadable segment, a gap of the camera being off is reported, not a failure.
	f.recs.byCam["cam2"].missing = map[[16]byte]bool{}
	b, _ = f.export(t, multiRequest("cam1", "cam2"))
	if rep := verifyBytes(t, b, f.k.cert); !rep.OK() {
		t.Fatalf("an export with a gap does not verify: %+v", rep.Failed())
	}
	// A manifest hiding the gap, even signed with the export key, is caught against the signed leaves.
	bad := rezip(t, b, func(m map[string][]byte) {
		man := multiManifestOf(t, m)
		man.Cameras[1].Gaps = []Gap{}
		resignMulti(t, m, man, f)
	})
	rep = verifyBytes(t, bad, f.k.cert)
	if rep.OK() || !hasCameraFailure(rep, "cam2", "gaps", "the logged segments show 1 gap") {
		t.Errorf("hidden gap not caught: %+v", rep.Failed())
	}
}

func hasCameraFailure(rep *Report, camera, name, words string) bool {
	for _, c := range rep.Failed() {
		if c.Camera == camera && strings.HasPrefix(c.Name, name) && strings.Contains(c.Detail, words) {
			return true
		}
	}
	return false
}

func TestMultiCameraTamperingNamesTheCamera(t *testing.T) {
	f := newMultiFixture(t, []string{"cam1", "cam2"}, 4, nil)
	good, _ := f.export(t, multiRequest("cam1", "cam2"))
	fragOf := func(m map[string][]byte, cam, i int) (int64, int64) {
		var all []ManifestChunk
		for _, s := range multiManifestOf(t, m).Cameras[cam].Segments {
			for _, c := range s.Chunks {
				if c.Size > 0 {
					all = append(all, c)
				}
			}
		}
		return all[i].Offset, all[i].Size
	}
	type want struct{ camera, check, words string }
	cases := []struct {
		name   string
		edit   func(map[string][]byte)
		want   []want
		cam1OK bool // the other camera still verifies on its own
	}{
		{"byte flipped in the second camera's video", func(m map[string][]byte) {
			off, size := fragOf(m, 1, 5)
			m["video-cam2.mp4"][off+size-7] ^= 0x10
		}, []want{{"cam2", "video-cam2.mp4 fragments", "altered"}, {"cam2", "ONVIF signature", "video-cam2.mp4 was altered"}}, true},
		{"camera removed from the zip", func(m map[string][]byte) {
			delete(m, "video-cam2.mp4")
		}, []want{{"cam2", "video", "video-cam2.mp4 is missing from the archive"}}, true},
		{"a camera's proof swapped with another's, re-signed", func(m map[string][]byte) {
			man := multiManifestOf(t, m)
			a, b := &man.Cameras[0].Segments[1], &man.Cameras[1].Segments[1]
			a.Proof, b.Proof = b.Proof, a.Proof
			resignMulti(t, m, man, f)
		}, []want{{"cam1", "segment", "inclusion proof"}, {"cam2", "segment", "inclusion proof"}}, false},
		{"a camera's part relabelled as another camera", func(m map[string][]byte) {
			var raw map[string]any
			json.Unmarshal(m[EntryManifest], &raw)
			part := raw["cameras"].([]any)[1].(map[string]any)
			part["camera"] = "cam3"
			part["video"].(map[string]any)["name"] = "video-cam3.mp4"
			m[EntryManifest], _ = json.MarshalIndent(raw, "", " ")
			m["video-cam3.mp4"] = m["video-cam2.mp4"]
			delete(m, "video-cam2.mp4")
		}, []want{{"", "export signature", "changed"}, {"cam3", "segment", "camera cam2, not of this export"}}, false},
		{"manifest time range of a camera edited", func(m map[string][]byte) {
			man := multiManifestOf(t, m)
			man.Cameras[1].Start = man.Cameras[1].Start.Add(-time.Minute)
			b, _ := man.Marshal()
			m[EntryManifest] = b
		}, []want{{"", "export signature", "changed"}, {"cam2", "time range", "the video's fragments span"}}, false},
		{"older checkpoint substituted, re-signed", func(m map[string][]byte) {
			man := multiManifestOf(t, m)
			man.Checkpoint = string(f.early)
			m[EntryCheckpoint] = f.early
			resignMulti(t, m, man, f)
		}, []want{{"cam1", "segment", "older checkpoint"}, {"cam2", "segment", "older checkpoint"}}, false},
		{"a video entry the manifest does not name", func(m map[string][]byte) {
			m["video-cam7.mp4"] = m["video-cam1.mp4"]
		}, []want{{"", "archive", "video-cam7.mp4 is in the archive but no camera"}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := rezip(t, good, c.edit)
			rep := verifyBytes(t, bad, f.k.cert)
			if rep.OK() {
				t.Fatal("tampered export verified")
			}
			for _, w := range c.want {
				if !hasCameraFailure(rep, w.camera, w.check, w.words) {
					t.Errorf("no failed check %q of camera %q saying %q; failed: %+v", w.check, w.camera, w.words, rep.Failed())
				}
			}
			if c.cam1OK != rep.CameraOK("cam1") {
				t.Errorf("CameraOK(cam1) = %v, want %v", rep.CameraOK("cam1"), c.cam1OK)
			}
			var out strings.Builder
			rep.Print(&out)
			verdict := out.String()[strings.Index(out.String(), "VERDICT:"):]
			for _, w := range c.want {
				if !strings.HasPrefix(verdict, "VERDICT: NOT AUTHENTIC") || w.camera != "" && !strings.Contains(verdict, "camera "+w.camera+": "+w.check) {
					t.Errorf("the verdict does not name camera %s's %s: %s", w.camera, w.check, verdict)
				}
			}
		})
	}
}
