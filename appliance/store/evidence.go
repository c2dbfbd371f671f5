package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Evidence log buckets. The store keeps the evidence log's bytes without
// knowing the tree math: leaves, the hashes the caller computed for them, the
// signed checkpoints, and small metadata values.
var (
	bucketLogLeaves = []byte("evleaves") // big-endian leaf index -> leaf bytes
	bucketLogHashes = []byte("evhashes") // big-endian stored-hash index -> 32-byte hash
	bucketLogCkpts  = []byte("evckpts")  // big-endian tree size -> signed checkpoint (the latest one of that size)
	bucketLogMeta   = []byte("evmeta")   // key -> value (device certificate, per-camera log heads)
)

// ErrLogPosition is returned by AppendLog when the index given is not the
// log's current size: another appender got there first, or the caller's view
// is stale. The log never forks: nothing is written.
var ErrLogPosition = errors.New("log position taken")

// maxLogLeaf bounds one leaf, and maxLogValue a checkpoint or metadata value.
const (
	maxLogLeaf  = 64 << 10
	maxLogValue = 1 << 20
)

func u64Key(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// LogSize returns the number of leaves in the evidence log.
func (db *DB) LogSize() (uint64, error) {
	var n uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		n, err = logSize(tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: log size: %w", err)
	}
	return n, nil
}

func logSize(tx *bolt.Tx) (uint64, error) {
	k, _ := tx.Bucket(bucketLogLeaves).Cursor().Last()
	if k == nil {
		return 0, nil
	}
	if len(k) != 8 {
		return 0, fmt.Errorf("%w: evleaves key %x", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k) + 1, nil
}

// AppendLog appends leaf at position index, which must be the log's current
// size (ErrLogPosition otherwise), in one transaction with: the hashes the
// caller computed for it, stored from hash index firstHash on; the metadata
// pairs in meta; and, when segment is not the zero ID, the segment record's
// LogIndex set to index (the segment must exist, be final and not logged
// yet: ErrNotFound, ErrInvalid otherwise).
func (db *DB) AppendLog(index uint64, leaf []byte, firstHash int64, hashes [][32]byte, segment [16]byte, meta map[string][]byte) error {
	if len(leaf) == 0 || len(leaf) > maxLogLeaf || firstHash < 0 {
		return fmt.Errorf("store: append log %d: %w: leaf of %d bytes, first hash %d", index, ErrInvalid, len(leaf), firstHash)
	}
	for k, v := range meta {
		if k == "" || len(v) > maxLogValue {
			return fmt.Errorf("store: append log %d: %w: metadata %q", index, ErrInvalid, k)
		}
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		n, err := logSize(tx)
		if err != nil {
			return err
		}
		if n != index {
			return fmt.Errorf("%w: log size is %d", ErrLogPosition, n)
		}
		if segment != [16]byte{} {
			s, loc, err := lookup(tx, segment)
			if err != nil {
				return err
			}
			if !s.State.final() || s.LogIndex != 0 {
				return fmt.Errorf("%w: segment %x is %s with log index %d", ErrInvalid, segment, s.State, s.LogIndex)
			}
			s.LogIndex = index
			v, err := MarshalSegment(s)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketSegments).Bucket([]byte(loc.camera)).Put(loc.key, v); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketLogLeaves).Put(u64Key(index), bytes.Clone(leaf)); err != nil {
			return err
		}
		hb := tx.Bucket(bucketLogHashes)
		for i, h := range hashes {
			if err := hb.Put(u64Key(uint64(firstHash)+uint64(i)), bytes.Clone(h[:])); err != nil {
				return err
			}
		}
		mb := tx.Bucket(bucketLogMeta)
		for k, v := range meta {
			if err := mb.Put([]byte(k), bytes.Clone(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: append log %d: %w", index, err)
	}
	return nil
}

// LogLeaf returns the leaf at index, or ErrNotFound.
func (db *DB) LogLeaf(index uint64) ([]byte, error) {
	var out []byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLogLeaves).Get(u64Key(index))
		if v == nil {
			return ErrNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: log leaf %d: %w", index, err)
	}
	return out, nil
}

// LogHashes returns the stored hashes at the given hash indexes, in order,
// or ErrNotFound naming the first that is missing.
func (db *DB) LogHashes(indexes []int64) ([][32]byte, error) {
	out := make([][32]byte, len(indexes))
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogHashes)
		for i, x := range indexes {
			if x < 0 {
				return fmt.Errorf("%w: hash index %d", ErrInvalid, x)
			}
			v := b.Get(u64Key(uint64(x)))
			if v == nil {
				return fmt.Errorf("%w: hash %d", ErrNotFound, x)
			}
			if len(v) != 32 {
				return fmt.Errorf("%w: hash %d is %d bytes", ErrCorrupt, x, len(v))
			}
			out[i] = [32]byte(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: log hashes: %w", err)
	}
	return out, nil
}

// PutCheckpoint stores a signed checkpoint of a tree of size leaves,
// replacing an earlier one of the same size (the newer one attests a later
// time). It refuses a size beyond the log (ErrInvalid).
func (db *DB) PutCheckpoint(size uint64, signed []byte) error {
	if len(signed) == 0 || len(signed) > maxLogValue {
		return fmt.Errorf("store: put checkpoint %d: %w: %d bytes", size, ErrInvalid, len(signed))
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		n, err := logSize(tx)
		if err != nil {
			return err
		}
		if size > n {
			return fmt.Errorf("%w: size %d beyond the log's %d leaves", ErrInvalid, size, n)
		}
		return tx.Bucket(bucketLogCkpts).Put(u64Key(size), bytes.Clone(signed))
	})
	if err != nil {
		return fmt.Errorf("store: put checkpoint %d: %w", size, err)
	}
	return nil
}

// LatestCheckpoint returns the stored checkpoint of the largest tree, or
// size 0 and nil when there is none.
func (db *DB) LatestCheckpoint() (uint64, []byte, error) {
	var size uint64
	var out []byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketLogCkpts).Cursor().Last()
		if k == nil {
			return nil
		}
		if len(k) != 8 {
			return fmt.Errorf("%w: evckpts key %x", ErrCorrupt, k)
		}
		size, out = binary.BigEndian.Uint64(k), bytes.Clone(v)
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("store: latest checkpoint: %w", err)
	}
	return size, out, nil
}

// CheckpointAtLeast returns the stored checkpoint of the smallest tree of at
// least size leaves, or ErrNotFound.
func (db *DB) CheckpointAtLeast(size uint64) (uint64, []byte, error) {
	var got uint64
	var out []byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketLogCkpts).Cursor().Seek(u64Key(size))
		if k == nil {
			return ErrNotFound
		}
		if len(k) != 8 {
			return fmt.Errorf("%w: evckpts key %x", ErrCorrupt, k)
		}
		got, out = binary.BigEndian.Uint64(k), bytes.Clone(v)
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("store: checkpoint of at least %d leaves: %w", size, err)
	}
	return got, out, nil
}

// Checkpoints calls fn for every stored checkpoint by increasing size and
// stops at fn's first error, which it returns wrapped. The values are copies.
func (db *DB) Checkpoints(fn func(size uint64, signed []byte) error) error {
	var sizes []uint64
	var notes [][]byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLogCkpts).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("%w: evckpts key %x", ErrCorrupt, k)
			}
			sizes = append(sizes, binary.BigEndian.Uint64(k))
			notes = append(notes, bytes.Clone(v))
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("store: checkpoints: %w", err)
	}
	for i := range sizes {
		if err := fn(sizes[i], notes[i]); err != nil {
			return fmt.Errorf("store: checkpoints: size %d: %w", sizes[i], err)
		}
	}
	return nil
}

// EvidenceMeta returns the evidence metadata value under key, or nil when
// there is none.
func (db *DB) EvidenceMeta(key string) ([]byte, error) {
	var out []byte
	err := db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketLogMeta).Get([]byte(key)); v != nil {
			out = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: evidence meta %q: %w", key, err)
	}
	return out, nil
}

// PutEvidenceMeta stores an evidence metadata value.
func (db *DB) PutEvidenceMeta(key string, val []byte) error {
	if key == "" || len(val) > maxLogValue {
		return fmt.Errorf("store: put evidence meta %q: %w", key, ErrInvalid)
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLogMeta).Put([]byte(key), bytes.Clone(val))
	})
	if err != nil {
		return fmt.Errorf("store: put evidence meta %q: %w", key, err)
	}
	return nil
}

// VerifyLog checks the evidence log's buckets and returns nil or an error
// wrapping ErrCorrupt listing up to 20 problems. [DB.Verify] checks the rest
// of the index.
func (db *DB) VerifyLog() error {
	var errs []error
	bad := func(format string, args ...any) bool {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
		return len(errs) < maxVerifyErrors
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error { verifyLog(tx, bad); return nil }); err != nil {
		return fmt.Errorf("store: verify log: %w", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("store: verify log %s: %w", db.path, errors.Join(errs...))
	}
	return nil
}

// verifyLog checks the evidence buckets: leaf keys are dense from 0, hashes
// are 32 bytes, and no checkpoint names a tree larger than the log.
func verifyLog(tx *bolt.Tx, bad func(format string, args ...any) bool) {
	var next uint64
	stop := errors.New("stop")
	err := tx.Bucket(bucketLogLeaves).ForEach(func(k, v []byte) error {
		if len(k) != 8 || binary.BigEndian.Uint64(k) != next || len(v) == 0 {
			if !bad("evleaves/%x: want leaf %d", k, next) {
				return stop
			}
		}
		next++
		return nil
	})
	if err != nil {
		return
	}
	err = tx.Bucket(bucketLogHashes).ForEach(func(k, v []byte) error {
		if len(k) != 8 || len(v) != 32 {
			if !bad("evhashes/%x: %d-byte key, %d-byte hash", k, len(k), len(v)) {
				return stop
			}
		}
		return nil
	})
	if err != nil {
		return
	}
	_ = tx.Bucket(bucketLogCkpts).ForEach(func(k, _ []byte) error {
		if len(k) != 8 || binary.BigEndian.Uint64(k) > next {
			if !bad("evckpts/%x: checkpoint beyond the log's %d leaves", k, next) {
				return stop
			}
		}
		return nil
	})
}
