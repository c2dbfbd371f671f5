package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// RetentionPolicy says what retention deletes.
type RetentionPolicy struct {
	// MaxAge is the age limit per camera name. A camera listed here uses its
	// value, where 0 means no age limit; other cameras use DefaultMaxAge.
	MaxAge map[string]time.Duration
	// DefaultMaxAge applies to cameras not in MaxAge; 0 means no age limit.
	DefaultMaxAge time.Duration
	// HighWater and LowWater are fractions (0..1) of the file system in use.
	// When used/total exceeds HighWater, the oldest candidates are deleted
	// until it falls below LowWater. HighWater 0 disables deletion by space.
	HighWater, LowWater float64
}

// Remover deletes a segment's file. Retention calls it before deleting the
// record, so a crash in between leaves a record whose file is gone, which
// recovery and playback report, never an unindexed file that nobody
// reclaims. An error wrapping fs.ErrNotExist counts as success.
type Remover func(s Segment) error

// Usage reports the bytes used and the total size of the file system that
// holds the recordings.
type Usage func() (used, total uint64, err error)

// RetentionResult tells what one retention pass did.
type RetentionResult struct {
	AgeDeleted   int    // segments deleted for being older than their camera's limit
	SpaceDeleted int    // segments deleted to bring usage under the low water mark
	FreedBytes   int64  // sum of the deleted segments' Bytes
	Used, Total  uint64 // usage after the pass
	// SpaceShort is set when usage stayed above LowWater because no
	// deletable segment was left (all are open or held).
	SpaceShort bool
	Skipped    int // deletable segments kept because their removal failed
}

// Retention deletes old segments by age and by disk space. It never deletes
// an open segment or one under a hold.
type Retention struct {
	db      *DB
	dataDir string
	policy  RetentionPolicy
	rm      Remover
	usage   Usage
	log     *slog.Logger
}

// NewRetention returns a retention worker for the segments indexed in db,
// whose files live under dataDir. A nil rm removes dataDir/Path (refusing
// paths that leave dataDir); a nil usage is DiskUsage(dataDir); a nil log
// discards messages.
func NewRetention(db *DB, dataDir string, p RetentionPolicy, rm Remover, usage Usage, log *slog.Logger) *Retention {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if rm == nil {
		rm = func(s Segment) error { return removeFile(dataDir, s.Path) }
	}
	if usage == nil {
		usage = func() (uint64, uint64, error) { return DiskUsage(dataDir) }
	}
	return &Retention{db: db, dataDir: dataDir, policy: p, rm: rm, usage: usage, log: log}
}

func removeFile(dataDir, rel string) error {
	if !filepath.IsLocal(rel) {
		return fmt.Errorf("remove %q: path leaves the data dir", rel)
	}
	return os.Remove(filepath.Join(dataDir, rel))
}

// DiskUsage reports the bytes in use (including blocks reserved for root)
// and the total size of the file system holding dir, from statfs(2).
func DiskUsage(dir string) (used, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("store: statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return (st.Blocks - st.Bfree) * bs, st.Blocks * bs, nil
}

// Run calls RunOnce now and then every interval, with the index's clock,
// until ctx ends; it then returns nil. A failed pass is logged and retried at
// the next tick: a full disk must not stop the appliance.
func (r *Retention) Run(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		return fmt.Errorf("store: retention: interval %s", every)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		res, err := r.RunOnce(r.db.clock())
		if err != nil {
			r.log.Error("retention pass failed", "err", err)
		} else if res.SpaceShort {
			r.log.Warn("disk above low water mark and nothing left to delete", "used", res.Used, "total", res.Total)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// maxAgedPerPass bounds how many aged segments one pass collects in memory;
// the rest wait for the next pass. spaceBatch is how many candidates one read
// transaction of the space phase collects.
const (
	maxAgedPerPass = 32768
	spaceBatch     = 64
)

// RunOnce makes one retention pass at time now: first it deletes the
// segments that ended longer ago than their camera's age limit, then, while
// usage is above HighWater, the oldest candidates until it is below LowWater.
// Removal failures are counted in Skipped and returned joined, after the pass
// has done what it could.
func (r *Retention) RunOnce(now time.Time) (RetentionResult, error) {
	var res RetentionResult
	var errs []error
	failed := make(map[[16]byte]bool)

	old, err := r.aged(now)
	if err != nil {
		return res, fmt.Errorf("store: retention: %w", err)
	}
	for _, s := range old {
		ok, err := r.delete(s)
		if err != nil {
			errs = append(errs, err)
			failed[s.ID] = true
			res.Skipped++
			continue
		}
		if ok {
			res.AgeDeleted++
			res.FreedBytes += s.Bytes
		}
	}

	used, total, err := r.usage()
	if err != nil {
		return res, errors.Join(append(errs, fmt.Errorf("store: retention: usage: %w", err))...)
	}
	if p := r.policy; p.HighWater > 0 && total > 0 && frac(used, total) > p.HighWater {
		r.log.Info("disk above high water mark", "used", used, "total", total)
	space:
		for frac(used, total) >= p.LowWater {
			batch, err := r.db.Candidates(spaceBatch, func(s Segment) bool { return failed[s.ID] })
			if err != nil {
				errs = append(errs, fmt.Errorf("store: retention: %w", err))
				break
			}
			if len(batch) == 0 {
				res.SpaceShort = true
				break
			}
			for _, s := range batch {
				ok, err := r.delete(s)
				if err != nil {
					errs = append(errs, err)
					failed[s.ID] = true
					res.Skipped++
					continue
				}
				if !ok {
					// Held or changed since the read: Candidates
					// will not return it again once held.
					failed[s.ID] = true
					continue
				}
				res.SpaceDeleted++
				res.FreedBytes += s.Bytes
				if used, total, err = r.usage(); err != nil {
					errs = append(errs, fmt.Errorf("store: retention: usage: %w", err))
					break space
				}
				if frac(used, total) < p.LowWater {
					break space
				}
			}
		}
	}
	res.Used, res.Total = used, total
	if res.AgeDeleted+res.SpaceDeleted > 0 {
		r.log.Info("retention pass", "age_deleted", res.AgeDeleted, "space_deleted", res.SpaceDeleted,
			"freed_bytes", res.FreedBytes, "used", used, "total", total)
	}
	return res, errors.Join(errs...)
}

func frac(used, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return float64(used) / float64(total)
}

func (r *Retention) maxAge(camera string) time.Duration {
	if d, ok := r.policy.MaxAge[camera]; ok {
		return d
	}
	return r.policy.DefaultMaxAge
}

// aged returns the final, unheld segments that ended at or before their
// camera's cut-off.
func (r *Retention) aged(now time.Time) ([]Segment, error) {
	var out []Segment
	err := r.db.bolt.View(func(tx *bolt.Tx) error {
		holds, err := readHolds(tx)
		if err != nil {
			return err
		}
		segs := tx.Bucket(bucketSegments)
		return segs.ForEachBucket(func(camera []byte) error {
			age := r.maxAge(string(camera))
			if age <= 0 {
				return nil
			}
			cutoff := now.Add(-age)
			end := clampNanos(cutoff)
			c := segs.Bucket(camera).Cursor()
			for k, v := c.First(); k != nil && keyStart(k) < end && len(out) < maxAgedPerPass; k, v = c.Next() {
				s, err := UnmarshalSegment(v)
				if err != nil {
					return fmt.Errorf("segments/%q/%x: %w", camera, k, err)
				}
				if s.State.final() && !s.End.After(cutoff) && !heldBy(holds, s) {
					out = append(out, s)
				}
			}
			return nil
		})
	})
	return out, err
}

// delete removes one segment's file and then its record, unless the segment
// is gone, no longer final, or now held (ok false, no error). It holds the
// hold lock throughout, so a hold cannot slip in between check and removal.
func (r *Retention) delete(s Segment) (ok bool, err error) {
	r.db.holdMu.Lock()
	defer r.db.holdMu.Unlock()
	cur, err := r.db.Segment(s.ID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: retention: %w", err)
	}
	if !cur.State.final() {
		return false, nil
	}
	held, err := r.db.Held(cur)
	if err != nil {
		return false, fmt.Errorf("store: retention: %w", err)
	}
	if held {
		return false, nil
	}
	if err := r.rm(cur); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("store: retention: remove segment %x %s: %w", cur.ID, cur.Path, err)
	}
	if err := r.db.DeleteSegment(cur.ID); err != nil {
		return false, fmt.Errorf("store: retention: %w", err)
	}
	r.log.Debug("segment deleted", "id", fmt.Sprintf("%x", cur.ID), "camera", cur.Camera, "start", cur.Start)
	return true, nil
}
