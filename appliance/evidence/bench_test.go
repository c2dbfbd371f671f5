package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/store"
)

// signaturesPerHour runs an hour of recording by a simulated clock: cams cameras each close a 60 s
// segment per minute (staggered), and the log signs a checkpoint every 5 s as Run does. It returns the
// number of signatures.
func signaturesPerHour(tb testing.TB, cams int) int {
	k, _ := testKeys(tb)
	signer := &countingSigner{Signer: k.log}
	now := t0
	l, err := New(Config{Store: newMemStore(), Key: signer, Appliance: k.id.Appliance, Clock: func() time.Time { return now }}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	const tick = 5 * time.Second
	for step := range int(time.Hour / tick) {
		now = t0.Add(time.Duration(step+1) * tick)
		for c := range cams {
			// Camera c closes its segment in the tick where its minute ends.
			if (step+c)%12 == 11 {
				if _, err := l.Append(Segment{Camera: fmt.Sprintf("cam%d", c), Start: now.Add(-time.Minute), End: now, Chunks: 61}); err != nil {
					tb.Fatal(err)
				}
			}
		}
		if _, _, err := l.Checkpoint(); err != nil {
			tb.Fatal(err)
		}
	}
	return signer.n
}

// BenchmarkSignaturesPerHour reports the checkpoint signatures an hour of recording costs at 1 and 64
// cameras: one per 5 s, whatever the number of cameras.
func BenchmarkSignaturesPerHour(b *testing.B) {
	for _, cams := range []int{1, 64} {
		b.Run(fmt.Sprintf("cameras=%d", cams), func(b *testing.B) {
			var n int
			for b.Loop() {
				n = signaturesPerHour(b, cams)
			}
			b.ReportMetric(float64(n), "signatures/hour")
		})
	}
}

// benchExport makes an export of segs one-minute segments of 60 fragments of about fragBytes each, and
// returns the export and the bytes of video it holds.
func benchExport(b *testing.B, segs int) ([]byte, int64) {
	b.Helper()
	f := newBenchFixture(b, segs)
	e := &Exporter{Log: f.log, Recordings: f.rec, ExportKey: f.k.export, CertDER: f.k.cert}
	var buf bytes.Buffer
	rep, err := e.Export(context.Background(), ExportRequest{Camera: "cam1", From: t0, To: t0.Add(time.Duration(segs) * time.Minute), User: "bench"}, &buf)
	if err != nil {
		b.Fatal(err)
	}
	return buf.Bytes(), rep.VideoBytes
}

// BenchmarkExport measures export throughput (MB/s of video) from in-memory recordings, and reading the
// same bytes from disk for comparison.
func BenchmarkExport(b *testing.B) {
	const segs = 10
	f := newBenchFixture(b, segs)
	e := &Exporter{Log: f.log, Recordings: f.rec, ExportKey: f.k.export, CertDER: f.k.cert}
	var size int64
	for b.Loop() {
		rep, err := e.Export(context.Background(), ExportRequest{Camera: "cam1", From: t0, To: t0.Add(segs * time.Minute), User: "bench"}, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		size = rep.VideoBytes
	}
	b.SetBytes(size)
}

// BenchmarkVerify measures verification throughput of an export file on disk.
func BenchmarkVerify(b *testing.B) {
	exp, size := benchExport(b, 10)
	k, _ := testKeys(b)
	path := filepath.Join(b.TempDir(), "export.zip")
	writeFile(b, path, exp)
	b.SetBytes(size)
	for b.Loop() {
		rep, err := VerifyFile(path, VerifyOptions{DeviceCert: k.cert})
		if err != nil || !rep.OK() {
			b.Fatalf("verify: %v %+v", err, rep.Failed())
		}
	}
}

// BenchmarkReadFile is the baseline: reading and hashing once the same export file from disk.
func BenchmarkReadFile(b *testing.B) {
	exp, size := benchExport(b, 10)
	path := filepath.Join(b.TempDir(), "export.zip")
	writeFile(b, path, exp)
	b.SetBytes(size)
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkReadAuditAnchors measures what `nvr audit verify -data` spends on the evidence log: reading every
// leaf of a real index, recomputing the signed root and collecting the audit anchors (one anchor per four
// segment leaves here).
func BenchmarkReadAuditAnchors(b *testing.B) {
	k, _ := testKeys(b)
	db, err := store.Open(filepath.Join(b.TempDir(), "index.db"), store.Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	lfp, _ := KeyFingerprint(k.log.Public())
	l, err := New(Config{Store: db, Key: k.log, Appliance: k.id.Appliance, LogKeyFingerprint: lfp, Clock: func() time.Time { return t0 }}, nil)
	if err != nil {
		b.Fatal(err)
	}
	const leaves = 2000
	for i := range leaves {
		if i%5 == 4 {
			_, err = l.AppendAudit(uint64(i), sha256.Sum256([]byte{byte(i)}), t0)
		} else {
			_, err = l.Append(Segment{Camera: "cam1", Start: t0, End: t0.Add(time.Minute), Chunks: 61})
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, _, err := l.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	t1 := time.Now()
	for b.Loop() {
		as, err := ReadAuditAnchors(db, k.id)
		if err != nil || len(as.Anchors) != leaves/5 {
			b.Fatalf("%d anchors, %v", len(as.Anchors), err)
		}
	}
	b.ReportMetric(float64(b.N*(leaves+1))/time.Since(t1).Seconds(), "leaves/s")
}
