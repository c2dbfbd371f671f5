package store

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// t0 is the tests' reference time: a fixed instant, never the wall clock.
var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

// fakeClock is an injectable clock that only moves when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newDB opens a fresh index in a temporary directory. Cleanup verifies it
// and closes it.
func newDB(tb testing.TB) *DB {
	tb.Helper()
	return openDB(tb, filepath.Join(tb.TempDir(), "index.db"), Options{Clock: newClock(t0).Now})
}

// openDB opens the index at path; Cleanup verifies and closes it.
func openDB(tb testing.TB, path string, opts Options) *DB {
	tb.Helper()
	db, err := Open(path, opts, nil)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Verify(); err != nil {
			tb.Errorf("Verify at cleanup: %v", err)
		}
		if err := db.Close(); err != nil {
			tb.Errorf("Close at cleanup: %v", err)
		}
	})
	return db
}

// testID makes a deterministic segment ID from a camera number and a sequence.
func testID(cam, n int) [16]byte {
	var id [16]byte
	binary.BigEndian.PutUint32(id[0:], uint32(cam))
	binary.BigEndian.PutUint64(id[4:], uint64(n))
	id[15] = 0x5e
	return id
}

// testSegment is a plausible segment record as record would write it.
func testSegment(camera string, cam, n int, start time.Time, d time.Duration, st State) Segment {
	s := Segment{
		ID:         testID(cam, n),
		Camera:     camera,
		Path:       filepath.Join("rec", camera, start.UTC().Format(time.DateOnly), "x.seg"),
		Codec:      "avc1.64001f",
		Start:      start,
		End:        start.Add(d),
		Chunks:     uint64(d/time.Second) + 1,
		Bytes:      int64(d/time.Second) * 250_000,
		WrappedKey: bytes.Repeat([]byte{0xa7}, 125),
		State:      st,
	}
	s.Chain[0], s.InitHash[0] = byte(n), byte(cam)
	return s
}

// sameSegment compares two segments field by field, times by instant.
func sameSegment(a, b Segment) bool {
	return a.ID == b.ID && a.Camera == b.Camera && a.Path == b.Path && a.Codec == b.Codec &&
		a.Start.Equal(b.Start) && a.End.Equal(b.End) && a.Chunks == b.Chunks && a.Bytes == b.Bytes &&
		a.Chain == b.Chain && a.InitHash == b.InitHash && bytes.Equal(a.WrappedKey, b.WrappedKey) &&
		a.State == b.State && a.LogIndex == b.LogIndex
}

func ids(ss []Segment) [][16]byte {
	out := make([][16]byte, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func sameIDs(a, b [][16]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// begin indexes s as open and, for a final state, closes it.
func mustStore(tb testing.TB, db *DB, s Segment) {
	tb.Helper()
	st := s.State
	s.State = StateOpen
	if err := db.BeginSegment(s); err != nil {
		tb.Fatalf("BeginSegment: %v", err)
	}
	if st != StateOpen {
		s.State = st
		if err := db.CloseSegment(s); err != nil {
			tb.Fatalf("CloseSegment: %v", err)
		}
	}
}
