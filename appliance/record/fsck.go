package record

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
)

// FsckIndex is what the consistency check needs of the index.
type FsckIndex interface {
	AllSegments(fn func(store.Segment) error) error
	Verify() error
}

// FsckReport lists what the check found. Problems are inconsistencies; Pending are states the next start
// resolves by itself (segments left open by a crash, orphan files).
type FsckReport struct {
	Segments int
	Bytes    int64
	Problems []string
	Pending  []string
}

// Clean reports whether nothing is wrong.
func (r FsckReport) Clean() bool { return len(r.Problems) == 0 }

// Fsck checks the index against the segment files without any key: the index's own integrity, and for
// every record that its file exists, carries the same segment id and camera, and has the structure the
// record promises (chunk count, size, trailer). A segment left open by a crash may be longer than its record
// and may end in a torn chunk: that is pending recovery, not a problem.
func Fsck(dataDir string, idx FsckIndex) (FsckReport, error) {
	var rep FsckReport
	if err := idx.Verify(); err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("index: %v", err))
	}
	err := idx.AllSegments(func(s store.Segment) error {
		rep.Segments++
		rep.Bytes += s.Bytes
		id := hex.EncodeToString(s.ID[:])
		path := filepath.Join(dataDir, s.Path)
		problem := func(format string, a ...any) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("segment %s (%s): ", id, s.Camera)+fmt.Sprintf(format, a...))
		}
		h, sc, err := vault.Scan(path)
		if s.State == store.StateOpen {
			switch {
			case errors.Is(err, fs.ErrNotExist), errors.Is(err, vault.ErrFormat):
				rep.Pending = append(rep.Pending, fmt.Sprintf("segment %s (%s): open, no complete file yet: removed at next start", id, s.Camera))
			case err != nil:
				problem("%v", err)
			case h.SegmentID != s.ID || h.Camera != s.Camera:
				problem("file header names another segment or camera")
			default:
				rep.Pending = append(rep.Pending, fmt.Sprintf("segment %s (%s): open (%d chunks, %d torn bytes): closed at next start", id, s.Camera, sc.Chunks, sc.TornBytes))
			}
			return nil
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			problem("file %s is missing", s.Path)
			return nil
		case err != nil:
			problem("%v", err)
			return nil
		}
		if h.SegmentID != s.ID || h.Camera != s.Camera {
			problem("file header names another segment or camera")
		}
		if !sc.Final {
			problem("no final chunk: the file was truncated")
		}
		if sc.TornBytes != 0 {
			problem("%d bytes after the last chunk", sc.TornBytes)
		}
		if got := sc.Chunks; got != s.Chunks {
			problem("file has %d chunks before its trailer, index says %d", got, s.Chunks)
		}
		if sc.Size != s.Bytes {
			problem("file is %d bytes, index says %d", sc.Size, s.Bytes)
		}
		if !s.End.After(s.Start) && s.Chunks > 1 {
			problem("time range %v–%v is empty", s.Start, s.End)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("fsck: %w", err)
	}
	files, err := segmentFiles(dataDir)
	if err != nil {
		return rep, fmt.Errorf("fsck: %w", err)
	}
	known := map[string]bool{}
	if err := idx.AllSegments(func(s store.Segment) error { known[filepath.Clean(s.Path)] = true; return nil }); err != nil {
		return rep, fmt.Errorf("fsck: %w", err)
	}
	for _, f := range files {
		if !known[f] {
			rep.Pending = append(rep.Pending, fmt.Sprintf("file %s has no record: removed at next start", f))
		}
	}
	return rep, nil
}
