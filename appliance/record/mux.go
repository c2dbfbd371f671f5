package record

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/edgenvr/nvr/appliance/ingest"
)

// TimeScale is the media time scale of every recorded track: the 90 kHz RTP video clock.
const TimeScale = ingest.ClockRate

// videoTrack is the track id of the video in every init segment and fragment.
const videoTrack = 1

// ticks converts a wall-clock time into the recording timeline: 90 kHz units since the Unix epoch. Every
// fragment's base media decode time (tfdt) is on this timeline, so a fragment says by itself when it was
// recorded and any run of one camera's fragments plays as one file after its init segment.
func ticks(t time.Time) int64 {
	return t.Unix()*TimeScale + int64(t.Nanosecond())*TimeScale/int64(time.Second)
}

// TimeOf converts a position on the recording timeline back into wall-clock time.
func TimeOf(ticks int64) time.Time {
	sec := ticks / TimeScale
	rem := ticks % TimeScale
	return time.Unix(sec, rem*int64(time.Second)/TimeScale).UTC()
}

// initSegment builds the fMP4 init segment (ftyp+moov) for a camera's parameter sets.
func initSegment(p *ingest.Params) ([]byte, error) {
	var codec fmp4.Codec
	switch p.Codec {
	case ingest.CodecH264:
		codec = &fmp4.CodecH264{SPS: p.SPS, PPS: p.PPS}
	case ingest.CodecH265:
		codec = &fmp4.CodecH265{VPS: p.VPS, SPS: p.SPS, PPS: p.PPS}
	default:
		return nil, fmt.Errorf("init segment: codec %v", p.Codec)
	}
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: videoTrack, TimeScale: TimeScale, Codec: codec}}}
	var b seekablebuffer.Buffer
	if err := init.Marshal(&b); err != nil {
		return nil, fmt.Errorf("init segment: %w", err)
	}
	return b.Bytes(), nil
}

// sample is one picture waiting to be written in a fragment.
type sample struct {
	dts     int64 // on the recording timeline
	ptsOff  int32
	random  bool
	payload []byte // AVCC: NAL units each after a 4-byte length
	dur     uint32
}

// fragmenter builds fMP4 fragments (moof+mdat).
type fragmenter struct {
	parts []*fmp4.Sample
}

// fragmentPool holds the buffers fragments are built in: a recorder builds about one a second and hands it
// to the vault at once, so a few buffers serve every camera.
var fragmentPool = sync.Pool{New: func() any { return new(seekablebuffer.Buffer) }}

// fragment builds one fragment from samples whose durations are known and passes it to use. The bytes are
// valid only during use.
func (f *fragmenter) fragment(seq uint32, samples []*sample, use func([]byte) error) error {
	if len(samples) == 0 {
		return errors.New("fragment: no samples")
	}
	f.parts = f.parts[:0]
	size := 1024 + 16*len(samples)
	for _, s := range samples {
		f.parts = append(f.parts, &fmp4.Sample{
			Duration:        s.dur,
			PTSOffset:       s.ptsOff,
			IsNonSyncSample: !s.random,
			Payload:         s.payload,
		})
		size += len(s.payload)
	}
	part := fmp4.Part{
		SequenceNumber: seq,
		Tracks:         []*fmp4.PartTrack{{ID: videoTrack, BaseTime: uint64(samples[0].dts), Samples: f.parts}},
	}
	buf := fragmentPool.Get().(*seekablebuffer.Buffer)
	defer fragmentPool.Put(buf)
	buf.Reset()
	buf.Grow(size)
	if err := part.Marshal(buf); err != nil {
		return fmt.Errorf("fragment: %w", err)
	}
	clear(f.parts) // drop references to the payloads
	return use(buf.Bytes())
}

// FragmentSpan is where a recorded fragment sits on the recording timeline.
type FragmentSpan struct {
	Start, End int64 // 90 kHz ticks since the Unix epoch; End is exclusive
	Samples    int
	Sequence   uint32
}

// ParseFragment reads the timing of one recorded fragment (moof+mdat). It is used on decrypted, authenticated
// chunks only, but still bounds what it reads.
func ParseFragment(b []byte) (FragmentSpan, error) {
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil {
		return FragmentSpan{}, fmt.Errorf("parse fragment: %w", err)
	}
	if len(parts) != 1 || len(parts[0].Tracks) != 1 {
		return FragmentSpan{}, fmt.Errorf("parse fragment: %d parts, want one part with one track", len(parts))
	}
	tr := parts[0].Tracks[0]
	span := FragmentSpan{Start: int64(tr.BaseTime), Samples: len(tr.Samples), Sequence: parts[0].SequenceNumber}
	if span.Start < 0 {
		return FragmentSpan{}, errors.New("parse fragment: decode time out of range")
	}
	end := span.Start
	for _, s := range tr.Samples {
		end += int64(s.Duration)
	}
	span.End = end
	return span, nil
}
