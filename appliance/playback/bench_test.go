package playback

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
	bolt "go.etcd.io/bbolt"
)

// The synthetic index of the benchmarks: 64 cameras × 30 days of 60 s segments (2,764,800 records), in the
// store's documented bbolt layout (store/doc.go), written in large transactions because 5.5 million fsync'd
// BeginSegment/CloseSegment commits would take hours. Store's own Verify checks the result. Records point
// at segment files that do not exist, except benchTargets of them, chosen at random, which are real
// segment files (vault.Create, sealed to the swtpm vault key) of 60 one-second fragments of 25 pictures at
// about 512 kbit/s: seeks go to those.
const (
	benchCameras = 64
	benchDays    = 30
	benchPerDay  = 24 * 60
	benchTargets = 48
	benchFrame   = 2600 // bytes per picture: 25 × 2600 × 8 ≈ 520 kbit/s
)

var benchEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type benchData struct {
	dir     string
	swtpm   *swtpmtest.Process
	dev     *tpm.TPM
	targets []store.Segment
	build   time.Duration
}

var (
	benchOnce sync.Once
	bench     *benchData
	benchErr  error
)

// benchFragment makes one fragment of 25 pictures (a key frame first) at ticks start.
func benchFragment(seq uint32, start int64, payload []byte) ([]byte, error) {
	samples := make([]*fmp4.Sample, 25)
	for i := range samples {
		samples[i] = &fmp4.Sample{Duration: 3600, IsNonSyncSample: i > 0, Payload: payload}
	}
	p := fmp4.Part{SequenceNumber: seq, Tracks: []*fmp4.PartTrack{{ID: 1, BaseTime: uint64(start), Samples: samples}}}
	var b seekablebuffer.Buffer
	if err := p.Marshal(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func benchInit() ([]byte, error) {
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: record.TimeScale, Codec: &fmp4.CodecH264{SPS: testSPS, PPS: testPPS}}}}
	var b seekablebuffer.Buffer
	if err := init.Marshal(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeSegment writes a real 60 s segment file for rec and returns the record completed.
func writeSegment(dir string, rec store.Segment, vk *ecdh.PublicKey, initSeg, payload []byte) (store.Segment, error) {
	path := filepath.Join(dir, rec.Path)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return rec, err
	}
	w, err := vault.Create(path, vault.Header{SegmentID: rec.ID, Camera: rec.Camera, Start: rec.Start, Codec: rec.Codec,
		InitHash: sha256Of(initSeg)}, vk, rand.Reader)
	if err != nil {
		return rec, err
	}
	if _, err := w.Append(initSeg); err != nil {
		return rec, errors.Join(err, w.Abandon())
	}
	start := Ticks(rec.Start)
	for i := range 60 {
		frag, err := benchFragment(uint32(i), start+int64(i)*record.TimeScale, payload)
		if err != nil {
			return rec, errors.Join(err, w.Abandon())
		}
		if _, err := w.Append(frag); err != nil {
			return rec, errors.Join(err, w.Abandon())
		}
	}
	h := w.Header()
	rec.Chunks, rec.Chain = w.Chunks(), w.Chain()
	if err := w.Close(); err != nil {
		return rec, err
	}
	rec.WrappedKey = h.Keys[0].Data
	st, err := os.Stat(path)
	if err != nil {
		return rec, err
	}
	rec.Bytes = st.Size()
	return rec, nil
}

// buildBench builds (or reuses, from an earlier run in the same temp dir) the synthetic data directory.
func buildBench(tb testing.TB) *benchData {
	benchOnce.Do(func() {
		_, benchErr = buildBenchData(tb)
	})
	if benchErr != nil {
		tb.Fatal(benchErr)
	}
	return bench
}

func buildBenchData(tb testing.TB) (*benchData, error) {
	// The fixture (and its swtpm) serves every benchmark of the run; TestMain removes it by PID and path.
	dir, err := os.MkdirTemp("", "nvr-playback-bench-")
	if err != nil {
		return nil, err
	}
	d := &benchData{dir: dir}
	bench = d
	if err := os.MkdirAll(filepath.Join(dir, "tpm"), 0o700); err != nil {
		return nil, err
	}
	if d.swtpm, err = swtpmtest.StartProcess(filepath.Join(dir, "tpm"), filepath.Join(dir, "tpm.sock")); err != nil {
		return nil, err
	}
	if d.dev, err = tpm.Open(d.swtpm.Device(), slog.New(slog.DiscardHandler)); err != nil {
		return nil, err
	}
	vk, err := d.dev.VaultKey()
	if err != nil {
		return nil, err
	}
	began := time.Now()
	initSeg, err := benchInit()
	if err != nil {
		return nil, err
	}
	payload := make([]byte, benchFrame)
	binary.BigEndian.PutUint32(payload, benchFrame-4)
	payload[4] = 0x65
	rng := mrand.New(mrand.NewPCG(8, 64))
	isTarget := map[[2]int]bool{}
	for len(isTarget) < benchTargets {
		isTarget[[2]int{rng.IntN(benchCameras), rng.IntN(benchDays * benchPerDay)}] = true
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{NoSync: true, NoFreelistSync: false, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	// A wrapped key of the right shape for the records without files.
	wk := make([]byte, 2*65+32+16)
	for cam := range benchCameras {
		name := fmt.Sprintf("camera-%02d", cam)
		for day := range benchDays {
			err := db.Update(func(tx *bolt.Tx) error {
				segs, err := tx.CreateBucketIfNotExists([]byte("segments"))
				if err != nil {
					return err
				}
				cb, err := segs.CreateBucketIfNotExists([]byte(name))
				if err != nil {
					return err
				}
				idx, err := tx.CreateBucketIfNotExists([]byte("segidx"))
				if err != nil {
					return err
				}
				for m := range benchPerDay {
					n := day*benchPerDay + m
					rec := store.Segment{Camera: name, Codec: "avc1.42c00d", Start: benchEpoch.Add(time.Duration(n) * time.Minute),
						Chunks: 61, Bytes: 60 * 25 * benchFrame, WrappedKey: wk, State: store.StateClosed, LogIndex: uint64(n + 1)}
					rec.End = rec.Start.Add(time.Minute)
					if _, err := rand.Read(rec.ID[:]); err != nil {
						return err
					}
					rec.Path = fmt.Sprintf("rec/%s/%s/%x.seg", name, rec.Start.Format("2006-01-02"), rec.ID)
					if isTarget[[2]int{cam, n}] {
						if rec, err = writeSegment(dir, rec, vk, initSeg, payload); err != nil {
							return err
						}
						d.targets = append(d.targets, rec)
					}
					v, err := store.MarshalSegment(rec)
					if err != nil {
						return err
					}
					key := make([]byte, 24)
					binary.BigEndian.PutUint64(key, uint64(rec.Start.UnixNano())^(1<<63))
					copy(key[8:], rec.ID[:])
					if err := cb.Put(key, v); err != nil {
						return err
					}
					if err := idx.Put(rec.ID[:], append(key, name...)); err != nil {
						return err
					}
				}
				spans, err := tx.CreateBucketIfNotExists([]byte("spans"))
				if err != nil {
					return err
				}
				return spans.Put([]byte(name), binary.BigEndian.AppendUint64(nil, uint64(time.Minute)))
			})
			if err != nil {
				return nil, errors.Join(err, db.Close())
			}
		}
	}
	if err := db.Sync(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	// The store completes its buckets and schema on open, and its own invariant check must pass.
	sdb, err := store.Open(filepath.Join(dir, "index.db"), store.Options{}, nil)
	if err != nil {
		return nil, err
	}
	if err := sdb.Verify(); err != nil {
		return nil, errors.Join(fmt.Errorf("the synthetic index fails store.Verify: %w", err), sdb.Close())
	}
	if err := sdb.Close(); err != nil {
		return nil, err
	}
	d.build = time.Since(began)
	return d, nil
}

func sha256Of(b []byte) [32]byte { return sha256.Sum256(b) }

// TestMain stops the benchmarks' swtpm and removes their data directory.
func TestMain(m *testing.M) {
	code := m.Run()
	if d := bench; d != nil {
		if d.dev != nil {
			d.dev.Close()
		}
		if d.swtpm != nil {
			if err := d.swtpm.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "stop swtpm:", err)
			}
		}
		os.RemoveAll(d.dir)
	}
	os.Exit(code)
}

func openBenchDB(b *testing.B, d *benchData) *store.DB {
	db, err := store.Open(filepath.Join(d.dir, "index.db"), store.Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkIndexOpen opens the 2.76-million-segment index (bbolt mmap, schema check).
func BenchmarkIndexOpen(b *testing.B) {
	d := buildBench(b)
	b.ReportMetric(d.build.Seconds(), "build-s")
	for b.Loop() {
		db, err := store.Open(filepath.Join(d.dir, "index.db"), store.Options{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

var errFirst = errors.New("first fragment")

// seekLatencies measures request → first decrypted fragment for random instants inside the target segments.
func seekLatencies(b *testing.B, s *Source, d *benchData, purge bool) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	var lat []time.Duration
	for b.Loop() {
		t := d.targets[rng.IntN(len(d.targets))]
		at := t.Start.Add(time.Duration(rng.IntN(59000)) * time.Millisecond)
		if purge {
			s.cache.Purge()
		}
		start := time.Now()
		_, err := s.Stream(context.Background(), Request{Camera: t.Camera, At: at}, func(f Fragment) error {
			if f.Kind == KindMedia {
				return errFirst
			}
			return nil
		})
		if !errors.Is(err, errFirst) {
			b.Fatalf("seek to %s: %v", at, err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkSeek: request to the first decrypted fragment at a random instant of a random camera and day, in
// the full synthetic index; "cold" unwraps the segment key through swtpm every time, "warm" finds it in the
// key cache (a viewer scrubbing within recently watched video).
func BenchmarkSeek(b *testing.B) {
	d := buildBench(b)
	db := openBenchDB(b, d)
	s, err := New(Config{DataDir: d.dir, Index: db, Keys: d.dev}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cold", func(b *testing.B) { seekLatencies(b, s, d, true) })
	b.Run("warm", func(b *testing.B) { seekLatencies(b, s, d, false) })
}

// BenchmarkPlaybackStreams reads whole recorded minutes in parallel goroutines (warm keys), as concurrent
// viewers do, and reports how many 1× streams of this bitrate one core sustains.
func BenchmarkPlaybackStreams(b *testing.B) {
	d := buildBench(b)
	db := openBenchDB(b, d)
	s, err := New(Config{DataDir: d.dir, Index: db, Keys: d.dev}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var frags, bytes atomic.Int64
	var n atomic.Uint64
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t := d.targets[int(n.Add(1))%len(d.targets)]
			res, err := s.Stream(context.Background(), Request{Camera: t.Camera, At: t.Start, Until: t.End}, func(Fragment) error { return nil })
			if err != nil {
				b.Error(err)
				return
			}
			frags.Add(int64(res.Fragments))
			bytes.Add(res.Bytes)
		}
	})
	el := time.Since(start).Seconds()
	cores := float64(min(b.N, runtime.GOMAXPROCS(0)))
	b.ReportMetric(float64(frags.Load())/el, "fragments/s")
	b.ReportMetric(float64(bytes.Load())/el/1e6, "MB/s")
	// One 1× stream needs one fragment a second.
	b.ReportMetric(float64(frags.Load())/el/cores, "streams/core")
}
