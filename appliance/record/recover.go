package record

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
)

// RecoverIndex is what recovery needs of the index.
type RecoverIndex interface {
	OpenSegments() ([]store.Segment, error)
	CloseSegment(store.Segment) error
	DeleteSegment(id [16]byte) error
	AllSegments(fn func(store.Segment) error) error
}

// RecoverReport says what start-up recovery did.
type RecoverReport struct {
	Repaired       int   // open segments closed after their last authentic chunk
	TruncatedBytes int64 // bytes cut off torn or unauthentic tails
	Removed        int   // open segments with no usable video, removed
	Orphans        int   // segment files without a record, removed
}

// Recover makes the data directory consistent after any stop, clean or not. Every segment the index still
// holds open is cut after its last authentic chunk, given its trailer and closed as recovered; one with no
// recorded fragment is removed. Segment files that no record names are removed (a record is always written
// before its file). It needs the vault key's ECDH to authenticate chunks, so it runs at start-up, before
// recording.
func Recover(dataDir string, idx RecoverIndex, u vault.Unwrapper, log *slog.Logger) (RecoverReport, error) {
	var rep RecoverReport
	open, err := idx.OpenSegments()
	if err != nil {
		return rep, fmt.Errorf("recover: list open segments: %w", err)
	}
	for _, s := range open {
		path := filepath.Join(dataDir, s.Path)
		res, err := vault.Repair(path, u)
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, vault.ErrFormat):
			// The crash came between the record and a complete header: nothing was recorded.
			if err := removeSegment(dataDir, idx, s); err != nil {
				return rep, err
			}
			rep.Removed++
			continue
		case err != nil:
			return rep, fmt.Errorf("recover: repair %s: %w", s.Path, err)
		}
		rep.TruncatedBytes += res.TruncatedBytes
		if res.Chunks < 2 {
			if err := removeSegment(dataDir, idx, s); err != nil {
				return rep, err
			}
			rep.Removed++
			continue
		}
		end, err := lastFragmentEnd(path, u)
		if err != nil {
			return rep, fmt.Errorf("recover: read back %s: %w", s.Path, err)
		}
		s.End = TimeOf(end)
		s.Chunks = res.Chunks
		s.Bytes = res.End
		s.Chain = res.Chain
		s.State = store.StateRecovered
		if h, _, err := vault.Scan(path); err == nil && len(h.Keys) > 0 {
			s.WrappedKey = h.Keys[0].Data
		}
		if err := idx.CloseSegment(s); err != nil {
			return rep, fmt.Errorf("recover: close record %s: %w", s.Path, err)
		}
		rep.Repaired++
		log.Info("recovered segment", "camera", s.Camera, "segment", hex.EncodeToString(s.ID[:]),
			"chunks", res.Chunks, "truncated_bytes", res.TruncatedBytes)
	}
	n, err := removeOrphans(dataDir, idx, log)
	rep.Orphans = n
	if err != nil {
		return rep, err
	}
	return rep, nil
}

func removeSegment(dataDir string, idx RecoverIndex, s store.Segment) error {
	if err := os.Remove(filepath.Join(dataDir, s.Path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove segment file %s: %w", s.Path, err)
	}
	if err := idx.DeleteSegment(s.ID); err != nil {
		return fmt.Errorf("remove segment record %s: %w", s.Path, err)
	}
	return nil
}

// lastFragmentEnd reads an authentic segment and returns the timeline end of its last fragment.
func lastFragmentEnd(path string, u vault.Unwrapper) (int64, error) {
	r, err := vault.Open(path, u)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	var end int64
	for {
		plain, info, err := r.Next()
		if errors.Is(err, io.EOF) {
			return end, nil
		}
		if err != nil {
			return 0, err
		}
		if info.Index == 0 || info.Final {
			continue
		}
		span, err := ParseFragment(plain)
		if err != nil {
			return 0, fmt.Errorf("chunk %d: %w", info.Index, err)
		}
		end = max(end, span.End)
	}
}

// segmentFiles lists the segment files under DATA/rec as paths relative to the data dir.
func segmentFiles(dataDir string) ([]string, error) {
	var out []string
	root := filepath.Join(dataDir, "rec")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return fs.SkipDir
			}
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".seg") {
			rel, err := filepath.Rel(dataDir, p)
			if err != nil {
				return err
			}
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list segment files: %w", err)
	}
	return out, nil
}

func knownPaths(idx RecoverIndex) (map[string]bool, error) {
	known := map[string]bool{}
	err := idx.AllSegments(func(s store.Segment) error {
		known[filepath.Clean(s.Path)] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list segment records: %w", err)
	}
	return known, nil
}

func removeOrphans(dataDir string, idx RecoverIndex, log *slog.Logger) (int, error) {
	files, err := segmentFiles(dataDir)
	if err != nil {
		return 0, err
	}
	known, err := knownPaths(idx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		if known[f] {
			continue
		}
		if err := os.Remove(filepath.Join(dataDir, f)); err != nil {
			return n, fmt.Errorf("remove orphan %s: %w", f, err)
		}
		log.Warn("removed segment file without a record", "path", f)
		n++
	}
	return n, nil
}
