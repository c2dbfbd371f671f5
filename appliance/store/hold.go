package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Hold is an evidence hold: a time range of a camera's recordings that
// retention must never delete, whatever their age or the free space.
type Hold struct {
	ID      uint64    // assigned by PutHold
	Camera  string    // camera name; empty holds every camera
	From    time.Time // start of the held range, inclusive
	To      time.Time // end of the held range, exclusive
	Reason  string    // why, for the audit trail
	Created time.Time // set from the clock by PutHold when zero
}

// covers reports whether h protects s: same camera (or h holds all) and the
// ranges overlap. A segment covers [Start, End), or the instant Start while
// End is not after Start (a segment just begun).
func (h Hold) covers(s Segment) bool {
	if h.Camera != "" && h.Camera != s.Camera {
		return false
	}
	if !s.End.After(s.Start) {
		return !s.Start.Before(h.From) && s.Start.Before(h.To)
	}
	return s.Start.Before(h.To) && h.From.Before(s.End)
}

func heldBy(holds []Hold, s Segment) bool {
	for _, h := range holds {
		if h.covers(s) {
			return true
		}
	}
	return false
}

func holdKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// PutHold stores a hold and returns its ID. With h.ID zero it creates a new
// hold with the next ID; otherwise it replaces hold h.ID, which must exist
// (ErrNotFound). From must be before To (ErrInvalid). A hold put before a
// retention run starts deleting a segment protects that segment.
func (db *DB) PutHold(h Hold) (uint64, error) {
	if h.From.IsZero() || h.To.IsZero() || !h.From.Before(h.To) {
		return 0, fmt.Errorf("store: put hold %d: %w: range [%s, %s)", h.ID, ErrInvalid,
			h.From.Format(time.RFC3339), h.To.Format(time.RFC3339))
	}
	if h.Created.IsZero() {
		h.Created = db.clock()
	}
	db.holdMu.Lock()
	defer db.holdMu.Unlock()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHolds)
		if h.ID == 0 {
			id, err := b.NextSequence()
			if err != nil {
				return err
			}
			h.ID = id
		} else if b.Get(holdKey(h.ID)) == nil {
			return ErrNotFound
		}
		v, err := MarshalHold(h)
		if err != nil {
			return err
		}
		return b.Put(holdKey(h.ID), v)
	})
	if err != nil {
		return 0, fmt.Errorf("store: put hold %d: %w", h.ID, err)
	}
	return h.ID, nil
}

func readHolds(tx *bolt.Tx) ([]Hold, error) {
	var out []Hold
	err := tx.Bucket(bucketHolds).ForEach(func(k, v []byte) error {
		h, err := UnmarshalHold(v)
		if err != nil {
			return fmt.Errorf("holds/%x: %w", k, err)
		}
		out = append(out, h)
		return nil
	})
	return out, err
}

// Holds returns every hold ordered by ID.
func (db *DB) Holds() ([]Hold, error) {
	var out []Hold
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		out, err = readHolds(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: holds: %w", err)
	}
	return out, nil
}

// DeleteHold removes hold id, or fails with ErrNotFound.
func (db *DB) DeleteHold(id uint64) error {
	db.holdMu.Lock()
	defer db.holdMu.Unlock()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHolds)
		if b.Get(holdKey(id)) == nil {
			return ErrNotFound
		}
		return b.Delete(holdKey(id))
	})
	if err != nil {
		return fmt.Errorf("store: delete hold %d: %w", id, err)
	}
	return nil
}

// Held reports whether any hold covers s.
func (db *DB) Held(s Segment) (bool, error) {
	var held bool
	err := db.bolt.View(func(tx *bolt.Tx) error {
		holds, err := readHolds(tx)
		held = heldBy(holds, s)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: held %x: %w", s.ID, err)
	}
	return held, nil
}
