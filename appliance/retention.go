package appliance

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/store"
)

// retainer runs retention and finishes its own interrupted deletions. Retention removes a segment's file
// before its record; on a full disk the index commit that deletes the record can fail after the file is
// gone (the recorders took the freed space first). The retainer remembers those segments and deletes
// their records on the next pass and once more when recording has stopped, so the index never keeps a
// record that retention orphaned. A file that disappears any other way stays a problem for `nvr fsck`.
type retainer struct {
	a       *Appliance
	db      *store.DB
	ret     *store.Retention
	mu      sync.Mutex
	removed map[[16]byte]bool // files retention removed whose records may still exist
}

func newRetainer(a *Appliance, db *store.DB) *retainer {
	r := &retainer{a: a, db: db, removed: map[[16]byte]bool{}}
	r.ret = store.NewRetention(db, a.cfg.DataDir, a.cfg.Retention, r.remove, nil, a.log.With("part", "retention"))
	return r
}

// remove deletes a segment's file (inside the data directory only) and remembers it.
func (r *retainer) remove(s store.Segment) error {
	if !filepath.IsLocal(s.Path) {
		return fmt.Errorf("segment path %q leaves the data directory", s.Path)
	}
	err := os.Remove(filepath.Join(r.a.cfg.DataDir, s.Path))
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		r.mu.Lock()
		r.removed[s.ID] = true
		r.mu.Unlock()
	}
	return err
}

// finish deletes the records of files retention removed, and forgets those that are gone.
func (r *retainer) finish() {
	r.mu.Lock()
	ids := make([][16]byte, 0, len(r.removed))
	for id := range r.removed {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	for _, id := range ids {
		_, err := r.db.Segment(id)
		if errors.Is(err, store.ErrNotFound) {
			r.forget(id)
			continue
		}
		if err != nil {
			continue
		}
		if err := r.db.DeleteSegment(id); err == nil || errors.Is(err, store.ErrNotFound) {
			r.forget(id)
			r.a.log.Info("retention: finished an interrupted deletion", "segment", fmt.Sprintf("%x", id))
		}
	}
}

func (r *retainer) forget(id [16]byte) {
	r.mu.Lock()
	delete(r.removed, id)
	r.mu.Unlock()
}

// run runs a retention pass on a timer and whenever a recorder ran out of space, until ctx ends; then it
// finishes what it left half done.
func (r *retainer) run(ctx context.Context, every time.Duration, kick <-chan struct{}) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		res, err := r.ret.RunOnce(time.Now())
		if err != nil {
			r.a.log.Error("retention pass failed", "err", err)
		} else if res.AgeDeleted+res.SpaceDeleted > 0 || res.SpaceShort {
			r.a.log.Info("retention", "age_deleted", res.AgeDeleted, "space_deleted", res.SpaceDeleted,
				"freed_bytes", res.FreedBytes, "space_short", res.SpaceShort)
		}
		r.finish()
		select {
		case <-ctx.Done():
			r.finish()
			return nil
		case <-t.C:
		case <-kick:
		}
	}
}
