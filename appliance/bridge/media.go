package bridge

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/pion/rtp"
)

// payloadType is the dynamic RTP payload type of the video.
const payloadType = 96

// Bounds on what one recorded chunk may hold; recorded chunks are authenticated, but a bound costs nothing.
const (
	maxInitSize      = 1 << 20
	maxFragmentSize  = 64 << 20
	maxFrameSamples  = 4096
	maxNALUsPerFrame = 256
)

// ErrCodec is returned when a recording holds a codec the bridge cannot packetize.
var ErrCodec = errors.New("unsupported codec")

// track is the video track of an init segment, as RTP sees it.
type track struct {
	h265   bool
	params [][]byte // parameter sets put in front of every key frame (VPS, SPS, PPS)
}

// parseInit reads the video track of an fMP4 init segment (ftyp+moov).
func parseInit(b []byte) (track, error) {
	if len(b) > maxInitSize {
		return track{}, fmt.Errorf("init segment of %d bytes: too large", len(b))
	}
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(b)); err != nil {
		return track{}, fmt.Errorf("parse init segment: %w", err)
	}
	if len(in.Tracks) != 1 {
		return track{}, fmt.Errorf("init segment has %d tracks, want 1", len(in.Tracks))
	}
	switch c := in.Tracks[0].Codec.(type) {
	case *mp4.CodecH264:
		if len(c.SPS) == 0 || len(c.PPS) == 0 {
			return track{}, errors.New("init segment: H.264 without SPS or PPS")
		}
		return track{params: [][]byte{c.SPS, c.PPS}}, nil
	case *mp4.CodecH265:
		if len(c.VPS) == 0 || len(c.SPS) == 0 || len(c.PPS) == 0 {
			return track{}, errors.New("init segment: H.265 without VPS, SPS or PPS")
		}
		return track{h265: true, params: [][]byte{c.VPS, c.SPS, c.PPS}}, nil
	default:
		return track{}, fmt.Errorf("init segment: %T: %w", c, ErrCodec)
	}
}

// description returns the SDP description of the track.
func (t track) description() (*description.Session, *description.Media) {
	var f format.Format
	if t.h265 {
		f = &format.H265{PayloadTyp: payloadType, VPS: t.params[0], SPS: t.params[1], PPS: t.params[2]}
	} else {
		f = &format.H264{PayloadTyp: payloadType, PacketizationMode: 1, SPS: t.params[0], PPS: t.params[1]}
	}
	m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
	return &description.Session{Title: "Edge NVR", Medias: []*description.Media{m}}, m
}

// sameCodec reports whether u can be sent on a stream described for t (the same codec; parameter sets may
// change, they travel in band).
func (t track) sameCodec(u track) bool { return t.h265 == u.h265 }

// frame is one access unit of a recorded fragment.
type frame struct {
	DTS, PTS int64 // 90 kHz ticks since the Unix epoch
	Dur      int64 // how long the frame lasts, in 90 kHz ticks (0 if the recording does not say)
	Key      bool
	AU       [][]byte
}

// fragmentFrames splits one recorded fragment (moof+mdat) into access units.
func fragmentFrames(b []byte, h265 bool) ([]frame, error) {
	if len(b) > maxFragmentSize {
		return nil, fmt.Errorf("fragment of %d bytes: too large", len(b))
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("parse fragment: %w", err)
	}
	var out []frame
	for _, p := range parts {
		for _, tr := range p.Tracks {
			dts := int64(tr.BaseTime)
			if dts < 0 {
				return nil, errors.New("parse fragment: base time out of range")
			}
			if len(out)+len(tr.Samples) > maxFrameSamples {
				return nil, fmt.Errorf("parse fragment: more than %d samples", maxFrameSamples)
			}
			for _, s := range tr.Samples {
				var au [][]byte
				var err error
				if h265 {
					au, err = s.GetH265()
				} else {
					au, err = s.GetH264()
				}
				if err != nil {
					return nil, fmt.Errorf("parse fragment sample: %w", err)
				}
				if len(au) == 0 || len(au) > maxNALUsPerFrame {
					return nil, fmt.Errorf("parse fragment: sample with %d NAL units", len(au))
				}
				out = append(out, frame{DTS: dts, PTS: dts + int64(s.PTSOffset), Dur: int64(s.Duration), Key: !s.IsNonSyncSample, AU: au})
				dts += int64(s.Duration)
			}
		}
	}
	return out, nil
}

// packetizer turns access units into RTP packets for one track.
type packetizer struct {
	h264 *rtph264.Encoder
	h265 *rtph265.Encoder
	tr   track
}

func newPacketizer(t track, m *description.Media) (*packetizer, error) {
	p := &packetizer{tr: t}
	var err error
	switch f := m.Formats[0].(type) {
	case *format.H264:
		p.h264, err = f.CreateEncoder()
	case *format.H265:
		p.h265, err = f.CreateEncoder()
	default:
		err = ErrCodec
	}
	if err != nil {
		return nil, fmt.Errorf("rtp encoder: %w", err)
	}
	return p, nil
}

// setParams replaces the parameter sets sent in front of key frames (after a new init segment).
func (p *packetizer) setParams(t track) { p.tr.params = t.params }

// packets encodes one access unit; a key frame goes out with the parameter sets in front, so a client can
// start decoding at any key frame and follows parameter changes. The RTP timestamp is the presentation
// time on the recording timeline (90 kHz), modulo 2^32.
func (p *packetizer) packets(f frame) ([]*rtp.Packet, error) {
	au := f.AU
	if f.Key {
		au = make([][]byte, 0, len(p.tr.params)+len(f.AU))
		au = append(au, p.tr.params...)
		au = append(au, f.AU...)
	}
	var pkts []*rtp.Packet
	var err error
	if p.h265 != nil {
		pkts, err = p.h265.Encode(au)
	} else {
		pkts, err = p.h264.Encode(au)
	}
	if err != nil {
		return nil, fmt.Errorf("rtp encode: %w", err)
	}
	for _, k := range pkts {
		k.Timestamp = uint32(f.PTS)
	}
	return pkts, nil
}
