package store

import (
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkBeginClose measures the recording path's index cost: one
// BeginSegment and one CloseSegment, two fsync'd commits, per segment.
func BenchmarkBeginClose(b *testing.B) {
	db := newDB(b)
	n := 0
	start := time.Now()
	for b.Loop() {
		s := testSegment("cam", 0, n, t0.Add(time.Duration(n)*time.Minute), 0, StateOpen)
		if err := db.BeginSegment(s); err != nil {
			b.Fatal(err)
		}
		s.End, s.State = s.Start.Add(time.Minute), StateClosed
		if err := db.CloseSegment(s); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(2*n)/time.Since(start).Seconds(), "commits/s")
}

const (
	benchCameras = 64
	benchPerCam  = 24 * 60 // one day of 60 s segments
)

// buildDayDB writes 64 cameras × one day of closed 60 s segments, one
// transaction per camera, and returns the file's path.
func buildDayDB(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "index.db")
	db, err := Open(path, Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for cam := range benchCameras {
		name := "camera-" + strconv.Itoa(cam)
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			for n := range benchPerCam {
				s := testSegment(name, cam, n, t0.Add(time.Duration(n)*time.Minute), time.Minute, StateClosed)
				v, err := MarshalSegment(s)
				if err != nil {
					return err
				}
				if err := putSegment(tx, s, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Verify(); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkSegmentsQuery asks for a random camera's segments in a random
// one-hour window (60 or 61 segments) of a 92,160-segment index.
func BenchmarkSegmentsQuery(b *testing.B) {
	path := buildDayDB(b)
	db := openDB(b, path, Options{})
	rng := rand.New(rand.NewPCG(3, 4))
	for b.Loop() {
		cam := rng.IntN(benchCameras)
		from := t0.Add(time.Duration(rng.IntN(23*60)) * time.Minute).Add(30 * time.Second)
		ss, err := db.Segments("camera-"+strconv.Itoa(cam), from, from.Add(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		if len(ss) != 61 {
			b.Fatalf("got %d segments, want 61", len(ss))
		}
	}
}

// BenchmarkOpen measures opening (and closing) the 92,160-segment index.
func BenchmarkOpen(b *testing.B) {
	path := buildDayDB(b)
	for b.Loop() {
		db, err := Open(path, Options{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
