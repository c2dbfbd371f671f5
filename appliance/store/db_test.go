package store

import (
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db, err := Open(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if db.bolt.NoFreelistSync {
		t.Error("NoFreelistSync is set")
	}
	if err := db.PutCamera(Camera{Name: "a", URL: "rtsp://10.0.0.2/s"}); err != nil {
		t.Fatal(err)
	}

	// A second opener waits for the file lock and gives up at its timeout.
	if _, err := Open(path, Options{Timeout: 50 * time.Millisecond}, nil); !errors.Is(err, bolt.ErrTimeout) {
		t.Errorf("second Open: err %v, want bbolt's timeout", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.PutCamera(Camera{Name: "b"}); err == nil {
		t.Error("PutCamera after Close succeeded")
	}

	// Reopen keeps data and repairs a widened mode.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path, Options{})
	if _, err := db.Camera("a"); err != nil {
		t.Errorf("camera after reopen: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after reopen %v, want 0600", fi.Mode().Perm())
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return m.Put(keySchema, []byte{schemaVersion + 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}, nil); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open of a newer schema: err %v", err)
	}
}

func TestCameras(t *testing.T) {
	clock := newClock(t0)
	db := openDB(t, filepath.Join(t.TempDir(), "index.db"), Options{Clock: clock.Now})
	for _, c := range []Camera{
		{Name: "yard", URL: "rtsps://10.0.7.13:322/main"},
		{Name: "door", URL: "rtsp://10.0.7.12/stream1", Added: t0.Add(-time.Hour), Disabled: true},
	} {
		if err := db.PutCamera(c); err != nil {
			t.Fatalf("PutCamera(%s): %v", c.Name, err)
		}
	}
	cs, err := db.Cameras()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Name != "door" || cs[1].Name != "yard" {
		t.Fatalf("Cameras = %+v", cs)
	}
	if !cs[1].Added.Equal(t0) || !cs[0].Added.Equal(t0.Add(-time.Hour)) || !cs[0].Disabled {
		t.Errorf("Cameras = %+v", cs)
	}
	if _, err := db.Camera("attic"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown camera: err %v, want ErrNotFound", err)
	}
	for _, c := range []Camera{
		{Name: ""},
		{Name: "x", URL: "rtsp://admin:secret@10.0.7.12/stream1"},
		{Name: "x", URL: "rtsp://admin@10.0.7.12/stream1"},
		{Name: strings.Repeat("n", MaxCameraName+1)},
	} {
		if err := db.PutCamera(c); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutCamera(%q): err %v, want ErrInvalid", c.URL, err)
		}
		if err := db.PutCamera(c); err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

func TestSegmentLifecycle(t *testing.T) {
	db := newDB(t)
	s := testSegment("door", 1, 1, t0, 0, StateOpen)
	if err := db.BeginSegment(s); err != nil {
		t.Fatal(err)
	}
	if err := db.BeginSegment(s); !errors.Is(err, ErrExists) {
		t.Errorf("second begin: err %v, want ErrExists", err)
	}
	if err := db.BeginSegment(testSegment("door", 1, 2, t0, 0, StateClosed)); !errors.Is(err, ErrInvalid) {
		t.Errorf("begin closed: err %v, want ErrInvalid", err)
	}
	open, err := db.OpenSegments()
	if err != nil || len(open) != 1 || !sameSegment(open[0], s) {
		t.Fatalf("OpenSegments = %+v, %v", open, err)
	}

	up := s
	up.End, up.Chunks, up.Bytes = t0.Add(30*time.Second), 31, 7_000_000
	if err := db.UpdateSegment(up); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Segment(s.ID); !sameSegment(got, up) {
		t.Errorf("after update: %+v", got)
	}

	cl := up
	cl.End, cl.Chunks, cl.Bytes, cl.State, cl.LogIndex = t0.Add(time.Minute), 61, 15_000_000, StateClosed, 42
	cl.Chain[31] = 9
	cl.Path, cl.WrappedKey = "elsewhere", nil // not progress fields: ignored
	if err := db.CloseSegment(cl); err != nil {
		t.Fatal(err)
	}
	want := cl
	want.Path, want.WrappedKey = s.Path, s.WrappedKey
	if got, _ := db.Segment(s.ID); !sameSegment(got, want) {
		t.Errorf("after close:\n got %+v\nwant %+v", got, want)
	}
	if open, _ := db.OpenSegments(); len(open) != 0 {
		t.Errorf("OpenSegments after close = %+v", open)
	}
	if err := db.CloseSegment(cl); !errors.Is(err, ErrNotOpen) {
		t.Errorf("second close: err %v, want ErrNotOpen", err)
	}
	if err := db.UpdateSegment(up); !errors.Is(err, ErrNotOpen) {
		t.Errorf("update after close: err %v, want ErrNotOpen", err)
	}

	other := testSegment("door", 1, 3, t0, 0, StateOpen)
	if err := db.BeginSegment(other); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		edit func(*Segment)
		want error
	}{
		{"unknown id", func(s *Segment) { s.ID[0] ^= 0xff }, ErrNotFound},
		{"camera moved", func(s *Segment) { s.Camera = "yard" }, ErrInvalid},
		{"start moved", func(s *Segment) { s.Start = s.Start.Add(time.Second) }, ErrInvalid},
		{"end before start", func(s *Segment) { s.End = s.Start.Add(-time.Second) }, ErrInvalid},
		{"state open", func(s *Segment) { s.State = StateOpen }, ErrInvalid},
		{"zero id", func(s *Segment) { s.ID = [16]byte{} }, ErrInvalid},
	}
	for _, tc := range bad {
		c := other
		c.State, c.End = StateRecovered, c.Start.Add(time.Second)
		tc.edit(&c)
		if err := db.CloseSegment(c); !errors.Is(err, tc.want) {
			t.Errorf("close with %s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := db.DeleteSegment(other.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteSegment(other.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: err %v, want ErrNotFound", err)
	}
	if _, err := db.Segment(other.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("segment after delete: err %v, want ErrNotFound", err)
	}
	if open, _ := db.OpenSegments(); len(open) != 0 {
		t.Errorf("OpenSegments after deleting the open one = %+v", open)
	}
	for _, s := range []Segment{
		{ID: testID(9, 9), Start: t0, State: StateOpen},
		{ID: testID(9, 9), Camera: "x", State: StateOpen},
		{Camera: "x", Start: t0, State: StateOpen},
	} {
		if err := db.BeginSegment(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("BeginSegment(%+v): err %v, want ErrInvalid", s, err)
		}
	}
}

// TestSegmentsQuery compares range queries against a brute-force filter over
// a mixed index: 60 s segments, a long one, a zero-length one, an open one,
// pre-epoch times and several cameras.
func TestSegmentsQuery(t *testing.T) {
	db := newDB(t)
	var all []Segment
	add := func(s Segment) {
		mustStore(t, db, s)
		all = append(all, s)
	}
	for cam, name := range []string{"a", "b", "c"} {
		for n := range 50 {
			add(testSegment(name, cam, n, t0.Add(time.Duration(n)*time.Minute), time.Minute, StateClosed))
		}
	}
	add(testSegment("a", 7, 100, t0.Add(-3*time.Hour), 2*time.Hour, StateRecovered))
	add(testSegment("a", 7, 101, t0.Add(10*time.Second), 0, StateClosed))
	add(testSegment("b", 7, 102, t0.Add(-5*time.Hour), 20*time.Second, StateOpen))
	add(testSegment("c", 7, 103, time.Date(1969, 12, 31, 23, 59, 0, 0, time.UTC), 2*time.Minute, StateClosed))

	rng := rand.New(rand.NewPCG(1, 2))
	check := func(camera string, from, to time.Time) {
		t.Helper()
		got, err := db.Segments(camera, from, to)
		if err != nil {
			t.Fatal(err)
		}
		var want []Segment
		for _, s := range all {
			if s.Camera == camera && overlaps(s, from, to) {
				want = append(want, s)
			}
		}
		sortByStart(want)
		if !sameIDs(ids(got), ids(want)) {
			t.Fatalf("Segments(%s, %s, %s): got %d, want %d", camera, from, to, len(got), len(want))
		}
	}
	for range 500 {
		from := t0.Add(time.Duration(rng.Int64N(int64(7*time.Hour))) - 6*time.Hour)
		to := from.Add(time.Duration(rng.Int64N(int64(90 * time.Minute))))
		check([]string{"a", "b", "c", "none"}[rng.IntN(4)], from, to)
	}
	// Hand-picked edges.
	check("a", t0.Add(time.Minute), t0.Add(2*time.Minute)) // exactly one segment, not its neighbours
	check("a", t0.Add(-time.Hour), t0.Add(-time.Hour+time.Second))
	check("a", t0.Add(10*time.Second), t0.Add(11*time.Second))
	check("b", t0.Add(40*time.Minute), t0.Add(41*time.Minute)) // the open one reaches here
	check("c", time.Time{}, t0.Add(100*time.Hour))
	check("c", time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1970, 1, 1, 0, 1, 0, 0, time.UTC))
	got, err := db.Segments("a", t0.Add(time.Minute), t0.Add(2*time.Minute))
	if err != nil || len(got) != 1 || got[0].ID != testID(0, 1) {
		t.Errorf("one-minute window = %v, %v", ids(got), err)
	}
	if got, _ := db.Segments("a", t0, t0); len(got) != 0 {
		t.Errorf("empty range returned %d", len(got))
	}
}

func TestAllSegments(t *testing.T) {
	db := newDB(t)
	const per = 300 // more than one batch per camera
	for cam, name := range []string{"b", "a"} {
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			for n := range per {
				s := testSegment(name, cam, n, t0.Add(time.Duration(per-n)*time.Minute), time.Minute, StateClosed)
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
			t.Fatal(err)
		}
	}
	var seen []Segment
	err := db.AllSegments(func(s Segment) error {
		seen = append(seen, s)
		if len(seen)%3 == 0 {
			return db.DeleteSegment(s.ID) // writing from fn is allowed
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2*per {
		t.Fatalf("visited %d, want %d", len(seen), 2*per)
	}
	for i := 1; i < len(seen); i++ {
		a, b := seen[i-1], seen[i]
		if a.Camera > b.Camera || (a.Camera == b.Camera && !a.Start.Before(b.Start)) {
			t.Fatalf("order broken at %d: %s %s then %s %s", i, a.Camera, a.Start, b.Camera, b.Start)
		}
	}
	stop := errors.New("stop")
	var n int
	if err := db.AllSegments(func(Segment) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("AllSegments stop: err %v after %d calls", err, n)
	}
}

func TestCandidates(t *testing.T) {
	db := newDB(t)
	// Interleaved starts across cameras: a0 b0 a1 b1 ...
	for n := range 6 {
		for cam, name := range []string{"a", "b"} {
			st := StateClosed
			if n == 5 {
				st = StateOpen
			}
			if n == 2 && name == "b" {
				st = StateRecovered
			}
			start := t0.Add(time.Duration(2*n+cam) * time.Minute)
			mustStore(t, db, testSegment(name, cam, n, start, time.Minute, st))
		}
	}
	if _, err := db.PutHold(Hold{Camera: "a", From: t0.Add(4 * time.Minute), To: t0.Add(5 * time.Minute), Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	got, err := db.Candidates(100, nil)
	if err != nil {
		t.Fatal(err)
	}
	// a2 (start +4m) is held; a5 and b5 are open.
	want := [][16]byte{testID(0, 0), testID(1, 0), testID(0, 1), testID(1, 1), testID(1, 2), testID(0, 3), testID(1, 3), testID(0, 4), testID(1, 4)}
	if !sameIDs(ids(got), want) {
		t.Errorf("Candidates:\n got %x\nwant %x", ids(got), want)
	}
	got, _ = db.Candidates(3, func(s Segment) bool { return s.Camera == "a" })
	if !sameIDs(ids(got), [][16]byte{testID(1, 0), testID(1, 1), testID(1, 2)}) {
		t.Errorf("Candidates(3, skip a) = %x", ids(got))
	}
	if got, _ := db.Candidates(0, nil); len(got) != 0 {
		t.Errorf("Candidates(0) = %d", len(got))
	}
}

func TestHolds(t *testing.T) {
	clock := newClock(t0)
	db := openDB(t, filepath.Join(t.TempDir(), "index.db"), Options{Clock: clock.Now})
	id1, err := db.PutHold(Hold{Camera: "door", From: t0, To: t0.Add(time.Hour), Reason: "case 1"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	id2, err := db.PutHold(Hold{From: t0.Add(5 * time.Hour), To: t0.Add(6 * time.Hour), Reason: "all cameras"})
	if err != nil {
		t.Fatal(err)
	}
	if id1 == 0 || id2 <= id1 {
		t.Fatalf("ids %d, %d", id1, id2)
	}
	hs, err := db.Holds()
	if err != nil || len(hs) != 2 || hs[0].ID != id1 || !hs[0].Created.Equal(t0) || !hs[1].Created.Equal(t0.Add(time.Minute)) {
		t.Fatalf("Holds = %+v, %v", hs, err)
	}
	if _, err := db.PutHold(Hold{ID: id1, Camera: "door", From: t0, To: t0.Add(2 * time.Hour), Reason: "widened"}); err != nil {
		t.Errorf("replace: %v", err)
	}
	if _, err := db.PutHold(Hold{ID: 99, From: t0, To: t0.Add(time.Hour)}); !errors.Is(err, ErrNotFound) {
		t.Errorf("replace unknown: err %v, want ErrNotFound", err)
	}
	for _, h := range []Hold{{From: t0, To: t0}, {From: t0, To: t0.Add(-1)}, {To: t0}} {
		if _, err := db.PutHold(h); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutHold(%v..%v): err %v, want ErrInvalid", h.From, h.To, err)
		}
	}

	held := []struct {
		name       string
		camera     string
		start, end time.Time
		want       bool
	}{
		{"inside", "door", t0.Add(time.Minute), t0.Add(2 * time.Minute), true},
		{"straddles start", "door", t0.Add(-30 * time.Second), t0.Add(30 * time.Second), true},
		{"ends at From", "door", t0.Add(-time.Minute), t0, false},
		{"starts at To", "door", t0.Add(2 * time.Hour), t0.Add(2*time.Hour + time.Minute), false},
		{"just begun inside", "door", t0.Add(time.Hour), time.Time{}, true},
		{"just begun at To", "door", t0.Add(2 * time.Hour), t0.Add(2 * time.Hour), false},
		{"other camera", "yard", t0.Add(time.Minute), t0.Add(2 * time.Minute), false},
		{"all-camera hold", "yard", t0.Add(5*time.Hour + time.Minute), t0.Add(5*time.Hour + 2*time.Minute), true},
	}
	for _, tc := range held {
		got, err := db.Held(Segment{Camera: tc.camera, Start: tc.start, End: tc.end})
		if err != nil || got != tc.want {
			t.Errorf("Held(%s) = %t, %v; want %t", tc.name, got, err, tc.want)
		}
	}
	if err := db.DeleteHold(id1); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteHold(id1); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteHold: err %v, want ErrNotFound", err)
	}
	if got, _ := db.Held(Segment{Camera: "door", Start: t0, End: t0.Add(time.Minute)}); got {
		t.Error("held after the hold was deleted")
	}
}

// TestVerifyFindsDamage breaks one invariant at a time behind the API's back,
// checks that Verify and the readers report ErrCorrupt, then undoes it.
func TestVerifyFindsDamage(t *testing.T) {
	db := newDB(t)
	s := testSegment("door", 1, 1, t0, time.Minute, StateClosed)
	mustStore(t, db, s)
	o := testSegment("door", 1, 2, t0.Add(time.Minute), 0, StateOpen)
	mustStore(t, db, o)
	key := segKey(s.Start.UnixNano(), s.ID)
	good, _ := MarshalSegment(s)
	goodIdx := location{camera: "door", key: key}.bytes()
	put := func(bucket []byte, k, v []byte) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			if string(bucket) == "door" { // the camera's segment bucket
				b = tx.Bucket(bucketSegments).Bucket(bucket)
			}
			if v == nil {
				return b.Delete(k)
			}
			return b.Put(k, v)
		}
	}
	door := []byte("door")
	dangling := testID(5, 5)
	damage := []struct {
		name        string
		break_, fix func(*bolt.Tx) error
	}{
		{"garbage record", put(door, key, []byte{1, 2, 3}), put(door, key, good)},
		{"future version", put(door, key, append([]byte{9}, good[1:]...)), put(door, key, good)},
		{"missing index entry", put(bucketIndex, s.ID[:], nil), put(bucketIndex, s.ID[:], goodIdx)},
		{"dangling index entry", put(bucketIndex, dangling[:], goodIdx), put(bucketIndex, dangling[:], nil)},
		{"stale open entry", put(bucketOpen, s.ID[:], []byte{}), put(bucketOpen, s.ID[:], nil)},
		{"lost open entry", put(bucketOpen, o.ID[:], nil), put(bucketOpen, o.ID[:], []byte{})},
		{"bad camera", put(bucketCameras, []byte("x"), []byte{1}), put(bucketCameras, []byte("x"), nil)},
		{"bad hold", put(bucketHolds, holdKey(3), []byte{1, 0}), put(bucketHolds, holdKey(3), nil)},
		{"shrunk span", put(bucketSpans, door, make([]byte, 8)), put(bucketSpans, door, []byte{0, 0, 0, 0x0d, 0xf8, 0x47, 0x58, 0x00})},
	}
	for _, d := range damage {
		t.Run(d.name, func(t *testing.T) {
			if err := db.bolt.Update(d.break_); err != nil {
				t.Fatal(err)
			}
			if err := db.Verify(); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Verify: err %v, want ErrCorrupt", err)
			} else {
				t.Logf("Verify: %v", err)
			}
			if err := db.bolt.Update(d.fix); err != nil {
				t.Fatal(err)
			}
			if err := db.Verify(); err != nil {
				t.Fatalf("Verify after fix: %v", err)
			}
		})
	}
	// Readers name the key of a record that fails to decode.
	if err := db.bolt.Update(put(door, key, []byte{1})); err != nil {
		t.Fatal(err)
	}
	_, err := db.Segment(s.ID)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("%x", key)) {
		t.Errorf("Segment of a corrupt record: %v", err)
	}
	if _, err := db.Segments("door", t0, t0.Add(time.Hour)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Segments over a corrupt record: %v", err)
	}
	if err := db.bolt.Update(put(door, key, good)); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrent runs writers, readers and Verify at once; run with -race.
func TestConcurrent(t *testing.T) {
	db := newDB(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cam := "cam" + strconv.Itoa(w)
			for n := range 40 {
				s := testSegment(cam, w, n, t0.Add(time.Duration(n)*time.Minute), 0, StateOpen)
				if err := db.BeginSegment(s); err != nil {
					errs <- err
					return
				}
				s.End, s.State = s.Start.Add(time.Minute), StateClosed
				if err := db.CloseSegment(s); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := db.Segments("cam"+strconv.Itoa(r), t0, t0.Add(time.Hour)); err != nil {
					errs <- err
					return
				}
				if _, err := db.Candidates(10, nil); err != nil {
					errs <- err
					return
				}
			}
			if err := db.Verify(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestLeafPackage enforces the architecture: store imports no project package.
func TestLeafPackage(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var sawDoc bool
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(f, "_test.go") && af.Doc != nil && strings.HasPrefix(af.Doc.Text(), "Package store ") {
			sawDoc = true
		}
		for _, imp := range af.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); strings.HasPrefix(p, "github.com/edgenvr/nvr") {
				t.Errorf("%s imports project package %s", f, p)
			}
		}
	}
	if !sawDoc {
		t.Error("no package doc comment")
	}
}
