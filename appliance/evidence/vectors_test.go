package evidence

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vectorDir holds exports made by earlier versions of the exporter, committed so that every later
// verifier is shown to accept them: a court may verify a years-old export with today's nvr verify.
const vectorDir = "testdata/vectors"

// TestWriteVectors rewrites the committed vectors when NVR_WRITE_VECTORS=1. It is how
// testdata/vectors/v1-single-camera.zip was made (by the single-camera exporter of manifest format 1,
// before several cameras per export existed); rewriting it later would make it a vector of the current
// code instead, so only do that on purpose.
func TestWriteVectors(t *testing.T) {
	if os.Getenv("NVR_WRITE_VECTORS") != "1" {
		return
	}
	f := newFixture(t, 3)
	b, _ := f.export(t, ExportRequest{Camera: "cam1", From: t0.Add(2 * time.Second), To: t0.Add(12 * time.Second),
		User: "alice", Reason: "format 1 test vector"})
	if err := os.MkdirAll(vectorDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(vectorDir, "v1-single-camera.zip"), b)
	writeFile(t, filepath.Join(vectorDir, "v1-device-cert.pem"), CertPEM(f.k.cert))
}

// TestV1VectorStillVerifies verifies the committed format-1 export with today's verifier, and shows that a
// byte flipped in it is still caught.
func TestV1VectorStillVerifies(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(vectorDir, "v1-single-camera.zip"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := os.ReadFile(filepath.Join(vectorDir, "v1-device-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	z, err := openExportZip(bytesReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if mb, err := z.read(EntryManifest); err != nil || !strings.Contains(string(mb), `"format": "edgenvr-evidence-manifest/1"`) {
		t.Fatalf("the vector is not of manifest format 1 (%v)", err)
	}
	rep := verifyBytes(t, b, cert)
	if !rep.OK() {
		t.Fatalf("the format-1 vector does not verify: %+v", rep.Failed())
	}
	bad := rezip(t, b, func(m map[string][]byte) {
		m[EntryVideo][len(m[EntryVideo])/2] ^= 1
	})
	if rep := verifyBytes(t, bad, cert); rep.OK() {
		t.Fatal("a tampered format-1 vector verified")
	}
}
