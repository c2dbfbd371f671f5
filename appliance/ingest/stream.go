package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/pion/rtp"
)

// Errors a stream returns for a packet it refuses. Each is counted and dropped; none ends the session except
// errTimeline, which says the camera's clock has left the wall clock for good.
var (
	errBadPacket = errors.New("malformed RTP packet")
	errBadUnit   = errors.New("malformed access unit")
	errTimestamp = errors.New("RTP timestamp out of line with the wall clock")
	errTimeline  = errors.New("camera timestamps stayed out of line with the wall clock")
)

// maxPacketSize bounds one RTP packet: an interleaved TCP frame can carry at most 64 KiB.
const maxPacketSize = 65535

// depacketizer is the part of rtph264/rtph265 decoders that a stream uses.
type depacketizer interface {
	Decode(pkt *rtp.Packet) ([][]byte, error)
}

// stream turns one session's RTP packets into checked access units. It holds no network state, so it can be
// fed from a test or a fuzzer.
type stream struct {
	codec    Codec
	pt       uint8
	session  uint64
	maxUnit  int
	maxJump  int64 // ClockRate ticks
	dec      depacketizer
	dts264   *h264.DTSExtractor
	dts265   *h265.DTSExtractor
	params   *Params
	started  bool // a random access unit was seen in this session
	wall0    time.Time
	pts0     int64
	lastDTS  int64
	lastPTS  int64 // of the last accepted unit, absolute (as given)
	lastWall time.Time
	badSince time.Time // first of a run of timestamp refusals
	held     [][]byte  // NAL units without a picture, waiting for the next picture
}

// maxHeld bounds the NAL units held for the next picture.
const maxHeld = 16

// hasPicture reports whether an access unit holds a coded picture (a VCL NAL unit).
func (s *stream) hasPicture(au [][]byte) bool {
	for _, n := range au {
		if s.codec == CodecH264 {
			if t := n[0] & 0x1f; t >= 1 && t <= 5 {
				return true
			}
		} else if t := (n[0] >> 1) & 0x3f; t <= 31 {
			return true
		}
	}
	return false
}

func newStream(codec Codec, pt uint8, session uint64, initial *Params, maxUnit int, maxJump time.Duration) (*stream, error) {
	s := &stream{
		codec:   codec,
		pt:      pt,
		session: session,
		maxUnit: maxUnit,
		maxJump: int64(maxJump.Seconds() * ClockRate),
		params:  initial,
	}
	switch codec {
	case CodecH264:
		d := &rtph264.Decoder{}
		if err := d.Init(); err != nil {
			return nil, fmt.Errorf("h264 depacketizer: %w", err)
		}
		s.dec = d
	case CodecH265:
		d := &rtph265.Decoder{}
		if err := d.Init(); err != nil {
			return nil, fmt.Errorf("h265 depacketizer: %w", err)
		}
		s.dec = d
	default:
		return nil, fmt.Errorf("codec %v is not recorded", codec)
	}
	return s, nil
}

// packet takes one RTP packet with its decoded timestamp (ClockRate units, as the RTSP client unwrapped it)
// and the wall time it arrived. It returns a unit when the packet completes one, nil while more packets are
// needed, or an error for a packet or unit that was refused.
func (s *stream) packet(pkt *rtp.Packet, pts int64, now time.Time) (*Unit, error) {
	if pkt.PayloadType != s.pt {
		return nil, fmt.Errorf("%w: payload type %d, want %d", errBadPacket, pkt.PayloadType, s.pt)
	}
	if len(pkt.Payload) == 0 || len(pkt.Payload) > maxPacketSize {
		return nil, fmt.Errorf("%w: payload of %d bytes", errBadPacket, len(pkt.Payload))
	}
	if s.started {
		// Compare the camera's clock with ours: a malicious or broken camera must not move recordings in time.
		expected := s.lastPTS + int64(now.Sub(s.lastWall).Seconds()*ClockRate)
		if d := pts - expected; d > s.maxJump || d < -s.maxJump {
			if s.badSince.IsZero() {
				s.badSince = now
			} else if now.Sub(s.badSince) > time.Duration(s.maxJump)*time.Second/ClockRate {
				return nil, errTimeline
			}
			return nil, fmt.Errorf("%w: off by %.1f s", errTimestamp, float64(d)/ClockRate)
		}
		s.badSince = time.Time{}
	}
	au, err := s.dec.Decode(pkt)
	if err != nil {
		if errors.Is(err, rtph264.ErrMorePacketsNeeded) || errors.Is(err, rtph265.ErrMorePacketsNeeded) {
			return nil, nil
		}
		if errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) ||
			errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious) {
			return nil, nil // joined in the middle of a fragmented NAL unit
		}
		return nil, fmt.Errorf("%w: %w", errBadPacket, err)
	}
	return s.unit(au, pts, now)
}

// unit checks one reassembled access unit, follows its parameter sets and timestamps it.
func (s *stream) unit(au [][]byte, pts int64, now time.Time) (*Unit, error) {
	size := 0
	kept := au[:0:0]
	var vps, sps, pps []byte
	for _, n := range au {
		if len(n) == 0 {
			return nil, fmt.Errorf("%w: empty NAL unit", errBadUnit)
		}
		if n[0]&0x80 != 0 {
			return nil, fmt.Errorf("%w: forbidden bit set", errBadUnit)
		}
		size += len(n)
		if size > s.maxUnit {
			return nil, fmt.Errorf("%w: larger than %d bytes", errBadUnit, s.maxUnit)
		}
		switch s.codec {
		case CodecH264:
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				sps = n
			case h264.NALUTypePPS:
				pps = n
			case h264.NALUTypeAccessUnitDelimiter:
				continue // carries nothing a recording needs
			}
		case CodecH265:
			if len(n) < 2 {
				return nil, fmt.Errorf("%w: H.265 NAL unit of %d bytes", errBadUnit, len(n))
			}
			switch h265.NALUType((n[0] >> 1) & 0x3f) {
			case h265.NALUType_VPS_NUT:
				vps = n
			case h265.NALUType_SPS_NUT:
				sps = n
			case h265.NALUType_PPS_NUT:
				pps = n
			case h265.NALUType_AUD_NUT:
				continue
			}
		}
		kept = append(kept, n)
	}
	if len(kept) == 0 {
		return nil, nil
	}
	if sps != nil || pps != nil || vps != nil {
		if err := s.updateParams(vps, sps, pps); err != nil {
			return nil, err
		}
	}
	if !s.hasPicture(kept) {
		// Parameter sets or SEI sent with their own timestamp or marker: no picture of their own. They
		// belong with the next picture; a sample without one makes decoders report a missing frame.
		if len(s.held)+len(kept) > maxHeld {
			return nil, fmt.Errorf("%w: more than %d NAL units without a picture", errBadUnit, maxHeld)
		}
		for _, n := range kept {
			s.held = append(s.held, bytes.Clone(n))
		}
		return nil, nil
	}
	if len(s.held) > 0 {
		kept = append(s.held, kept...)
		s.held = nil
		size = 0
		for _, n := range kept {
			size += len(n)
		}
		if size > s.maxUnit {
			return nil, fmt.Errorf("%w: larger than %d bytes", errBadUnit, s.maxUnit)
		}
	}
	var random bool
	if s.codec == CodecH264 {
		random = h264.IsRandomAccess(kept)
	} else {
		random = h265.IsRandomAccess(kept)
	}
	if !s.started {
		if !random || !s.params.complete() {
			return nil, nil // wait for a picture a recording can start with
		}
		s.started = true
		s.wall0 = now
		s.pts0 = pts
		s.resetDTS()
	}
	var dts int64
	var err error
	if s.codec == CodecH264 {
		dts, err = s.dts264.Extract(kept, pts)
	} else {
		dts, err = s.dts265.Extract(kept, pts)
	}
	if err != nil {
		// The extractor refuses broken orders; start again at the next random access unit.
		s.resetDTS()
		return nil, fmt.Errorf("%w: decode time: %w", errBadUnit, err)
	}
	rel := dts - s.pts0
	if rel < s.lastDTS {
		return nil, fmt.Errorf("%w: decode time went back", errBadUnit)
	}
	s.lastDTS = rel
	s.lastPTS = pts
	s.lastWall = now
	// One allocation for the whole unit, laid out as AVCC (each NAL unit after its 4-byte length), which is
	// what an MP4 sample holds: the recorder writes it as is. The packets' buffers are not ours to keep.
	buf := make([]byte, 0, size+4*len(kept))
	nalus := make([][]byte, len(kept))
	for i, n := range kept {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(n)))
		start := len(buf)
		buf = append(buf, n...)
		nalus[i] = buf[start:len(buf):len(buf)]
	}
	return &Unit{
		Session:      s.session,
		Params:       s.params,
		DTS:          rel,
		PTS:          pts - s.pts0,
		Wall:         s.wall0.Add(time.Duration(rel) * time.Second / ClockRate),
		NALUs:        nalus,
		AVCC:         buf,
		RandomAccess: random,
	}, nil
}

func (s *stream) resetDTS() {
	if s.codec == CodecH264 {
		s.dts264 = &h264.DTSExtractor{}
		s.dts264.Initialize()
	} else {
		s.dts265 = &h265.DTSExtractor{}
		s.dts265.Initialize()
	}
}

// updateParams installs new parameter sets when they differ from the ones in force, after checking that
// they parse.
func (s *stream) updateParams(vps, sps, pps []byte) error {
	cur := s.params
	if cur == nil {
		cur = &Params{Codec: s.codec}
	}
	next := &Params{Codec: s.codec, VPS: cur.VPS, SPS: cur.SPS, PPS: cur.PPS}
	if vps != nil {
		next.VPS = vps
	}
	if sps != nil {
		next.SPS = sps
	}
	if pps != nil {
		next.PPS = pps
	}
	if cur.Equal(next) {
		return nil
	}
	if sps != nil {
		if s.codec == CodecH264 {
			var p h264.SPS
			if err := p.Unmarshal(sps); err != nil {
				return fmt.Errorf("%w: SPS: %w", errBadUnit, err)
			}
		} else {
			var p h265.SPS
			if err := p.Unmarshal(sps); err != nil {
				return fmt.Errorf("%w: SPS: %w", errBadUnit, err)
			}
		}
	}
	next.VPS = bytes.Clone(next.VPS)
	next.SPS = bytes.Clone(next.SPS)
	next.PPS = bytes.Clone(next.PPS)
	s.params = next
	if s.started {
		// New parameter sets need a new decode-time history.
		s.resetDTS()
	}
	return nil
}

// Equal says whether two sets of parameters are the same.
func (p *Params) Equal(o *Params) bool {
	if p == nil || o == nil {
		return p == o
	}
	return p.Codec == o.Codec && bytes.Equal(p.VPS, o.VPS) && bytes.Equal(p.SPS, o.SPS) && bytes.Equal(p.PPS, o.PPS)
}

func (p *Params) complete() bool {
	if p == nil || len(p.SPS) == 0 || len(p.PPS) == 0 {
		return false
	}
	return p.Codec != CodecH265 || len(p.VPS) > 0
}

// Size returns the width and height the sequence parameter set declares.
func (p *Params) Size() (w, h int, err error) {
	switch p.Codec {
	case CodecH264:
		var s h264.SPS
		if err := s.Unmarshal(p.SPS); err != nil {
			return 0, 0, err
		}
		return s.Width(), s.Height(), nil
	case CodecH265:
		var s h265.SPS
		if err := s.Unmarshal(p.SPS); err != nil {
			return 0, 0, err
		}
		return s.Width(), s.Height(), nil
	}
	return 0, 0, fmt.Errorf("codec %v", p.Codec)
}
