package playback

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The stream framing, as the browser's script reads it (static/app.js): each frame is a 24-byte header
// then its payload.
//
//	offset size
//	0      1    kind (1 init, 2 media, 3 end)
//	1      1    flags (bit 0: the media fragment starts with a key frame)
//	2      2    zero
//	4      4    payload length, big-endian
//	8      8    start on the recording timeline (90 kHz since the Unix epoch), big-endian, signed
//	16     8    end, likewise
//	24     n    payload
const (
	// FrameHeader is the size of a frame's header.
	FrameHeader = 24
	// MaxFramePayload bounds a frame's payload: one fragment of a few seconds of high-bitrate video.
	MaxFramePayload = 32 << 20
	// ContentType is the media type of a framed stream.
	ContentType = "application/vnd.edgenvr.frames"
)

// ErrFrame reports a malformed frame.
var ErrFrame = errors.New("malformed frame")

const flagKey = 1

// AppendFrame appends f in the stream framing to b.
func AppendFrame(b []byte, f Fragment) ([]byte, error) {
	if f.Kind < KindInit || f.Kind > KindEnd {
		return b, fmt.Errorf("%w: kind %d", ErrFrame, f.Kind)
	}
	if len(f.Data) > MaxFramePayload {
		return b, fmt.Errorf("%w: payload of %d bytes", ErrFrame, len(f.Data))
	}
	var h [FrameHeader]byte
	h[0] = byte(f.Kind)
	if f.Key {
		h[1] = flagKey
	}
	binary.BigEndian.PutUint32(h[4:], uint32(len(f.Data)))
	binary.BigEndian.PutUint64(h[8:], uint64(f.Start))
	binary.BigEndian.PutUint64(h[16:], uint64(f.End))
	b = append(b, h[:]...)
	return append(b, f.Data...), nil
}

// WriteFrame writes f to w in the stream framing, in one Write.
func WriteFrame(w io.Writer, f Fragment) error {
	b, err := AppendFrame(make([]byte, 0, FrameHeader+len(f.Data)), f)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame from r. At a clean end of r it returns io.EOF; a torn or malformed frame is
// [ErrFrame] (or io.ErrUnexpectedEOF). It never allocates more than [MaxFramePayload] for a payload, and
// only as the bytes arrive.
func ReadFrame(r io.Reader) (Fragment, error) {
	var h [FrameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Fragment{}, err
	}
	f := Fragment{Kind: Kind(h[0]), Key: h[1]&flagKey != 0,
		Start: int64(binary.BigEndian.Uint64(h[8:])), End: int64(binary.BigEndian.Uint64(h[16:]))}
	n := binary.BigEndian.Uint32(h[4:])
	switch {
	case f.Kind < KindInit || f.Kind > KindEnd:
		return Fragment{}, fmt.Errorf("%w: kind %d", ErrFrame, h[0])
	case h[1]&^flagKey != 0 || h[2] != 0 || h[3] != 0:
		return Fragment{}, fmt.Errorf("%w: reserved bits set", ErrFrame)
	case n > MaxFramePayload:
		return Fragment{}, fmt.Errorf("%w: payload of %d bytes", ErrFrame, n)
	case f.Kind == KindMedia && f.End < f.Start:
		return Fragment{}, fmt.Errorf("%w: media ends before it starts", ErrFrame)
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return Fragment{}, fmt.Errorf("read frame payload: %w", err)
	}
	if len(data) != int(n) {
		return Fragment{}, io.ErrUnexpectedEOF
	}
	f.Data = data
	return f, nil
}
