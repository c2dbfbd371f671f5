package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// State is the life-cycle state of a segment record.
type State uint8

const (
	// StateOpen: the segment is being recorded. Its file may hold more
	// chunks than the record says; recovery on start closes it.
	StateOpen State = 1
	// StateClosed: the file ends with its trailer and the record is final.
	StateClosed State = 2
	// StateRecovered: the segment was open when the appliance stopped; its
	// file was repaired (truncated to the authentic prefix and given a
	// trailer) and the record is final.
	StateRecovered State = 3
)

func (s State) valid() bool { return s >= StateOpen && s <= StateRecovered }

func (s State) final() bool { return s == StateClosed || s == StateRecovered }

// String returns "open", "closed", "recovered" or "state(N)".
func (s State) String() string {
	switch s {
	case StateOpen:
		return "open"
	case StateClosed:
		return "closed"
	case StateRecovered:
		return "recovered"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Segment is the index record of one segment file.
type Segment struct {
	ID         [16]byte  // random, unique across cameras
	Camera     string    // camera name
	Path       string    // file path relative to the data dir
	Codec      string    // e.g. "avc1.64001f"
	Start      time.Time // wall time of the first fragment; immutable after BeginSegment
	End        time.Time // wall time of the end of the last fragment
	Chunks     uint64    // init + fragments, excluding the trailer
	Bytes      int64     // file size
	Chain      [32]byte  // plaintext hash chain head
	InitHash   [32]byte  // SHA-256 of the init segment
	WrappedKey []byte    // copy of the type-1 wrapped DEK
	State      State
	LogIndex   uint64 // evidence log position; 0 until evidence exists
}

// segKey is the key of a record inside its camera's bucket: Start as
// sign-flipped big-endian Unix nanoseconds (so byte order is time order),
// then the ID.
const segKeyLen = 8 + 16

func segKey(start int64, id [16]byte) []byte {
	k := make([]byte, segKeyLen)
	binary.BigEndian.PutUint64(k, uint64(start)^(1<<63))
	copy(k[8:], id[:])
	return k
}

func timeKey(n int64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(n)^(1<<63))
	return k
}

func keyStart(k []byte) int64 { return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)) }

// clampNanos is UnixNano that saturates instead of overflowing, for bounds
// given by callers.
func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64 + 1
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// location is the value of an index entry: the record's key, then its camera.
type location struct {
	camera string
	key    []byte
}

func (l location) bytes() []byte { return append(slices.Clip(l.key), l.camera...) }

func parseLocation(v []byte) (location, error) {
	if len(v) <= segKeyLen || len(v) > segKeyLen+MaxCameraName {
		return location{}, fmt.Errorf("%w: index entry is %d bytes", ErrCorrupt, len(v))
	}
	return location{key: v[:segKeyLen], camera: string(v[segKeyLen:])}, nil
}

func checkSegment(s Segment) error {
	switch {
	case s.ID == [16]byte{}:
		return fmt.Errorf("%w: zero segment ID", ErrInvalid)
	case s.Camera == "":
		return fmt.Errorf("%w: empty camera", ErrInvalid)
	case s.Start.IsZero():
		return fmt.Errorf("%w: zero start", ErrInvalid)
	case !s.End.IsZero() && s.End.Before(s.Start):
		return fmt.Errorf("%w: end %s before start %s", ErrInvalid, s.End.Format(time.RFC3339Nano), s.Start.Format(time.RFC3339Nano))
	}
	return nil
}

// BeginSegment indexes a new segment, before its file is created. s.State
// must be StateOpen (ErrInvalid otherwise) and s.ID new (ErrExists otherwise).
func (db *DB) BeginSegment(s Segment) error {
	if err := db.beginSegment(s); err != nil {
		return fmt.Errorf("store: begin segment %x: %w", s.ID, err)
	}
	return nil
}

func (db *DB) beginSegment(s Segment) error {
	if s.State != StateOpen {
		return fmt.Errorf("%w: state %s, want open", ErrInvalid, s.State)
	}
	if err := checkSegment(s); err != nil {
		return err
	}
	v, err := MarshalSegment(s)
	if err != nil {
		return err
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketIndex).Get(s.ID[:]) != nil {
			return ErrExists
		}
		return putSegment(tx, s, v)
	})
}

// putSegment writes a new record and its index entries.
func putSegment(tx *bolt.Tx, s Segment, v []byte) error {
	cb, err := tx.Bucket(bucketSegments).CreateBucketIfNotExists([]byte(s.Camera))
	if err != nil {
		return fmt.Errorf("camera bucket %q: %w", s.Camera, err)
	}
	loc := location{camera: s.Camera, key: segKey(s.Start.UnixNano(), s.ID)}
	if err := cb.Put(loc.key, v); err != nil {
		return err
	}
	if err := tx.Bucket(bucketIndex).Put(s.ID[:], loc.bytes()); err != nil {
		return err
	}
	if s.State == StateOpen {
		return tx.Bucket(bucketOpen).Put(s.ID[:], []byte{})
	}
	return growSpan(tx, s)
}

// growSpan records the segment's length as its camera's longest, if it is.
func growSpan(tx *bolt.Tx, s Segment) error {
	d := s.End.Sub(s.Start)
	if d <= 0 {
		return nil
	}
	b := tx.Bucket(bucketSpans)
	if v := b.Get([]byte(s.Camera)); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= int64(d) {
		return nil
	}
	return b.Put([]byte(s.Camera), binary.BigEndian.AppendUint64(nil, uint64(d)))
}

// lookup finds the record of id. The returned location's key is a copy.
func lookup(tx *bolt.Tx, id [16]byte) (Segment, location, error) {
	iv := tx.Bucket(bucketIndex).Get(id[:])
	if iv == nil {
		return Segment{}, location{}, ErrNotFound
	}
	loc, err := parseLocation(iv)
	if err != nil {
		return Segment{}, location{}, fmt.Errorf("segidx/%x: %w", id, err)
	}
	loc.key = bytes.Clone(loc.key)
	cb := tx.Bucket(bucketSegments).Bucket([]byte(loc.camera))
	if cb == nil {
		return Segment{}, location{}, fmt.Errorf("%w: segidx/%x names missing camera bucket %q", ErrCorrupt, id, loc.camera)
	}
	v := cb.Get(loc.key)
	if v == nil {
		return Segment{}, location{}, fmt.Errorf("%w: segidx/%x names missing record %q/%x", ErrCorrupt, id, loc.camera, loc.key)
	}
	s, err := UnmarshalSegment(v)
	if err != nil {
		return Segment{}, location{}, fmt.Errorf("segments/%q/%x: %w", loc.camera, loc.key, err)
	}
	return s, loc, nil
}

// CloseSegment makes an open segment's record final. From s it takes End,
// Chunks, Bytes, Chain, LogIndex and State, which must be StateClosed or
// StateRecovered; the other fields keep their values from BeginSegment, and
// s.Camera and s.Start must match them (ErrInvalid otherwise). It fails with
// ErrNotFound for an unknown ID and ErrNotOpen when the record is final
// already.
func (db *DB) CloseSegment(s Segment) error {
	if !s.State.final() {
		return fmt.Errorf("store: close segment %x: %w: state %s, want closed or recovered", s.ID, ErrInvalid, s.State)
	}
	if err := db.progress(s); err != nil {
		return fmt.Errorf("store: close segment %x: %w", s.ID, err)
	}
	return nil
}

// UpdateSegment records the progress of an open segment: End, Chunks,
// Bytes, Chain and LogIndex, as CloseSegment does, keeping StateOpen. s.State
// must be StateOpen. Errors are those of CloseSegment.
func (db *DB) UpdateSegment(s Segment) error {
	if s.State != StateOpen {
		return fmt.Errorf("store: update segment %x: %w: state %s, want open", s.ID, ErrInvalid, s.State)
	}
	if err := db.progress(s); err != nil {
		return fmt.Errorf("store: update segment %x: %w", s.ID, err)
	}
	return nil
}

func (db *DB) progress(s Segment) error {
	if err := checkSegment(s); err != nil {
		return err
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		cur, loc, err := lookup(tx, s.ID)
		if err != nil {
			return err
		}
		if cur.State != StateOpen {
			return fmt.Errorf("%w: state %s", ErrNotOpen, cur.State)
		}
		if cur.Camera != s.Camera || !cur.Start.Equal(s.Start) {
			return fmt.Errorf("%w: camera %q start %s differ from the record's %q %s", ErrInvalid,
				s.Camera, s.Start.Format(time.RFC3339Nano), cur.Camera, cur.Start.Format(time.RFC3339Nano))
		}
		cur.End, cur.Chunks, cur.Bytes, cur.Chain, cur.LogIndex, cur.State = s.End, s.Chunks, s.Bytes, s.Chain, s.LogIndex, s.State
		v, err := MarshalSegment(cur)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketSegments).Bucket([]byte(loc.camera)).Put(loc.key, v); err != nil {
			return err
		}
		if cur.State == StateOpen {
			return nil
		}
		if err := tx.Bucket(bucketOpen).Delete(s.ID[:]); err != nil {
			return err
		}
		return growSpan(tx, cur)
	})
}

// Segment returns the record of id, or ErrNotFound.
func (db *DB) Segment(id [16]byte) (Segment, error) {
	var s Segment
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		s, _, err = lookup(tx, id)
		return err
	})
	if err != nil {
		return Segment{}, fmt.Errorf("store: segment %x: %w", id, err)
	}
	return s, nil
}

// OpenSegments returns every segment in StateOpen, ordered by Start: the
// work list of crash recovery at start-up.
func (db *DB) OpenSegments() ([]Segment, error) {
	var out []Segment
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOpen).ForEach(func(k, _ []byte) error {
			if len(k) != 16 {
				return fmt.Errorf("%w: open/%x: key is %d bytes", ErrCorrupt, k, len(k))
			}
			s, _, err := lookup(tx, [16]byte(k))
			if err != nil {
				return err
			}
			out = append(out, s)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: open segments: %w", err)
	}
	sortByStart(out)
	return out, nil
}

func sortByStart(ss []Segment) {
	slices.SortStableFunc(ss, func(a, b Segment) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
}

// overlaps reports whether s covers part of [from, to). A closed segment
// covers [Start, End), or the instant Start when End is not after Start. An
// open segment is still growing and covers everything from Start on.
func overlaps(s Segment, from, to time.Time) bool {
	if !s.Start.Before(to) {
		return false
	}
	if s.State == StateOpen {
		return true
	}
	if !s.End.After(s.Start) {
		return !s.Start.Before(from)
	}
	return s.End.After(from)
}

// Segments returns camera's segments that overlap [from, to), ordered by
// Start. Open segments count as reaching to the end of the range. It reads
// only the records near the range: records are keyed by Start, and the
// longest closed segment of the camera bounds how far before from a
// matching record may start.
func (db *DB) Segments(camera string, from, to time.Time) ([]Segment, error) {
	var out []Segment
	if !to.After(from) {
		return out, nil
	}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bucketSegments).Bucket([]byte(camera))
		if cb == nil {
			return nil
		}
		var span int64
		if v := tx.Bucket(bucketSpans).Get([]byte(camera)); len(v) == 8 {
			span = int64(binary.BigEndian.Uint64(v))
		}
		lo := clampNanos(from)
		if lo-span < lo { // no underflow
			lo -= span
		} else {
			lo = math.MinInt64 + 1
		}
		hi := timeKey(clampNanos(to))
		seen := make(map[[16]byte]bool)
		c := cb.Cursor()
		for k, v := c.Seek(timeKey(lo)); k != nil && bytes.Compare(k[:8], hi) < 0; k, v = c.Next() {
			s, err := UnmarshalSegment(v)
			if err != nil {
				return fmt.Errorf("segments/%q/%x: %w", camera, k, err)
			}
			if overlaps(s, from, to) {
				out = append(out, s)
				seen[s.ID] = true
			}
		}
		// Open segments that started before the scanned window still
		// reach into the range.
		return tx.Bucket(bucketOpen).ForEach(func(k, _ []byte) error {
			if len(k) != 16 || seen[[16]byte(k)] {
				return nil
			}
			s, _, err := lookup(tx, [16]byte(k))
			if err != nil {
				return err
			}
			if s.Camera == camera && overlaps(s, from, to) {
				out = append(out, s)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: segments %q [%s, %s): %w", camera,
			from.Format(time.RFC3339), to.Format(time.RFC3339), err)
	}
	sortByStart(out)
	return out, nil
}

// allSegmentsBatch is how many records AllSegments reads per transaction.
const allSegmentsBatch = 256

// AllSegments calls fn for every segment, camera by camera in name order and
// by Start within a camera, and stops at fn's first error, which it returns
// wrapped. Records are read in short read transactions between the calls, so
// fn may write to the index (close, delete); records it adds behind the
// current position are not visited.
func (db *DB) AllSegments(fn func(Segment) error) error {
	var camera, after []byte
	for {
		var batch []Segment
		err := db.bolt.View(func(tx *bolt.Tx) error {
			segs := tx.Bucket(bucketSegments)
			cc := segs.Cursor()
			ck, _ := cc.First()
			if camera != nil {
				ck, _ = cc.Seek(camera)
			}
			for ; ck != nil && len(batch) < allSegmentsBatch; ck, _ = cc.Next() {
				cb := segs.Bucket(ck)
				if cb == nil {
					return fmt.Errorf("%w: segments/%q is not a bucket", ErrCorrupt, ck)
				}
				c := cb.Cursor()
				var k, v []byte
				if bytes.Equal(ck, camera) && after != nil {
					k, v = c.Seek(after)
					if bytes.Equal(k, after) {
						k, v = c.Next()
					}
				} else {
					k, v = c.First()
				}
				for ; k != nil; k, v = c.Next() {
					s, err := UnmarshalSegment(v)
					if err != nil {
						return fmt.Errorf("segments/%q/%x: %w", ck, k, err)
					}
					batch = append(batch, s)
					camera, after = bytes.Clone(ck), bytes.Clone(k)
					if len(batch) == allSegmentsBatch {
						return nil
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: all segments: %w", err)
		}
		for _, s := range batch {
			if err := fn(s); err != nil {
				return fmt.Errorf("store: all segments: segment %x: %w", s.ID, err)
			}
		}
		if len(batch) < allSegmentsBatch {
			return nil
		}
	}
}

// DeleteSegment removes the record of id and its index entries, whatever its
// state, or fails with ErrNotFound. Per the spine contract, the caller
// removes the file first. It does not consult holds: retention does.
func (db *DB) DeleteSegment(id [16]byte) error {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		_, loc, err := lookup(tx, id)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketSegments).Bucket([]byte(loc.camera)).Delete(loc.key); err != nil {
			return err
		}
		if err := tx.Bucket(bucketIndex).Delete(id[:]); err != nil {
			return err
		}
		return tx.Bucket(bucketOpen).Delete(id[:])
	})
	if err != nil {
		return fmt.Errorf("store: delete segment %x: %w", id, err)
	}
	return nil
}

// Candidates returns up to limit segments that retention may delete, oldest
// Start first across all cameras: final (closed or recovered), not under any
// hold, and not refused by skip (nil skips nothing). Open segments are never
// candidates.
func (db *DB) Candidates(limit int, skip func(Segment) bool) ([]Segment, error) {
	var out []Segment
	if limit <= 0 {
		return out, nil
	}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		holds, err := readHolds(tx)
		if err != nil {
			return err
		}
		type head struct {
			name string
			c    *bolt.Cursor
			k, v []byte
		}
		var heads []*head
		segs := tx.Bucket(bucketSegments)
		err = segs.ForEachBucket(func(name []byte) error {
			h := &head{name: string(name), c: segs.Bucket(name).Cursor()}
			h.k, h.v = h.c.First()
			if h.k != nil {
				heads = append(heads, h)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// A linear merge: cameras number in the tens, so picking the
		// smallest head each step is cheaper than a heap's bookkeeping.
		for len(out) < limit && len(heads) > 0 {
			mi := 0
			for i, h := range heads[1:] {
				if bytes.Compare(h.k, heads[mi].k) < 0 {
					mi = i + 1
				}
			}
			h := heads[mi]
			s, err := UnmarshalSegment(h.v)
			if err != nil {
				return fmt.Errorf("segments/%q/%x: %w", h.name, h.k, err)
			}
			if s.State.final() && !heldBy(holds, s) && (skip == nil || !skip(s)) {
				out = append(out, s)
			}
			if h.k, h.v = h.c.Next(); h.k == nil {
				heads = slices.Delete(heads, mi, mi+1)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: retention candidates: %w", err)
	}
	return out, nil
}
