package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	nvr "github.com/edgenvr/nvr/appliance"
	"github.com/edgenvr/nvr/appliance/evidence"
	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

// clipUnits splits an Annex-B H.264 clip (one slice per picture, parameter sets before each IDR, as
// scripts/clips.sh makes them) into access units laid out as ingest hands them on.
func clipUnits(t testing.TB, path string) ([]*ingest.Unit, *ingest.Params) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var nalus [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte{0, 0, 1})
		if i < 0 {
			break
		}
		b = b[i+3:]
		j := bytes.Index(b, []byte{0, 0, 1})
		n := b
		if j >= 0 {
			n = b[:j]
			b = b[j:]
		} else {
			b = nil
		}
		n = bytes.TrimRight(n, "\x00")
		if len(n) > 0 {
			nalus = append(nalus, n)
		}
	}
	var units []*ingest.Unit
	var cur [][]byte
	params := &ingest.Params{Codec: ingest.CodecH264}
	for _, n := range nalus {
		typ := n[0] & 0x1f
		switch typ {
		case 7:
			params.SPS = n
		case 8:
			params.PPS = n
		case 9:
			continue
		}
		cur = append(cur, n)
		if typ == 1 || typ == 5 {
			var avcc []byte
			for _, x := range cur {
				avcc = binary.BigEndian.AppendUint32(avcc, uint32(len(x)))
				avcc = append(avcc, x...)
			}
			units = append(units, &ingest.Unit{NALUs: cur, AVCC: avcc, RandomAccess: typ == 5})
			cur = nil
		}
	}
	if len(units) == 0 || params.SPS == nil {
		t.Fatalf("%s: no pictures", path)
	}
	return units, params
}

// dropCaches writes back and drops the page cache (root), so that a measurement reads from the disk.
func dropCaches(b *testing.B) {
	b.Helper()
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		b.Fatalf("drop caches (the benchmark runs as root): %v", err)
	}
}

// BenchmarkEvidenceHour records one hour of two 1080p cameras (the camsim clip at 4 Mbit/s, fed faster than
// real time through the real recorder, vault, index and evidence log with swtpm), then measures an evidence
// export and its offline verification of each camera, then of both cameras in one export (manifest format
// 2: export2cam, verify2cam), as ratios to reading the same segment bytes from disk (each measurement
// starts with a cold page cache).
//
//	go test -run '^$' -bench EvidenceHour -benchtime 1x -timeout 30m ./e2e/
func BenchmarkEvidenceHour(b *testing.B) {
	const hour = 3600 * 25 // pictures at 25 fps
	units, params := clipUnits(b, filepath.Join(clips(b), "h264-1080p.h264"))
	dir := b.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dev, err := tpm.Open(swtpmtest.Start(b), log)
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	vk, err := dev.VaultKey()
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.Open(filepath.Join(dir, "index.db"), store.Options{}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ev, err := nvr.OpenEvidence(dir, dev, db, time.Hour, log)
	if err != nil {
		b.Fatal(err)
	}
	defer ev.Close()

	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	genStart := time.Now()
	var recorded int64
	for _, cam := range []string{"cam1", "cam2"} {
		rec, err := record.New(record.Config{Camera: cam, DataDir: dir, VaultKey: vk, Index: db,
			OnSegment: func(s store.Segment) {
				recorded += s.Bytes
				if _, err := ev.LogSegment(s); err != nil {
					b.Error(err)
				}
			}}, log)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < hour; i++ {
			u := *units[i%len(units)]
			u.Session, u.Params = 1, params
			u.DTS, u.PTS = int64(i)*3600, int64(i)*3600
			u.Wall = start.Add(time.Duration(i) * 40 * time.Millisecond)
			rec.Unit(&u)
		}
		if err := rec.Close(); err != nil {
			b.Fatal(err)
		}
	}
	if _, _, err := ev.Log.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	b.Logf("recorded 2 cameras × 1 h: %.2f GB in %v", float64(recorded)/1e9, time.Since(genStart).Round(time.Second))

	// Baseline: read every segment file of the hour from disk, with a cold page cache as for the export.
	dropCaches(b)
	readStart := time.Now()
	var read int64
	err = db.AllSegments(func(s store.Segment) error {
		f, err := os.Open(filepath.Join(dir, s.Path))
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(io.Discard, f)
		read += n
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	readRate := float64(read) / time.Since(readStart).Seconds() / 1e6

	x := &evidence.Exporter{Log: ev.Log, Recordings: nvr.Recordings{DataDir: dir, DB: db, Keys: dev},
		ExportKey: ev.ExportKey, CertDER: ev.CertDER, Logger: log}
	b.ResetTimer()
	var exported, multiExported int64
	var exportTime, verifyTime, multiExportTime, multiVerifyTime time.Duration
	for i := 0; i < b.N; i++ {
		for _, cam := range []string{"cam1", "cam2"} {
			out := filepath.Join(dir, fmt.Sprintf("%s-%d.zip", cam, i))
			f, err := os.Create(out)
			if err != nil {
				b.Fatal(err)
			}
			dropCaches(b)
			t0 := time.Now()
			if _, err := x.Export(context.Background(), evidence.ExportRequest{Camera: cam, From: start.Add(-time.Minute),
				To: start.Add(61 * time.Minute), User: "bench", Reason: "benchmark"}, f); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
			exportTime += time.Since(t0)
			st, _ := os.Stat(out)
			exported += st.Size()
			dropCaches(b)
			t1 := time.Now()
			rep, err := evidence.VerifyFile(out, evidence.VerifyOptions{DeviceCert: ev.CertDER})
			if err != nil {
				b.Fatal(err)
			}
			verifyTime += time.Since(t1)
			if !rep.OK() {
				b.Fatalf("verify %s: %+v", cam, rep)
			}
			os.Remove(out)
		}
		// Both cameras in one export (manifest format 2): one file, one manifest, one checkpoint.
		out := filepath.Join(dir, fmt.Sprintf("both-%d.zip", i))
		f, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		dropCaches(b)
		t0 := time.Now()
		if _, err := x.Export(context.Background(), evidence.ExportRequest{Cameras: []string{"cam1", "cam2"}, From: start.Add(-time.Minute),
			To: start.Add(61 * time.Minute), User: "bench", Reason: "benchmark"}, f); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		multiExportTime += time.Since(t0)
		st, _ := os.Stat(out)
		multiExported += st.Size()
		dropCaches(b)
		t1 := time.Now()
		rep, err := evidence.VerifyFile(out, evidence.VerifyOptions{DeviceCert: ev.CertDER})
		if err != nil {
			b.Fatal(err)
		}
		multiVerifyTime += time.Since(t1)
		if !rep.OK() || len(rep.Cameras) != 2 {
			b.Fatalf("verify both cameras: %+v", rep.Failed())
		}
		os.Remove(out)
	}
	b.StopTimer()
	exportRate := float64(exported) / exportTime.Seconds() / 1e6
	verifyRate := float64(exported) / verifyTime.Seconds() / 1e6
	b.ReportMetric(exportRate, "export-MB/s")
	b.ReportMetric(verifyRate, "verify-MB/s")
	b.ReportMetric(readRate, "disk-read-MB/s")
	b.ReportMetric(exportRate/readRate, "export/read")
	b.ReportMetric(verifyRate/readRate, "verify/read")
	multiExportRate := float64(multiExported) / multiExportTime.Seconds() / 1e6
	multiVerifyRate := float64(multiExported) / multiVerifyTime.Seconds() / 1e6
	b.ReportMetric(multiExportRate, "export2cam-MB/s")
	b.ReportMetric(multiVerifyRate, "verify2cam-MB/s")
	b.ReportMetric(multiExportRate/readRate, "export2cam/read")
	b.ReportMetric(multiVerifyRate/readRate, "verify2cam/read")
}
