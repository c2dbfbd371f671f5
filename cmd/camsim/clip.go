package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// rtpPayloadType is the dynamic payload type every camera announces.
const rtpPayloadType = 96

// rtpPayloadMaxSize keeps packets under the 1472-byte UDP payload that
// gortsplib allows, with room for the RTP header.
const rtpPayloadMaxSize = 1400

// clip is an Annex-B elementary stream parsed once and packetised once into
// RTP payloads. A clip is read-only after loadClip returns, so all cameras
// share it; each camera stamps its own sequence numbers and timestamps.
type clip struct {
	path   string
	codec  string
	width  int
	height int
	vps    []byte // H.265 only
	sps    []byte
	pps    []byte
	frames []clipFrame
}

// clipFrame is one access unit as RTP payloads. The last payload carries the
// marker bit.
type clipFrame struct {
	idr      bool
	payloads [][]byte
}

// clipFile names the clip for a codec and a resolution tag ("1080p", "720p").
func clipFile(dir, codec, res string) string {
	return filepath.Join(dir, codec+"-"+res+"."+codec)
}

// errClipMissing is returned when a clip file does not exist.
var errClipMissing = errors.New("clip missing (run scripts/clips.sh to generate the clips)")

// loadClip reads path, splits it into access units and packetises them.
func loadClip(path, codec string) (*clip, error) {
	buf, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load clip %s: %w", path, errClipMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("load clip: %w", err)
	}
	nalus := splitAnnexB(buf)
	if len(nalus) == 0 {
		return nil, fmt.Errorf("load clip %s: no Annex-B start codes", path)
	}
	c := &clip{path: path, codec: codec}
	switch codec {
	case "h264":
		err = c.buildH264(nalus)
	case "h265":
		err = c.buildH265(nalus)
	default:
		err = fmt.Errorf("unknown codec %q", codec)
	}
	if err != nil {
		return nil, fmt.Errorf("load clip %s: %w", path, err)
	}
	return c, nil
}

func (c *clip) buildH264(nalus [][]byte) error {
	var aus [][][]byte
	var cur [][]byte
	hasVCL := false
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		typ := h264.NALUType(n[0] & 0x1f)
		vcl := typ >= 1 && typ <= 5
		// A new access unit starts at a non-VCL unit after a picture, or at a
		// slice whose first_mb_in_slice is zero (ue(v) "1" bit).
		if hasVCL && (!vcl || (len(n) > 1 && n[1]&0x80 != 0)) {
			aus = append(aus, cur)
			cur, hasVCL = nil, false
		}
		switch typ {
		case h264.NALUTypeAccessUnitDelimiter:
			continue
		case h264.NALUTypeSPS:
			if c.sps == nil {
				c.sps = n
			}
		case h264.NALUTypePPS:
			if c.pps == nil {
				c.pps = n
			}
		}
		cur = append(cur, n)
		hasVCL = hasVCL || vcl
	}
	if hasVCL {
		aus = append(aus, cur)
	}
	if c.sps == nil || c.pps == nil {
		return errors.New("no SPS/PPS in clip")
	}
	var sps h264.SPS
	if err := sps.Unmarshal(c.sps); err != nil {
		return fmt.Errorf("parse SPS: %w", err)
	}
	c.width, c.height = sps.Width(), sps.Height()

	enc := &rtph264.Encoder{PayloadType: rtpPayloadType, PacketizationMode: 1, PayloadMaxSize: rtpPayloadMaxSize}
	if err := enc.Init(); err != nil {
		return fmt.Errorf("init H.264 encoder: %w", err)
	}
	for _, au := range aus {
		idr := h264.IsRandomAccess(au)
		if idr && !containsH264(au, h264.NALUTypeSPS) {
			au = append([][]byte{c.sps, c.pps}, au...)
		}
		pkts, err := enc.Encode(au)
		if err != nil {
			return fmt.Errorf("packetise: %w", err)
		}
		f := clipFrame{idr: idr}
		for _, p := range pkts {
			f.payloads = append(f.payloads, p.Payload)
		}
		c.frames = append(c.frames, f)
	}
	return c.trimToFirstIDR()
}

func containsH264(au [][]byte, typ h264.NALUType) bool {
	for _, n := range au {
		if h264.NALUType(n[0]&0x1f) == typ {
			return true
		}
	}
	return false
}

func (c *clip) buildH265(nalus [][]byte) error {
	var aus [][][]byte
	var cur [][]byte
	hasVCL := false
	for _, n := range nalus {
		if len(n) < 2 {
			continue
		}
		typ := h265.NALUType((n[0] >> 1) & 0x3f)
		vcl := typ < 32
		// first_slice_segment_in_pic_flag is the first bit after the header.
		if hasVCL && (!vcl || (len(n) > 2 && n[2]&0x80 != 0)) {
			aus = append(aus, cur)
			cur, hasVCL = nil, false
		}
		switch typ {
		case h265.NALUType_AUD_NUT:
			continue
		case h265.NALUType_VPS_NUT:
			if c.vps == nil {
				c.vps = n
			}
		case h265.NALUType_SPS_NUT:
			if c.sps == nil {
				c.sps = n
			}
		case h265.NALUType_PPS_NUT:
			if c.pps == nil {
				c.pps = n
			}
		}
		cur = append(cur, n)
		hasVCL = hasVCL || vcl
	}
	if hasVCL {
		aus = append(aus, cur)
	}
	if c.vps == nil || c.sps == nil || c.pps == nil {
		return errors.New("no VPS/SPS/PPS in clip")
	}
	var sps h265.SPS
	if err := sps.Unmarshal(c.sps); err != nil {
		return fmt.Errorf("parse SPS: %w", err)
	}
	c.width, c.height = sps.Width(), sps.Height()

	enc := &rtph265.Encoder{PayloadType: rtpPayloadType, PayloadMaxSize: rtpPayloadMaxSize}
	if err := enc.Init(); err != nil {
		return fmt.Errorf("init H.265 encoder: %w", err)
	}
	for _, au := range aus {
		idr := h265.IsRandomAccess(au)
		if idr && !containsH265(au, h265.NALUType_SPS_NUT) {
			au = append([][]byte{c.vps, c.sps, c.pps}, au...)
		}
		pkts, err := enc.Encode(au)
		if err != nil {
			return fmt.Errorf("packetise: %w", err)
		}
		f := clipFrame{idr: idr}
		for _, p := range pkts {
			f.payloads = append(f.payloads, p.Payload)
		}
		c.frames = append(c.frames, f)
	}
	return c.trimToFirstIDR()
}

func containsH265(au [][]byte, typ h265.NALUType) bool {
	for _, n := range au {
		if h265.NALUType((n[0]>>1)&0x3f) == typ {
			return true
		}
	}
	return false
}

// trimToFirstIDR drops leading frames that cannot be decoded, so that looping
// from index 0 always starts at a random access point.
func (c *clip) trimToFirstIDR() error {
	for i, f := range c.frames {
		if f.idr {
			c.frames = c.frames[i:]
			return nil
		}
	}
	return errors.New("no IDR frame in clip")
}

// splitAnnexB splits an Annex-B byte stream at its start codes (00 00 01,
// optionally after more zero bytes). mediacommon's h264.AnnexB caps the NAL
// unit count at one access unit's worth, so a whole file is split here.
func splitAnnexB(buf []byte) [][]byte {
	var nalus [][]byte
	start := -1
	zeros := 0
	for i, b := range buf {
		switch {
		case b == 0:
			zeros++
			continue
		case b == 1 && zeros >= 2:
			if start >= 0 {
				nalus = appendNALU(nalus, buf[start:i-zeros])
			}
			start = i + 1
		}
		zeros = 0
	}
	if start >= 0 {
		nalus = appendNALU(nalus, buf[start:len(buf)-zeros])
	}
	return nalus
}

func appendNALU(nalus [][]byte, n []byte) [][]byte {
	if len(n) == 0 {
		return nalus
	}
	return append(nalus, n)
}
