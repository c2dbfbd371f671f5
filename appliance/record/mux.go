package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/abema/go-mp4"
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

// fragmenter builds fMP4 fragments (moof+mdat): the boxes and flags mediacommon's fmp4.Part.Marshal writes
// (tfhd with default-base-is-moof, tfdt version 1, trun version 1 with durations, sizes, and flags and
// composition offsets when needed), the moof from abema/go-mp4's box types, the mdat written straight from
// the pictures. Part.Marshal would first gather the pictures into an mdat of its own: one allocation and
// one copy of every recorded byte more (a fifth of the recorder's allocations at 64 cameras).
type fragmenter struct {
	entries []mp4.TrunEntry
}

// The trun and sample flags fmp4.Part.Marshal uses (ISO/IEC 14496-12, 8.8.8).
const (
	trunDataOffset        = 0x000001
	trunSampleDuration    = 0x000100
	trunSampleSize        = 0x000200
	trunSampleFlags       = 0x000400
	trunCompositionOffset = 0x000800
	tfhdDefaultBaseIsMoof = 0x020000
	sampleIsNonSync       = 1 << 16
)

// fragmentPool holds the buffers fragments are built in: a recorder builds about one a second and hands it
// to the vault at once, so a few buffers serve every camera.
var fragmentPool = sync.Pool{New: func() any { return new(seekablebuffer.Buffer) }}

// fragment builds one fragment from samples whose durations are known and passes it to use. The bytes are
// valid only during use.
func (f *fragmenter) fragment(seq uint32, samples []*sample, use func([]byte) error) error {
	if len(samples) == 0 {
		return errors.New("fragment: no samples")
	}
	flags := uint32(trunDataOffset | trunSampleDuration | trunSampleSize)
	data := 0
	f.entries = f.entries[:0]
	for _, s := range samples {
		var sf uint32
		if !s.random {
			flags |= trunSampleFlags
			sf = sampleIsNonSync
		}
		if s.ptsOff != 0 {
			flags |= trunCompositionOffset
		}
		f.entries = append(f.entries, mp4.TrunEntry{
			SampleDuration:                s.dur,
			SampleSize:                    uint32(len(s.payload)),
			SampleFlags:                   sf,
			SampleCompositionTimeOffsetV1: s.ptsOff,
		})
		data += len(s.payload)
	}
	if uint64(data)+8 > math.MaxUint32 {
		return fmt.Errorf("fragment: %d bytes of pictures", data)
	}
	trun := &mp4.Trun{
		FullBox:     mp4.FullBox{Version: 1, Flags: [3]byte{byte(flags >> 16), byte(flags >> 8), byte(flags)}},
		SampleCount: uint32(len(samples)),
		Entries:     f.entries,
	}
	buf := fragmentPool.Get().(*seekablebuffer.Buffer)
	defer fragmentPool.Put(buf)
	buf.Reset()
	buf.Grow(1024 + 16*len(samples) + data)
	w := mp4.NewWriter(buf)
	box := func(b mp4.IImmutableBox, inner func() error) (uint64, error) {
		bi, err := w.StartBox(&mp4.BoxInfo{Type: b.GetType()})
		if err != nil {
			return 0, err
		}
		if _, err := mp4.Marshal(w, b, mp4.Context{}); err != nil {
			return 0, err
		}
		if inner != nil {
			if err := inner(); err != nil {
				return 0, err
			}
		}
		_, err = w.EndBox()
		return bi.Offset, err
	}
	var trunAt uint64
	_, err := box(&mp4.Moof{}, func() error {
		if _, err := box(&mp4.Mfhd{SequenceNumber: seq}, nil); err != nil {
			return err
		}
		_, err := box(&mp4.Traf{}, func() error {
			tfhd := &mp4.Tfhd{FullBox: mp4.FullBox{Flags: [3]byte{tfhdDefaultBaseIsMoof >> 16, 0, 0}}, TrackID: videoTrack}
			if _, err := box(tfhd, nil); err != nil {
				return err
			}
			tfdt := &mp4.Tfdt{FullBox: mp4.FullBox{Version: 1}, BaseMediaDecodeTimeV1: uint64(samples[0].dts)}
			if _, err := box(tfdt, nil); err != nil {
				return err
			}
			var err error
			trunAt, err = box(trun, nil)
			return err
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("fragment: moof: %w", err)
	}
	moofSize := buf.Len()
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(8+data))
	copy(hdr[4:], "mdat")
	buf.Write(hdr[:])
	for _, s := range samples {
		buf.Write(s.payload)
	}
	// The pictures start right after the mdat header; the trun says where, from the start of the moof.
	trun.DataOffset = int32(moofSize + 8)
	if _, err := buf.Seek(int64(trunAt), io.SeekStart); err != nil {
		return fmt.Errorf("fragment: %w", err)
	}
	if _, err := box(trun, nil); err != nil {
		return fmt.Errorf("fragment: trun: %w", err)
	}
	clear(f.entries)
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
