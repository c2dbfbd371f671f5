package evidence

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
)

// The fuzz targets feed export bytes to every parser a verifier runs on them: they must return an error
// or a value, never panic, and never use memory out of proportion to their input.

func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"format":"edgenvr-evidence-manifest/1","segments":[]}`))
	f.Add([]byte(`{"format":"edgenvr-evidence-manifest/1","video":{"sha256":"` + string(bytes.Repeat([]byte("ab"), 32)) + `"},"segments":[{"leaf":"x","init":"","chunks":[{"index":1,"sha256":"00"}]}]}`))
	f.Add([]byte(`{"format":"edgenvr-evidence-manifest/2","cameras":[{"camera":"a","segments":[]},{"camera":"a"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := ParseManifest(b); err == nil {
			if _, err := m.Marshal(); err != nil {
				t.Fatal(err)
			}
		}
		if m, err := ParseMultiManifest(b); err == nil {
			if _, err := m.Marshal(); err != nil {
				t.Fatal(err)
			}
			for _, c := range m.Cameras {
				if !isVideoEntry(VideoEntry(c.Camera, true)) {
					t.Fatalf("camera %q makes no valid entry name", c.Camera)
				}
			}
		}
		if views, _, err := manifestViews(b); err == nil && (len(views) == 0 || len(views) > MaxExportCameras) {
			t.Fatalf("%d cameras", len(views))
		}
	})
}

var fuzzKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

func FuzzCheckpoint(f *testing.F) {
	c := Checkpoint{Origin: "edgenvr-nvr/nvr-0123456789abcdef", Size: 7, Time: t0}
	f.Add(c.Body())
	signed, err := SignCheckpoint(c, fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseCheckpointBody(b); err == nil && !bytes.Equal(c.Body(), b) {
			t.Fatalf("body %q re-encodes as %q", b, c.Body())
		}
		_, _ = OpenCheckpoint(b, &fuzzKey.PublicKey)
	})
}

func FuzzLeaf(f *testing.F) {
	f.Add(SegmentLeaf{Appliance: "nvr-1", Camera: "cam1", Seq: 1, Start: t0, End: t0, Chunks: 2}.Marshal())
	f.Add(GenesisLeaf{Appliance: "nvr-1", Created: t0}.Marshal())
	f.Add(AuditLeaf{Appliance: "nvr-1", Size: 256, Time: t0}.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, err := ParseAuditLeaf(b); err == nil && (!bytes.Equal(a.Marshal(), b) || a.Size == 0 || !IsAuditLeaf(b)) {
			t.Fatal("audit leaf is not canonical")
		}
		_ = LeafKind(b)
		if l, err := ParseSegmentLeaf(b); err == nil && !bytes.Equal(l.Marshal(), b) {
			t.Fatal("segment leaf is not canonical")
		}
		if g, err := ParseGenesisLeaf(b); err == nil && !bytes.Equal(g.Marshal(), b) {
			t.Fatal("genesis leaf is not canonical")
		}
	})
}

// FuzzBoxes drives the MP4 box walker: init segments, fragments, the ONVIF meta box and a whole
// video.mp4 walk.
func FuzzBoxes(f *testing.F) {
	init := initSegment(f)
	frag := fragment(f, 1, t0, 0)
	meta, _ := onvifMeta(onvifInfo{UnitName: "nvr-1", Operator: "alice", TrackID: 1, SourceName: "cam1", Start: t0, ExportTime: t0, Cert: []byte{1, 2}, SigLen: 8, SaltLen: 32}, make([]byte, 8))
	f.Add(init)
	f.Add(frag)
	f.Add(meta)
	f.Add(append(append(append([]byte(nil), init...), frag...), meta...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if in, err := parseInit(b); err == nil {
			_ = exportInit(in, 90000)
		}
		_, _ = parseFragment(b, 3600)
		if s, err := parseOnvifMeta(b); err == nil && (s.sigOff < 0 || s.sigOff+len(s.sig) > len(b)) {
			t.Fatalf("signature at %d+%d outside a %d-byte box", s.sigOff, len(s.sig), len(b))
		}
		m := &Manifest{Video: Video{InitSize: int64(min(len(b), len(init)))}, Segments: []ManifestSegment{{}}}
		_, _ = walkVideo(bytes.NewReader(b), m, nil, &Identity{})
	})
}

// FuzzZip drives the export archive reader and the whole verification on arbitrary archives: zip bombs,
// traversal names, huge declared entries.
func FuzzZip(f *testing.F) {
	for _, s := range zipSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep := Verify(bytes.NewReader(b), int64(len(b)), VerifyOptions{})
		if rep.OK() {
			t.Fatal("an unpinned archive verified")
		}
	})
}
