package ingest

import "time"

// Codec names the video coding of a stream. The appliance never transcodes: it records what the camera sends.
type Codec int

// Codecs the recorder accepts.
const (
	CodecH264 Codec = iota + 1
	CodecH265
)

// String returns the codec's usual name.
func (c Codec) String() string {
	switch c {
	case CodecH264:
		return "H264"
	case CodecH265:
		return "H265"
	}
	return "unknown"
}

// ClockRate is the RTP clock of every video stream the ingest hands on (RFC 6184, RFC 7798): 90 kHz.
const ClockRate = 90000

// Params are the parameter sets that decoding needs. A change of any of them (a new resolution, a new profile)
// makes a new *Params value: consumers compare pointers, or use Equal.
type Params struct {
	Codec Codec
	VPS   []byte // H.265 only
	SPS   []byte
	PPS   []byte
}

// Unit is one access unit (one picture) in decode order.
type Unit struct {
	// Session counts RTSP sessions of this camera since the ingest started. Timestamps are continuous only
	// within one session; a new session (a reconnect) starts a new timeline.
	Session uint64
	// Params are the parameter sets in force for this unit.
	Params *Params
	// DTS and PTS are in ClockRate units, relative to the start of the session; DTS never decreases within
	// a session.
	DTS, PTS int64
	// Wall is the appliance's wall-clock time of the session start plus DTS: where this picture sits in real time.
	Wall time.Time
	// NALUs are the picture's NAL units without start codes, parameter sets included if the camera sent them.
	NALUs [][]byte
	// AVCC holds the same NAL units, each after its 4-byte big-endian length: an MP4 sample as is. NALUs
	// point into it.
	AVCC []byte
	// RandomAccess is true for an IDR (H.264) or IRAP (H.265) picture: a fragment may start here.
	RandomAccess bool
}

// EventKind says what happened to a camera's stream.
type EventKind int

// Event kinds.
const (
	EventConnected     EventKind = iota + 1 // a session started playing
	EventDisconnected                       // the session ended; Err says why
	EventVideoLoss                          // no picture for longer than the configured silence
	EventVideoRestored                      // pictures flow again after a video loss
	EventBadPackets                         // malformed or out-of-order RTP was dropped; Count says how many
)

// String returns a short name for logs and alarms.
func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventDisconnected:
		return "disconnected"
	case EventVideoLoss:
		return "video-loss"
	case EventVideoRestored:
		return "video-restored"
	case EventBadPackets:
		return "bad-packets"
	}
	return "unknown"
}

// Event is a change in a camera stream's state.
type Event struct {
	Camera string
	Kind   EventKind
	Time   time.Time
	Err    error
	Count  int
}
