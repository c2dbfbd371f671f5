package evidence

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestWriteSeedCorpus rewrites the committed fuzz corpora from the seeds above when NVR_WRITE_SEEDS=1.
// Otherwise it checks that every target has a committed corpus.
func TestWriteSeedCorpus(t *testing.T) {
	signed, err := SignCheckpoint(Checkpoint{Origin: "edgenvr-nvr/nvr-0123456789abcdef", Size: 7, Time: t0}, fuzzKey)
	if err != nil {
		t.Fatal(err)
	}
	init, frag := initSegment(t), fragment(t, 1, t0, 0)
	meta, _ := onvifMeta(onvifInfo{UnitName: "nvr-1", Operator: "alice", TrackID: 1, SourceName: "cam1", Start: t0, ExportTime: t0, Cert: []byte{1, 2}, SigLen: 8, SaltLen: 32}, make([]byte, 8))
	f := newFixture(t, 2)
	good, _ := f.export(t, ExportRequest{Camera: "cam1", From: t0, To: t0.Add(3 * 1e9), User: "u", Reason: "seed"})
	z, err := openExportZip(bytesReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := z.read(EntryManifest)
	if err != nil {
		t.Fatal(err)
	}
	mf := newMultiFixture(t, []string{"cam1", "cam2"}, 2, map[string][]int{"cam2": {0}})
	multi, _ := mf.export(t, ExportRequest{Cameras: []string{"cam1", "cam2"}, From: t0, To: t0.Add(8 * time.Second), User: "u", Reason: "seed"})
	mz, err := openExportZip(bytesReader(multi), int64(len(multi)))
	if err != nil {
		t.Fatal(err)
	}
	multiManifest, err := mz.read(EntryManifest)
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[string][][]byte{
		"FuzzManifest": {manifest, []byte(`{"format":"edgenvr-evidence-manifest/1","segments":[]}`), multiManifest,
			[]byte(`{"format":"edgenvr-evidence-manifest/2","cameras":[{"camera":"a","segments":[]},{"camera":"a"}]}`)},
		"FuzzCheckpoint": {signed, Checkpoint{Origin: "o", Size: 1, Time: t0}.Body()},
		"FuzzLeaf": {SegmentLeaf{Appliance: "nvr-1", Camera: "cam1", Seq: 3, Start: t0, End: t0, Chunks: 61}.Marshal(), GenesisLeaf{Appliance: "nvr-1", Created: t0}.Marshal(),
			AuditLeaf{Appliance: "nvr-0123456789abcdef", Size: 256, Head: sha256.Sum256([]byte("entry 256")), Time: t0}.Marshal()},
		"FuzzBoxes": {init, frag, meta, append(append(append([]byte(nil), init...), frag...), meta...)},
		"FuzzZip":   append(zipSeeds(t), good, multi),
	}
	for target, list := range seeds {
		dir := filepath.Join("testdata", "fuzz", target)
		if os.Getenv("NVR_WRITE_SEEDS") != "1" {
			if ents, err := os.ReadDir(dir); err != nil || len(ents) == 0 {
				t.Errorf("no committed corpus in %s (run with NVR_WRITE_SEEDS=1)", dir)
			}
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, b := range list {
			sum := sha256.Sum256(b)
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%x", sum[:8])), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
