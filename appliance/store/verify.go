package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// maxVerifyErrors bounds how many problems Verify reports.
const maxVerifyErrors = 20

// Verify checks the whole index: bbolt's own page-level consistency check,
// then this package's invariants:
//   - every bucket exists and the schema version is known;
//   - every camera, hold and segment record decodes and matches its key;
//   - every segment record has an index entry pointing back at it, and every
//     index entry points at a record;
//   - the open set holds exactly the segments in StateOpen;
//   - no closed segment is longer than its camera's recorded span, so range
//     queries cannot miss it.
//
// It returns nil or an error wrapping ErrCorrupt (or bbolt's error) listing
// up to 20 problems. Verify runs inside a write transaction that it rolls
// back, so it blocks writers while it reads every page.
func (db *DB) Verify() error {
	tx, err := db.bolt.Begin(true)
	if err != nil {
		return fmt.Errorf("store: verify: %w", err)
	}
	defer func() { _ = tx.Rollback() }()

	var errs []error
	add := func(err error) bool {
		errs = append(errs, err)
		return len(errs) < maxVerifyErrors
	}
	for err := range tx.Check() {
		if !add(fmt.Errorf("bbolt: %w", err)) {
			break
		}
	}
	if len(errs) == 0 {
		verifyRecords(tx, add)
	}
	if len(errs) > 0 {
		return fmt.Errorf("store: verify %s: %w", db.path, errors.Join(errs...))
	}
	return nil
}

// verifyRecords checks the invariants; add returns false to stop early.
func verifyRecords(tx *bolt.Tx, add func(error) bool) {
	bad := func(format string, args ...any) bool {
		return add(fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
	}
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			bad("bucket %s missing", name)
			return
		}
	}
	if v := tx.Bucket(bucketMeta).Get(keySchema); len(v) != 1 || v[0] != schemaVersion {
		if !bad("meta/schema is %x", v) {
			return
		}
	}
	stop := errors.New("stop")
	check := func(ok bool) error {
		if !ok {
			return stop
		}
		return nil
	}
	err := tx.Bucket(bucketCameras).ForEach(func(k, v []byte) error {
		c, err := unmarshalCamera(v)
		switch {
		case err != nil:
			return check(add(fmt.Errorf("cameras/%q: %w", k, err)))
		case c.Name != string(k):
			return check(bad("cameras/%q holds camera %q", k, c.Name))
		}
		return nil
	})
	if err != nil {
		return
	}
	err = tx.Bucket(bucketHolds).ForEach(func(k, v []byte) error {
		h, err := UnmarshalHold(v)
		switch {
		case err != nil:
			return check(add(fmt.Errorf("holds/%x: %w", k, err)))
		case !bytes.Equal(k, holdKey(h.ID)):
			return check(bad("holds/%x holds hold %d", k, h.ID))
		}
		return nil
	})
	if err != nil {
		return
	}

	index, open, spans := tx.Bucket(bucketIndex), tx.Bucket(bucketOpen), tx.Bucket(bucketSpans)
	segs := tx.Bucket(bucketSegments)
	var records int
	err = segs.ForEach(func(camera, v []byte) error {
		cb := segs.Bucket(camera)
		if v != nil || cb == nil {
			return check(bad("segments/%q is not a bucket", camera))
		}
		var span int64
		if sv := spans.Get(camera); sv != nil {
			if len(sv) != 8 {
				return check(bad("spans/%q is %d bytes", camera, len(sv)))
			}
			span = int64(binary.BigEndian.Uint64(sv))
		}
		return cb.ForEach(func(k, v []byte) error {
			records++
			s, err := UnmarshalSegment(v)
			if err != nil {
				return check(add(fmt.Errorf("segments/%q/%x: %w", camera, k, err)))
			}
			where := fmt.Sprintf("segments/%q/%x", camera, k)
			if len(k) != segKeyLen || s.Camera != string(camera) || !bytes.Equal(k, segKey(s.Start.UnixNano(), s.ID)) {
				return check(bad("%s holds segment %x of %q starting %s", where, s.ID, s.Camera, s.Start))
			}
			iv := index.Get(s.ID[:])
			if iv == nil {
				return check(bad("%s has no index entry", where))
			}
			if loc, err := parseLocation(iv); err != nil || loc.camera != string(camera) || !bytes.Equal(loc.key, k) {
				return check(bad("%s: index entry %x points elsewhere", where, iv))
			}
			isOpen := open.Get(s.ID[:]) != nil
			if isOpen != (s.State == StateOpen) {
				return check(bad("%s: state %s but open set membership %t", where, s.State, isOpen))
			}
			if s.State.final() && int64(s.End.Sub(s.Start)) > span {
				return check(bad("%s: length %s exceeds camera span %d ns", where, s.End.Sub(s.Start), span))
			}
			return nil
		})
	})
	if err != nil {
		return
	}
	var entries int
	err = index.ForEach(func(k, v []byte) error {
		entries++
		if len(k) != 16 {
			return check(bad("segidx/%x: key is %d bytes", k, len(k)))
		}
		if _, _, err := lookup(tx, [16]byte(k)); err != nil {
			return check(add(fmt.Errorf("segidx/%x: %w", k, err)))
		}
		return nil
	})
	if err != nil {
		return
	}
	if entries != records {
		if !bad("%d index entries for %d segment records", entries, records) {
			return
		}
	}
	_ = open.ForEach(func(k, _ []byte) error {
		if index.Get(k) == nil {
			return check(bad("open/%x has no segment", k))
		}
		return nil
	})
}
