package record

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
)

// ExportIndex is what an export needs of the index.
type ExportIndex interface {
	Segments(camera string, from, to time.Time) ([]store.Segment, error)
}

// ErrNothingRecorded is returned when the range holds no recording of the camera.
var ErrNothingRecorded = errors.New("nothing recorded in that range")

// ExportReport describes an export.
type ExportReport struct {
	Segments  int
	Fragments int
	Bytes     int64
	Start     time.Time // of the first fragment written
	End       time.Time // of the last fragment written
	Gaps      []Gap     // holes in the recording between the fragments written
}

// Gap is a hole in a recording.
type Gap struct{ From, To time.Time }

// Export writes one camera's recording over [from, to) as one MP4 file: the init segment, then every
// recorded fragment that overlaps the range, decrypted and byte for byte as recorded. Every chunk is
// authenticated on the way; the first that fails stops the export with an error naming its segment and
// chunk. A change of the camera's parameter sets inside the range stops it too, naming the time: one MP4 has
// one set.
func Export(dataDir string, idx ExportIndex, u vault.Unwrapper, camera string, from, to time.Time, w io.Writer) (ExportReport, error) {
	var rep ExportReport
	if !to.After(from) {
		return rep, fmt.Errorf("export: the range ends before it starts")
	}
	segs, err := idx.Segments(camera, from, to)
	if err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	if len(segs) == 0 {
		return rep, fmt.Errorf("export %s: %w", camera, ErrNothingRecorded)
	}
	var initSeg []byte
	var lastEnd int64
	lo, hi := ticks(from), ticks(to)
	for _, s := range segs {
		if s.State == store.StateOpen {
			continue // still being written (or a crash not yet recovered): not evidence yet
		}
		n, err := exportSegment(filepath.Join(dataDir, s.Path), s, u, lo, hi, &initSeg, &lastEnd, &rep, w)
		if err != nil {
			return rep, fmt.Errorf("export: %w", err)
		}
		if n > 0 {
			rep.Segments++
		}
	}
	if rep.Fragments == 0 {
		return rep, fmt.Errorf("export %s: %w", camera, ErrNothingRecorded)
	}
	return rep, nil
}

func exportSegment(path string, s store.Segment, u vault.Unwrapper, lo, hi int64, initSeg *[]byte, lastEnd *int64, rep *ExportReport, w io.Writer) (int, error) {
	r, err := vault.Open(path, u)
	if err != nil {
		return 0, fmt.Errorf("segment %s: %w", hex.EncodeToString(s.ID[:]), err)
	}
	defer r.Close()
	if h := r.Header(); h.SegmentID != s.ID || h.Camera != s.Camera {
		return 0, fmt.Errorf("segment %s: the file belongs to another segment or camera", hex.EncodeToString(s.ID[:]))
	}
	n := 0
	var segInit []byte
	for {
		plain, info, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err // a *vault.ChunkError names the segment and the chunk
		}
		if info.Final {
			continue
		}
		if info.Index == 0 {
			segInit = bytes.Clone(plain)
			continue
		}
		span, err := ParseFragment(plain)
		if err != nil {
			return n, fmt.Errorf("segment %s chunk %d: %w", hex.EncodeToString(s.ID[:]), info.Index, err)
		}
		if span.End <= lo || span.Start >= hi {
			continue
		}
		if segInit == nil {
			return n, fmt.Errorf("segment %s: no init segment before chunk %d", hex.EncodeToString(s.ID[:]), info.Index)
		}
		if *initSeg == nil {
			*initSeg = segInit
			if _, err := w.Write(segInit); err != nil {
				return n, fmt.Errorf("write init segment: %w", err)
			}
			rep.Bytes += int64(len(segInit))
		} else if !bytes.Equal(*initSeg, segInit) {
			return n, fmt.Errorf("the camera's parameter sets change at %s (segment %s): export the ranges before and after separately",
				s.Start.Format(time.RFC3339), hex.EncodeToString(s.ID[:]))
		}
		if span.Start < *lastEnd {
			return n, fmt.Errorf("segment %s chunk %d: overlaps the fragment before it", hex.EncodeToString(s.ID[:]), info.Index)
		}
		if *lastEnd != 0 && span.Start > *lastEnd+TimeScale/10 {
			rep.Gaps = append(rep.Gaps, Gap{From: TimeOf(*lastEnd), To: TimeOf(span.Start)})
		}
		if rep.Fragments == 0 {
			rep.Start = TimeOf(span.Start)
		}
		if _, err := w.Write(plain); err != nil {
			return n, fmt.Errorf("write fragment: %w", err)
		}
		*lastEnd = span.End
		rep.End = TimeOf(span.End)
		rep.Fragments++
		rep.Bytes += int64(len(plain))
		n++
	}
	return n, nil
}
