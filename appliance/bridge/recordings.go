package bridge

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
)

// LiveSource subscribes to a camera's recorded fragments as they are written (Appliance.Live): the init
// segment first, then fragments from a key frame on. cancel ends the subscription.
type LiveSource func(camera string) (<-chan record.LiveFragment, func(), error)

// Segment is one recorded segment of a camera.
type Segment struct {
	ID         [16]byte
	Start, End time.Time
	// Open is set while the segment is still being recorded: it grows, and its end is not final.
	Open bool
}

// ChunkReader yields the authenticated plaintext chunks of a segment in order: the init segment first,
// then fMP4 fragments; io.EOF after the last.
type ChunkReader interface {
	Next() ([]byte, error)
	Close() error
}

// Recordings is what replay needs of the recordings.
type Recordings interface {
	// Segments lists camera's segments overlapping [from, to), ordered by start.
	Segments(camera string, from, to time.Time) ([]Segment, error)
	// Chunks opens a segment of camera for reading.
	Chunks(camera string, id [16]byte) (ChunkReader, error)
}

// IndexRecordings reads recordings from the index and the vault: the implementation the appliance uses.
type IndexRecordings struct {
	DataDir string
	DB      *store.DB
	// Keys unwraps segment keys (the TPM); Cache keeps unwrapped keys briefly so consecutive segments and
	// concurrent viewers do not each ask the TPM.
	Keys  vault.Unwrapper
	Cache *vault.KeyCache
}

// Segments implements Recordings.
func (r IndexRecordings) Segments(camera string, from, to time.Time) ([]Segment, error) {
	segs, err := r.DB.Segments(camera, from, to)
	if err != nil {
		return nil, fmt.Errorf("list segments of %s: %w", camera, err)
	}
	out := make([]Segment, 0, len(segs))
	for _, s := range segs {
		out = append(out, Segment{ID: s.ID, Start: s.Start, End: s.End, Open: s.State == store.StateOpen})
	}
	return out, nil
}

// Chunks implements Recordings.
func (r IndexRecordings) Chunks(camera string, id [16]byte) (ChunkReader, error) {
	s, err := r.DB.Segment(id)
	if err != nil {
		return nil, fmt.Errorf("segment %x: %w", id[:4], err)
	}
	if s.Camera != camera {
		return nil, fmt.Errorf("segment %x belongs to another camera", id[:4])
	}
	vr, err := vault.OpenCached(filepath.Join(r.DataDir, s.Path), r.Keys, r.Cache)
	if err != nil {
		return nil, fmt.Errorf("open segment %x: %w", id[:4], err)
	}
	if h := vr.Header(); h.SegmentID != s.ID || h.Camera != s.Camera {
		vr.Close()
		return nil, fmt.Errorf("segment %x: the file belongs to another segment or camera", id[:4])
	}
	return &vaultChunks{r: vr, open: s.State == store.StateOpen}, nil
}

type vaultChunks struct {
	r    *vault.Reader
	open bool
}

func (v *vaultChunks) Next() ([]byte, error) {
	b, info, err := v.r.Next()
	switch {
	case errors.Is(err, io.EOF):
		return nil, io.EOF
	case v.open && errors.Is(err, vault.ErrTruncated):
		// A segment being recorded ends, for now, at its last complete chunk.
		return nil, io.EOF
	case err != nil:
		return nil, err
	case info.Final:
		return nil, io.EOF
	}
	return b, nil
}

func (v *vaultChunks) Close() error { return v.r.Close() }
