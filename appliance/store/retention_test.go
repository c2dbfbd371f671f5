package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeDisk models a file system holding the indexed segments: used is the
// sum of the segments' Bytes plus a fixed overhead. Its Remover checks the
// spine contract (the record still exists when the file goes).
type fakeDisk struct {
	t        *testing.T
	db       *DB
	mu       sync.Mutex
	used     uint64
	total    uint64
	removed  [][16]byte
	failFor  map[[16]byte]error
	usageErr error
}

func (d *fakeDisk) Usage() (uint64, uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.used, d.total, d.usageErr
}

func (d *fakeDisk) Remove(s Segment) error {
	if _, err := d.db.Segment(s.ID); err != nil {
		d.t.Errorf("Remover called for %x after its record was deleted: %v", s.ID, err)
	}
	if err := d.failFor[s.ID]; err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.used -= uint64(s.Bytes)
	d.removed = append(d.removed, s.ID)
	return nil
}

func (d *fakeDisk) store(s Segment) {
	mustStore(d.t, d.db, s)
	d.mu.Lock()
	d.used += uint64(s.Bytes)
	d.mu.Unlock()
}

func TestRetentionByAge(t *testing.T) {
	db := newDB(t)
	disk := &fakeDisk{t: t, db: db, total: 1 << 40}
	now := t0
	// Per camera: one segment per hour for 10 days back.
	for cam, name := range []string{"short", "default", "forever"} {
		for h := range 240 {
			start := now.Add(-time.Duration(h+1) * time.Hour)
			disk.store(testSegment(name, cam, h, start, time.Minute, StateClosed))
		}
	}
	oldOpen := testSegment("short", 9, 1, now.Add(-30*24*time.Hour), time.Minute, StateOpen)
	disk.store(oldOpen)
	hold, err := db.PutHold(Hold{Camera: "default", From: now.Add(-200 * time.Hour), To: now.Add(-190 * time.Hour), Reason: "incident"})
	if err != nil {
		t.Fatal(err)
	}
	p := RetentionPolicy{
		MaxAge:        map[string]time.Duration{"short": 24 * time.Hour, "forever": 0},
		DefaultMaxAge: 7 * 24 * time.Hour,
	}
	r := NewRetention(db, t.TempDir(), p, disk.Remove, disk.Usage, nil)
	res, err := r.RunOnce(now)
	if err != nil {
		t.Fatal(err)
	}
	remaining := func(camera string) int {
		ss, err := db.Segments(camera, now.Add(-100*24*time.Hour), now)
		if err != nil {
			t.Fatal(err)
		}
		return len(ss)
	}
	// short: segments starting 1h..24h ago end within the day (the one
	// starting 24h ago ends 23h59m ago); the old open one stays.
	if got := remaining("short"); got != 24+1 {
		t.Errorf("short keeps %d, want 25", got)
	}
	// default: 7 days = 168 kept, plus the 10 segments starting 191h..200h
	// ago that overlap the hold (the one starting 190h ago starts at its end).
	if got := remaining("default"); got != 168+10 {
		t.Errorf("default keeps %d, want %d", got, 168+10)
	}
	if got := remaining("forever"); got != 240 {
		t.Errorf("forever keeps %d, want 240", got)
	}
	if want := (240 - 24) + (240 - 168 - 10); res.AgeDeleted != want || res.SpaceDeleted != 0 {
		t.Errorf("result %+v, want %d aged", res, want)
	}
	if len(disk.removed) != res.AgeDeleted {
		t.Errorf("removed %d files for %d records", len(disk.removed), res.AgeDeleted)
	}
	if _, err := db.Segment(oldOpen.ID); err != nil {
		t.Errorf("open segment deleted: %v", err)
	}
	// Once the hold is lifted, the next pass takes the rest.
	if err := db.DeleteHold(hold); err != nil {
		t.Fatal(err)
	}
	if res, err := r.RunOnce(now); err != nil || res.AgeDeleted != 10 {
		t.Errorf("after lifting the hold: %+v, %v", res, err)
	}
}

func TestRetentionBySpace(t *testing.T) {
	db := newDB(t)
	disk := &fakeDisk{t: t, db: db, total: 1000 * 250_000 * 60, used: 50 * 250_000 * 60}
	// 3 cameras × 300 one-minute segments of 15 MB each: 900 of the 1000
	// units, plus 50 units of other files = 95 % used.
	for n := range 300 {
		for cam, name := range []string{"a", "b", "c"} {
			st := StateClosed
			if n == 299 {
				st = StateOpen
			}
			start := t0.Add(time.Duration(n)*time.Minute + time.Duration(cam)*time.Second)
			disk.store(testSegment(name, cam, n, start, time.Minute, st))
		}
	}
	if _, err := db.PutHold(Hold{From: t0, To: t0.Add(10 * time.Minute), Reason: "first ten minutes"}); err != nil {
		t.Fatal(err)
	}
	r := NewRetention(db, t.TempDir(), RetentionPolicy{HighWater: 0.9, LowWater: 0.8}, disk.Remove, disk.Usage, nil)
	res, err := r.RunOnce(t0.Add(5 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// From 95 % to below 80 %: 151 units of 1000 must go, the oldest
	// unheld first.
	if res.SpaceDeleted != 151 || res.AgeDeleted != 0 || frac(res.Used, res.Total) >= 0.8 {
		t.Fatalf("result %+v", res)
	}
	for i, id := range disk.removed {
		want := testID(i%3, 10+i/3)
		if id != want {
			t.Fatalf("removal %d was %x, want %x (oldest unheld first)", i, id, want)
		}
	}
	// Below the high water mark, nothing more goes.
	if res, err := r.RunOnce(t0.Add(5 * time.Hour)); err != nil || res.SpaceDeleted != 0 {
		t.Errorf("second pass: %+v, %v", res, err)
	}

	// A disk full of held and open segments: retention gives up and says so.
	disk.mu.Lock()
	disk.used = disk.total
	disk.mu.Unlock()
	if _, err := db.PutHold(Hold{From: t0, To: t0.Add(24 * time.Hour), Reason: "everything"}); err != nil {
		t.Fatal(err)
	}
	before := len(disk.removed)
	res, err = r.RunOnce(t0.Add(5 * time.Hour))
	if err != nil || !res.SpaceShort || res.SpaceDeleted != 0 || len(disk.removed) != before {
		t.Errorf("all held: %+v, %v", res, err)
	}
	if open, _ := db.OpenSegments(); len(open) != 3 {
		t.Errorf("open segments left: %d, want 3", len(open))
	}
}

func TestRetentionRemoverFailures(t *testing.T) {
	db := newDB(t)
	disk := &fakeDisk{t: t, db: db, total: 10 * 15_000_000, failFor: map[[16]byte]error{}}
	for n := range 10 {
		disk.store(testSegment("a", 0, n, t0.Add(time.Duration(n)*time.Minute), time.Minute, StateClosed))
	}
	broken := testID(0, 0)
	disk.failFor[broken] = fmt.Errorf("remove: %w", syscall.EIO)
	gone := testID(0, 1)
	disk.failFor[gone] = fmt.Errorf("remove: %w", fs.ErrNotExist)
	r := NewRetention(db, t.TempDir(), RetentionPolicy{HighWater: 0.95, LowWater: 0.75}, disk.Remove, disk.Usage, nil)
	res, err := r.RunOnce(t0.Add(time.Hour))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("err %v, want the EIO", err)
	}
	if res.Skipped != 1 {
		t.Errorf("Skipped %d, want 1", res.Skipped)
	}
	if _, err := db.Segment(broken); err != nil {
		t.Errorf("record of the unremovable file: %v", err)
	}
	if _, err := db.Segment(gone); !errors.Is(err, ErrNotFound) {
		t.Errorf("record of the already missing file: %v", err)
	}
	// The already missing file freed nothing in the model, so three
	// removals bring 100 % under 75 %.
	if res.SpaceDeleted != 4 || frac(res.Used, res.Total) >= 0.75 {
		t.Errorf("result %+v", res)
	}

	disk.usageErr = errors.New("statfs: EIO")
	if _, err := r.RunOnce(t0.Add(time.Hour)); err == nil {
		t.Error("usage error not reported")
	}
}

// TestRetentionRechecksHolds: a hold that arrives between the choice of a
// candidate and its deletion still protects it.
func TestRetentionRechecksHolds(t *testing.T) {
	db := newDB(t)
	s := testSegment("a", 0, 0, t0, time.Minute, StateClosed)
	mustStore(t, db, s)
	called := false
	r := NewRetention(db, t.TempDir(), RetentionPolicy{}, func(Segment) error { called = true; return nil }, nil, nil)
	cands, err := db.Candidates(1, nil)
	if err != nil || len(cands) != 1 {
		t.Fatalf("Candidates = %v, %v", cands, err)
	}
	if _, err := db.PutHold(Hold{Camera: "a", From: t0, To: t0.Add(time.Second), Reason: "late"}); err != nil {
		t.Fatal(err)
	}
	ok, err := r.delete(cands[0])
	if ok || err != nil || called {
		t.Errorf("delete of a newly held segment: ok %t, err %v, remover called %t", ok, err, called)
	}
}

func TestRetentionRun(t *testing.T) {
	db := newDB(t)
	passes := make(chan struct{}, 100)
	usage := func() (uint64, uint64, error) {
		select {
		case passes <- struct{}{}:
		default:
		}
		return 1, 100, nil
	}
	r := NewRetention(db, t.TempDir(), RetentionPolicy{HighWater: 0.9, LowWater: 0.8}, nil, usage, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, time.Millisecond) }()
	deadline := time.After(10 * time.Second)
	for range 3 {
		select {
		case <-passes:
		case <-deadline:
			t.Fatal("Run made fewer than 3 passes in 10 s")
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
	if err := r.Run(context.Background(), 0); err == nil {
		t.Error("Run with a zero interval succeeded")
	}
}

// TestRetentionTmpfs runs retention against a real 8 MiB tmpfs holding the
// index and the segment files, with the default Usage (statfs) and Remover.
func TestRetentionTmpfs(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	db, err := Open(filepath.Join(dir, "index.db"), Options{Clock: newClock(t0).Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the unmount, so it runs before it.
	t.Cleanup(func() {
		if err := db.Verify(); err != nil {
			t.Errorf("Verify: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})

	const fileSize = 512 << 10
	var segs []Segment
	payload := make([]byte, fileSize)
	for n := range 13 {
		start := t0.Add(time.Duration(n) * time.Minute)
		s := testSegment("door", 0, n, start, time.Minute, StateOpen)
		s.Path = filepath.Join("rec", "door", start.Format(time.DateOnly), fmt.Sprintf("%x.seg", s.ID))
		s.Bytes = fileSize
		if err := db.BeginSegment(s); err != nil {
			t.Fatal(err)
		}
		full := filepath.Join(dir, s.Path)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, payload, 0o600); err != nil {
			t.Fatal(err)
		}
		if n < 12 {
			s.State = StateClosed
			if err := db.CloseSegment(s); err != nil {
				t.Fatal(err)
			}
		}
		segs = append(segs, s)
	}
	if _, err := db.PutHold(Hold{Camera: "door", From: t0.Add(90 * time.Second), To: t0.Add(2 * time.Minute), Reason: "held"}); err != nil {
		t.Fatal(err)
	}
	used, total, err := DiskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if total != 8<<20 || frac(used, total) < 0.75 {
		t.Fatalf("tmpfs before: used %d of %d", used, total)
	}
	t.Logf("before: %d of %d bytes used (%.0f %%)", used, total, 100*frac(used, total))

	r := NewRetention(db, dir, RetentionPolicy{HighWater: 0.7, LowWater: 0.4}, nil, nil, nil)
	res, err := r.RunOnce(t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	used, total, err = DiskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after: %d of %d bytes used (%.0f %%), %+v", used, total, 100*frac(used, total), res)
	if frac(used, total) >= 0.4 || res.Used != used || res.SpaceDeleted == 0 {
		t.Errorf("tmpfs after: used %d of %d, result %+v", used, total, res)
	}
	// The held segment (n=1) and the open one (n=12) survive with their
	// files; deleted ones are gone from disk and index, oldest first.
	for n, s := range segs {
		_, statErr := os.Stat(filepath.Join(dir, s.Path))
		_, recErr := db.Segment(s.ID)
		kept := n == 1 || n == 12 || n > res.SpaceDeleted
		if kept != (statErr == nil) || kept != (recErr == nil) {
			t.Errorf("segment %d: kept %t, file %v, record %v", n, kept, statErr, recErr)
		}
	}
}
