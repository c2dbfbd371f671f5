package web

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/playback"
	"github.com/edgenvr/nvr/appliance/record"
)

// LiveSource hands out a recording camera's fragments as they are written (the appliance's Live): the init
// segment first, then fragments from the next key frame on. cancel ends the subscription.
type LiveSource interface {
	Live(camera string) (<-chan record.LiveFragment, func(), error)
}

// PlaybackSource reads recordings back: a camera's timeline and streams of decrypted fragments.
type PlaybackSource interface {
	Timeline(camera string, from, to time.Time) (playback.Timeline, error)
	Stream(ctx context.Context, req playback.Request, fn func(playback.Fragment) error) (playback.Result, error)
}

// Stream limits.
const (
	// liveRecheck is how often a live stream's right is decided again (and audited): a schedule that ends or
	// a role withdrawn stops the picture.
	liveRecheck = time.Minute
	// streamWrite bounds each write of a stream: a viewer that stops reading for longer is dropped.
	streamWrite = 2 * time.Minute
)

// mediaStats counts what the media endpoints serve, for the metrics endpoint.
type mediaStats struct {
	liveViewers     atomic.Int64
	playbackStreams atomic.Int64
	liveFragments   atomic.Uint64
	playFragments   atomic.Uint64
	playBytes       atomic.Uint64
	exports         atomic.Uint64
	exportFailures  atomic.Uint64
	logins          [3]atomic.Uint64 // ok, failed, throttled (password step)
	secondFactor    [3]atomic.Uint64 // ok, failed, throttled
}

// frameWriter writes frames of a stream, sending the response header with the first one and flushing
// each, with a fresh write deadline per frame.
type frameWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	buf     []byte
}

func newFrameWriter(w http.ResponseWriter) *frameWriter {
	rc := http.NewResponseController(w)
	// A stream lives longer than the server's read limit; the client sends nothing more on it.
	_ = rc.SetReadDeadline(time.Time{})
	return &frameWriter{w: w, rc: rc}
}

// open sends the response header.
func (fw *frameWriter) open() error {
	if fw.started {
		return nil
	}
	fw.w.Header().Set("Content-Type", playback.ContentType)
	fw.w.WriteHeader(http.StatusOK)
	fw.started = true
	return fw.rc.Flush()
}

func (fw *frameWriter) write(f playback.Fragment) error {
	if err := fw.open(); err != nil {
		return err
	}
	var err error
	if fw.buf, err = playback.AppendFrame(fw.buf[:0], f); err != nil {
		return err
	}
	_ = fw.rc.SetWriteDeadline(time.Now().Add(streamWrite))
	if _, err := fw.w.Write(fw.buf); err != nil {
		return err
	}
	if len(fw.buf) > 1<<20 {
		fw.buf = nil // do not keep a large fragment's buffer for the stream's lifetime
	}
	return fw.rc.Flush()
}

func (fw *frameWriter) end(next int64, reason string) {
	_ = fw.write(playback.Fragment{Kind: playback.KindEnd, Start: next, Data: []byte(reason)})
}

// liveStream serves a camera's live fragments in the stream framing, straight from the recorder: the
// bytes that are recorded, no transcoding.
func (s *Server) liveStream(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	cam := r.PathValue("camera")
	req := authz.Request{Action: authz.Live, Camera: cam}
	if _, ok := s.decide(w, r, c, req); !ok {
		return
	}
	if s.cfg.Live == nil {
		s.fail(w, r, c, http.StatusServiceUnavailable, "live view is not available on this appliance")
		return
	}
	ch, cancel, err := s.cfg.Live.Live(cam)
	if err != nil {
		s.fail(w, r, c, http.StatusNotFound, "the camera is not recording")
		return
	}
	defer cancel()
	s.stats.liveViewers.Add(1)
	defer s.stats.liveViewers.Add(-1)
	fw := newFrameWriter(w)
	// The header goes out at once, so the viewer knows it is allowed while the next key frame comes.
	if err := fw.open(); err != nil {
		return
	}
	recheck := time.NewTicker(liveRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-recheck.C:
			req.Subject, req.Source = c.sub, source(r)
			if d := s.az.Decide(req); !d.Allow {
				fw.end(0, "denied: "+d.Reason)
				return
			}
		case lf, ok := <-ch:
			if !ok {
				fw.end(0, "the camera stopped recording")
				return
			}
			f := playback.Fragment{Kind: playback.KindMedia, Data: lf.Data, Start: lf.Start, End: lf.End, Key: lf.Key}
			if lf.Init != nil {
				f = playback.Fragment{Kind: playback.KindInit, Data: lf.Init}
			} else {
				s.stats.liveFragments.Add(1)
			}
			if err := fw.write(f); err != nil {
				return
			}
		}
	}
}

// parseInstant reads an RFC 3339 time (with fractions) from a query parameter.
func parseInstant(q url.Values, key string) (time.Time, bool, error) {
	v := q.Get(key)
	if v == "" {
		return time.Time{}, false, nil
	}
	if len(v) > 64 {
		return time.Time{}, false, errors.New(key + ": too long")
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false, errors.New(key + ": use RFC 3339 time")
	}
	return t, true, nil
}

// playbackStream serves a camera's recording from an instant on, in the stream framing. Each request is
// decided (the camera, the role's schedule and maximum age at that instant) and audited; a viewer carries
// on with a new request from the instant the last one ended at.
func (s *Server) playbackStream(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	cam := r.PathValue("camera")
	q := r.URL.Query()
	at, ok, err := parseInstant(q, "at")
	if err == nil && !ok {
		err = errors.New("at: required")
	}
	var until time.Time
	if err == nil {
		until, _, err = parseInstant(q, "until")
	}
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	if now := s.cfg.Now(); at.After(now) {
		s.fail(w, r, c, http.StatusBadRequest, "at: that instant is in the future")
		return
	}
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.Playback, Camera: cam, From: at}); !ok {
		return
	}
	if s.cfg.Playback == nil {
		s.fail(w, r, c, http.StatusServiceUnavailable, "playback is not available on this appliance")
		return
	}
	s.stats.playbackStreams.Add(1)
	defer s.stats.playbackStreams.Add(-1)
	fw := newFrameWriter(w)
	res, err := s.cfg.Playback.Stream(r.Context(), playback.Request{Camera: cam, At: at, Until: until}, func(f playback.Fragment) error {
		if f.Kind == playback.KindMedia {
			s.stats.playFragments.Add(1)
			s.stats.playBytes.Add(uint64(len(f.Data)))
		}
		return fw.write(f)
	})
	switch {
	case errors.Is(err, playback.ErrNothingRecorded) && !fw.started:
		s.fail(w, r, c, http.StatusNotFound, "nothing recorded from that instant on")
		return
	case err != nil && r.Context().Err() == nil:
		s.log.Error("web: playback", "camera", cam, "err", err)
		if !fw.started {
			s.fail(w, r, c, http.StatusInternalServerError, "the recording could not be read")
			return
		}
		fw.end(0, "the recording could not be read")
		return
	case err != nil:
		return // the viewer went away
	}
	var next int64
	if !res.Next.IsZero() {
		next = playback.Ticks(res.Next)
	}
	fw.end(next, "continue")
}

// timelineData is the timeline endpoint's answer.
type timelineData struct {
	playback.Timeline
	Alarms []Alarm `json:"alarms"`
	Now    time.Time
}

// timeline answers what was recorded of a camera in a range, with its gaps and alarms.
func (s *Server) timeline(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	cam := r.PathValue("camera")
	from, to, err := parseRange(r.URL.Query(), s.cfg.Now())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.Playback, Camera: cam, From: from}); !ok {
		return
	}
	if s.cfg.Playback == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "playback is not available on this appliance"})
		return
	}
	tl, err := s.cfg.Playback.Timeline(cam, from, to)
	if err != nil {
		s.log.Error("web: timeline", "camera", cam, "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "the index could not be read"})
		return
	}
	d := timelineData{Timeline: tl, Alarms: []Alarm{}, Now: s.cfg.Now().UTC()}
	if s.cfg.Status != nil {
		for _, a := range s.cfg.Status.Dashboard().Alarms {
			if strings.EqualFold(a.Camera, cam) && !a.Time.Before(from) && a.Time.Before(to) {
				d.Alarms = append(d.Alarms, a)
			}
		}
	}
	writeJSON(w, http.StatusOK, d)
}
