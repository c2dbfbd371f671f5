package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/edgenvr/nvr/appliance/record"
)

// Replay errors callers branch on.
var (
	// ErrNoRecording: nothing is recorded at or after the requested time (within the range).
	ErrNoRecording = errors.New("no recording at that time")
	// ErrNoStart: a replay needs a start time (Range: clock=… or ?start=…).
	ErrNoStart = errors.New("replay needs a start time")
)

const (
	// replayWindow is how far ahead the index is asked for segments at a time.
	replayWindow = time.Hour
	// gapJump: a jump in recorded time longer than this is skipped at once instead of waited out.
	gapJump = 2 * time.Second
)

// replay is one client's recorded stream: its own gortsplib stream and a pump paced at real time (or
// Scale times it) from the vault.
type replay struct {
	b      *Bridge
	camera string
	stream *gortsplib.ServerStream
	media  *description.Media
	tr     track
	base   playRange // from the URL query, if any

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	pos    time.Time // the recorded time of the next frame, for a PLAY without Range after PAUSE
	closed bool
	// gate opens when the PLAY answer goes out: gortsplib counts the reader only after the PLAY handler
	// returns, and the first key frame must not be written before.
	gate     chan struct{}
	gateOnce *sync.Once
}

// playing opens the gate of the current PLAY (called when its answer is sent).
func (r *replay) playing() {
	r.mu.Lock()
	g, once := r.gate, r.gateOnce
	r.mu.Unlock()
	if g != nil {
		once.Do(func() { close(g) })
	}
}

// gateWait bounds how long a pump waits for its PLAY answer to go out.
const gateWait = 5 * time.Second

// newReplay prepares a replay stream for camera on srv, described by the init segment of the recording
// at the query's start (or the latest one).
func (b *Bridge) newReplay(srv *server, camera string, q playRange) (*replay, error) {
	if b.cfg.Recordings == nil {
		return nil, fmt.Errorf("replay %s: %w", camera, ErrNoRecording)
	}
	from, to := q.Start, q.End
	if from.IsZero() {
		from = b.cfg.Now().Add(-24 * time.Hour)
	}
	if to.IsZero() {
		to = b.cfg.Now().Add(time.Minute)
	}
	segs, err := b.cfg.Recordings.Segments(camera, from, to)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("replay %s: %w", camera, ErrNoRecording)
	}
	seg := segs[0]
	if q.Start.IsZero() {
		seg = segs[len(segs)-1]
	}
	cr, err := b.cfg.Recordings.Chunks(camera, seg.ID)
	if err != nil {
		return nil, err
	}
	init, err := cr.Next()
	cr.Close()
	if err != nil {
		return nil, fmt.Errorf("replay %s: init segment: %w", camera, err)
	}
	tr, err := parseInit(init)
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", camera, err)
	}
	desc, media := tr.description()
	st := &gortsplib.ServerStream{Server: srv.srv, Desc: desc}
	if err := st.Initialize(); err != nil {
		return nil, fmt.Errorf("replay %s: stream: %w", camera, err)
	}
	return &replay{b: b, camera: camera, stream: st, media: media, tr: tr, base: q}, nil
}

// cursor is a position in the recording being played.
type cursor struct {
	rd     ChunkReader
	seg    Segment
	frames []frame
	i      int
	pk     *packetizer
}

// play (re)starts the pump at r (or where a PAUSE left it) at the given scale and returns the recorded
// time of the first frame sent: the key frame at or before the requested start.
func (r *replay) play(rng playRange, have bool, scale float64, onEnd func()) (time.Time, time.Time, error) {
	r.stop()
	start, end := r.resolve(rng, have)
	if start.IsZero() {
		return time.Time{}, time.Time{}, ErrNoStart
	}
	pk, err := newPacketizer(r.tr, r.media)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	c := &cursor{pk: pk}
	first, err := r.seek(c, start, end)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		c.close()
		return time.Time{}, time.Time{}, errors.New("replay closed")
	}
	r.cancel, r.done = cancel, done
	gate := make(chan struct{})
	r.gate, r.gateOnce = gate, &sync.Once{}
	r.mu.Unlock()
	go func() {
		defer close(done)
		defer c.close()
		t := time.NewTimer(gateWait)
		select {
		case <-gate:
			t.Stop()
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		err := r.pump(ctx, c, end, scale)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.b.log.Warn("replay ended", "camera", r.camera, "err", err)
		}
		onEnd()
	}()
	return record.TimeOf(first), end, nil
}

// resolve turns a Range (or none) into an absolute start and end.
func (r *replay) resolve(rng playRange, have bool) (start, end time.Time) {
	r.mu.Lock()
	pos := r.pos
	r.mu.Unlock()
	end = r.base.End
	switch {
	case have && !rng.Start.IsZero():
		start = rng.Start
		if !rng.End.IsZero() {
			end = rng.End
		}
	case have && !rng.Now && !r.base.Start.IsZero():
		// npt= is relative to the URL's start.
		start = r.base.Start.Add(rng.NPT)
		if rng.NPTEnd > 0 {
			end = r.base.Start.Add(rng.NPTEnd)
		}
	case !pos.IsZero():
		start = pos // PLAY after PAUSE resumes
	default:
		start = r.base.Start
	}
	return start, end
}

// seek positions c at the fragment holding start (which begins with a key frame) and returns its first
// frame's time on the recording timeline.
func (r *replay) seek(c *cursor, start, end time.Time) (int64, error) {
	want := ticksOf(start)
	to := start.Add(replayWindow)
	if !end.IsZero() && end.Before(to) {
		to = end
	}
	segs, err := r.b.cfg.Recordings.Segments(r.camera, start, to)
	if err != nil {
		return 0, err
	}
	for _, s := range segs {
		if err := c.open(r, s); err != nil {
			return 0, err
		}
		for {
			ok, err := c.nextFragment(r)
			if err != nil {
				return 0, err
			}
			if !ok {
				break
			}
			// A frame shows from its time until the next: a start inside the fragment's last frame belongs
			// to this fragment, not to the next one.
			last := c.frames[len(c.frames)-1]
			if last.DTS+max(last.Dur, 1) <= want {
				continue // the fragment ends before the start
			}
			// Start at the latest key frame at or before the requested time (or the first after a gap).
			idx := 0
			for i, f := range c.frames {
				if f.Key && f.DTS <= want {
					idx = i
				}
			}
			c.i = idx
			if !end.IsZero() && c.frames[idx].DTS >= ticksOf(end) {
				return 0, fmt.Errorf("replay %s: %w", r.camera, ErrNoRecording)
			}
			return c.frames[idx].DTS, nil
		}
	}
	return 0, fmt.Errorf("replay %s: %w", r.camera, ErrNoRecording)
}

// open starts reading segment s, checking that its codec is the one described.
func (c *cursor) open(r *replay, s Segment) error {
	c.close()
	rd, err := r.b.cfg.Recordings.Chunks(r.camera, s.ID)
	if err != nil {
		return err
	}
	init, err := rd.Next()
	if err != nil {
		rd.Close()
		return fmt.Errorf("replay %s: init segment: %w", r.camera, err)
	}
	tr, err := parseInit(init)
	if err != nil {
		rd.Close()
		return err
	}
	if !r.tr.sameCodec(tr) {
		rd.Close()
		return fmt.Errorf("replay %s: the codec changed at %s: DESCRIBE again: %w", r.camera, formatClock(s.Start), ErrCodec)
	}
	c.pk.setParams(tr)
	c.rd, c.seg, c.frames, c.i = rd, s, nil, 0
	return nil
}

// nextFragment reads the next fragment of the open segment; false at its end.
func (c *cursor) nextFragment(r *replay) (bool, error) {
	if c.rd == nil {
		return false, nil
	}
	b, err := c.rd.Next()
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("replay %s: %w", r.camera, err)
	}
	frames, err := fragmentFrames(b, r.tr.h265)
	if err != nil {
		return false, fmt.Errorf("replay %s: %w", r.camera, err)
	}
	if len(frames) == 0 {
		return c.nextFragment(r)
	}
	c.frames, c.i = frames, 0
	return true, nil
}

func (c *cursor) close() {
	if c.rd != nil {
		c.rd.Close()
		c.rd = nil
	}
}

// pump sends frames from c, each when its recorded time comes (divided by scale) relative to the first,
// skipping gaps at once, until end, the end of the recording, or ctx.
func (r *replay) pump(ctx context.Context, c *cursor, end time.Time, scale float64) error {
	endTicks := int64(-1)
	if !end.IsZero() {
		endTicks = ticksOf(end)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var t0 time.Time
	var base, last int64
	started := false
	for {
		for ; c.i < len(c.frames); c.i++ {
			f := c.frames[c.i]
			if started && f.DTS <= last {
				continue // already sent (an open segment read again)
			}
			if endTicks >= 0 && f.DTS >= endTicks {
				return nil
			}
			if !started || time.Duration(float64(f.DTS-last)*float64(time.Second)/record.TimeScale) > gapJump {
				t0, base, started = r.b.cfg.Now(), f.DTS, true
			}
			due := t0.Add(time.Duration(float64(f.DTS-base) * float64(time.Second) / record.TimeScale / scale))
			if wait := due.Sub(r.b.cfg.Now()); wait > 0 {
				timer.Reset(wait)
				select {
				case <-ctx.Done():
					return nil
				case <-timer.C:
				}
			} else if ctx.Err() != nil {
				return nil
			}
			pkts, err := c.pk.packets(f)
			if err != nil {
				return err
			}
			ntp := record.TimeOf(f.PTS)
			for _, p := range pkts {
				if err := r.stream.WritePacketRTPWithNTP(r.media, p, ntp); err != nil {
					return err
				}
			}
			last = f.DTS
			r.mu.Lock()
			r.pos = record.TimeOf(f.DTS + 1)
			r.mu.Unlock()
		}
		ok, err := c.nextFragment(r)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		// The segment is done: go on with the next one after the last frame sent.
		from := record.TimeOf(last + 1)
		to := from.Add(replayWindow)
		if !end.IsZero() && end.Before(to) {
			to = end
		}
		segs, err := r.b.cfg.Recordings.Segments(r.camera, from, to)
		if err != nil {
			return err
		}
		next := -1
		for i, s := range segs {
			if s.ID == c.seg.ID {
				// Read again only a segment that was being recorded and has been closed since: it may hold
				// fragments written after it was opened. A replay ends at the live edge.
				if c.seg.Open && !s.Open {
					next = i
					break
				}
				continue
			}
			next = i
			break
		}
		if next < 0 {
			return nil // the end of the recording
		}
		if err := c.open(r, segs[next]); err != nil {
			return err
		}
	}
}

// stop ends the pump (PAUSE, a new PLAY, or the session's end) and waits for it.
func (r *replay) stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel, r.done = nil, nil
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// close ends the pump and the stream.
func (r *replay) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	r.stop()
	r.stream.Close()
}

// ticksOf places a wall-clock time on the recording timeline (90 kHz since the Unix epoch).
func ticksOf(t time.Time) int64 {
	return t.Unix()*record.TimeScale + int64(t.Nanosecond())*record.TimeScale/int64(time.Second)
}
