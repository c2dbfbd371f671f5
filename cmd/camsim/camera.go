package main

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/pion/rtp"
)

const (
	frameRate     = 25
	frameInterval = time.Second / frameRate
	clockRate     = 90000
	ticksPerFrame = clockRate / frameRate
	// maxCatchUp bounds how many frames one tick sends when the scheduler
	// fell behind; beyond that the timeline skips ahead like a real camera.
	// Two seconds: a camera's own buffers and TCP ride out a short stall of
	// the machine, so a busy test host must not turn into lost frames.
	maxCatchUp = 2 * frameRate
	// malformedPerFrame spreads a malformed burst over several frames.
	malformedPerFrame = 10
)

// output is one camera's stream on one RTSP server (plain or TLS).
type output struct {
	stream *gortsplib.ServerStream
	media  *description.Media
	format format.Format
}

// camera streams a looping clip to its outputs from a single goroutine.
type camera struct {
	name    string
	log     *slog.Logger
	clips   [2]*clip // [0] the configured resolution, [1] the other one (may be nil)
	outputs []output
	rnd     *rand.Rand // used only by the run goroutine

	frames      atomic.Uint64
	writeErrors atomic.Uint64 // packets a reader's full queue refused

	mu        sync.Mutex
	sessions  map[*gortsplib.ServerSession]struct{}
	stallEnd  time.Time
	malformed int
	switchRes bool

	// state owned by the run goroutine
	cur    int // index into clips
	pos    int // next frame of clips[cur]
	seq    uint16
	tsBase uint32
	sent   uint64 // frames advanced on the timeline (sent or skipped)
}

func newCamera(name string, clips [2]*clip, log *slog.Logger, seed uint64) *camera {
	rnd := rand.New(rand.NewPCG(seed, uint64(len(name))))
	return &camera{
		name:     name,
		log:      log.With("cam", name),
		clips:    clips,
		rnd:      rnd,
		sessions: make(map[*gortsplib.ServerSession]struct{}),
		seq:      uint16(rnd.Uint32()),
		tsBase:   rnd.Uint32(),
	}
}

// newDescription returns the SDP description for clip c.
func newDescription(c *clip) (*description.Session, format.Format) {
	var f format.Format
	switch c.codec {
	case "h265":
		f = &format.H265{PayloadTyp: rtpPayloadType, VPS: c.vps, SPS: c.sps, PPS: c.pps}
	default:
		f = &format.H264{PayloadTyp: rtpPayloadType, PacketizationMode: 1, SPS: c.sps, PPS: c.pps}
	}
	return &description.Session{
		Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{f}}},
	}, f
}

func (c *camera) addSession(ss *gortsplib.ServerSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sessions[ss] = struct{}{}
}

func (c *camera) removeSession(ss *gortsplib.ServerSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sessions, ss)
}

func (c *camera) sessionCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

// run sends frames at real-time pace until ctx ends.
func (c *camera) run(ctx context.Context) error {
	start := time.Now()
	t := time.NewTicker(frameInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			due := uint64(now.Sub(start) / frameInterval)
			if due > c.sent+maxCatchUp {
				c.sent = due - maxCatchUp
			}
			for c.sent < due {
				c.step(now)
			}
		}
	}
}

// step advances the timeline by one frame, sending it unless stalled.
func (c *camera) step(now time.Time) {
	ts := c.tsBase + uint32(c.sent*ticksPerFrame)
	c.sent++

	c.mu.Lock()
	stalled := now.Before(c.stallEnd)
	malformed := 0
	if !stalled {
		malformed = min(c.malformed, malformedPerFrame)
		c.malformed -= malformed
	}
	switchRes := c.switchRes && c.clips[c.cur].frames[c.pos].idr
	if switchRes {
		c.switchRes = false
	}
	readers := len(c.sessions)
	c.mu.Unlock()

	if switchRes {
		c.cur = 1 - c.cur
		c.pos = 0
		cl := c.clips[c.cur]
		for _, o := range c.outputs {
			switch f := o.format.(type) {
			case *format.H264:
				f.SafeSetParams(cl.sps, cl.pps)
			case *format.H265:
				f.SafeSetParams(cl.vps, cl.sps, cl.pps)
			}
		}
		c.log.Info("fault applied: resolution switched", "width", cl.width, "height", cl.height)
	}

	cl := c.clips[c.cur]
	frame := cl.frames[c.pos]
	c.pos = (c.pos + 1) % len(cl.frames)
	if stalled {
		return
	}
	for i := range malformed {
		c.write(c.malformedPacket(i, ts))
	}
	if readers > 0 {
		for i, p := range frame.payloads {
			c.write(&rtp.Packet{
				Header: rtp.Header{
					Version:        2,
					Marker:         i == len(frame.payloads)-1,
					PayloadType:    rtpPayloadType,
					SequenceNumber: c.nextSeq(),
					Timestamp:      ts,
				},
				Payload: p,
			})
		}
	}
	c.frames.Add(1)
}

func (c *camera) nextSeq() uint16 {
	s := c.seq
	c.seq++
	return s
}

// write sends pkt on every output. WritePacketRTP overwrites the SSRC, so a
// copy of the header is made per output; the payload is shared read-only.
func (c *camera) write(pkt *rtp.Packet) {
	for _, o := range c.outputs {
		p := *pkt
		if err := o.stream.WritePacketRTP(o.media, &p); err != nil {
			c.log.Debug("write RTP packet", "err", err)
		}
	}
}
