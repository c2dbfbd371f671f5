package bridge

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/edgenvr/nvr/appliance/record"
)

// ErrNotRecording is returned when a camera has no live recording to serve.
var ErrNotRecording = errors.New("camera is not recording")

// liveKey names a live stream: one per camera and listener, shared by every reader.
type liveKey struct {
	srv    *server
	camera string
}

// liveHub holds the live streams being served.
type liveHub struct {
	b  *Bridge
	mu sync.Mutex
	m  map[liveKey]*liveStream
}

// liveStream re-packetizes one camera's live fragments into RTP for all its readers on one listener.
type liveStream struct {
	hub    *liveHub
	key    liveKey
	stream *gortsplib.ServerStream
	media  *description.Media
	tr     track
	cancel func() // ends the subscription, which ends the pump

	// Guarded by hub.mu.
	readers int
	idle    time.Time // when the last reader left (or the stream was made)
	closed  bool
	done    chan struct{}
}

// get returns the camera's live stream on srv, starting it if needed (waiting up to LiveWait for the
// recorder's init segment).
func (h *liveHub) get(srv *server, camera string) (*liveStream, error) {
	k := liveKey{srv: srv, camera: camera}
	h.mu.Lock()
	if ls := h.m[k]; ls != nil && !ls.closed {
		ls.idle = h.b.cfg.Now()
		h.mu.Unlock()
		return ls, nil
	}
	h.mu.Unlock()

	if h.b.cfg.Live == nil {
		return nil, fmt.Errorf("live %s: %w", camera, ErrNotRecording)
	}
	ch, cancel, err := h.b.cfg.Live(camera)
	if err != nil {
		return nil, fmt.Errorf("live %s: %w: %v", camera, ErrNotRecording, err)
	}
	timer := time.NewTimer(h.b.cfg.LiveWait)
	defer timer.Stop()
	var init []byte
	for init == nil {
		select {
		case f, ok := <-ch:
			if !ok {
				cancel()
				return nil, fmt.Errorf("live %s: %w", camera, ErrNotRecording)
			}
			init = f.Init
		case <-timer.C:
			cancel()
			return nil, fmt.Errorf("live %s: no init segment within %v: %w", camera, h.b.cfg.LiveWait, ErrNotRecording)
		}
	}
	tr, err := parseInit(init)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("live %s: %w", camera, err)
	}
	desc, media := tr.description()
	st := &gortsplib.ServerStream{Server: srv.srv, Desc: desc}
	if err := st.Initialize(); err != nil {
		cancel()
		return nil, fmt.Errorf("live %s: stream: %w", camera, err)
	}
	pk, err := newPacketizer(tr, media)
	if err != nil {
		st.Close()
		cancel()
		return nil, err
	}
	ls := &liveStream{hub: h, key: k, stream: st, media: media, tr: tr, cancel: cancel, idle: h.b.cfg.Now(), done: make(chan struct{})}

	h.mu.Lock()
	if other := h.m[k]; other != nil && !other.closed {
		// Another DESCRIBE made it meanwhile: use that one.
		other.idle = h.b.cfg.Now()
		h.mu.Unlock()
		st.Close()
		cancel()
		return other, nil
	}
	h.m[k] = ls
	h.mu.Unlock()
	go ls.pump(ch, pk)
	return ls, nil
}

// acquire counts a reader (a SETUP); release uncounts it (the session closed).
func (ls *liveStream) acquire() bool {
	ls.hub.mu.Lock()
	defer ls.hub.mu.Unlock()
	if ls.closed {
		return false
	}
	ls.readers++
	return true
}

func (ls *liveStream) release() {
	ls.hub.mu.Lock()
	defer ls.hub.mu.Unlock()
	if ls.readers > 0 {
		ls.readers--
	}
	if ls.readers == 0 {
		ls.idle = ls.hub.b.cfg.Now()
	}
}

// pump writes every fragment of the subscription to the stream until the subscription or the stream
// ends, and ends the stream when nobody read it for LiveIdle.
func (ls *liveStream) pump(ch <-chan record.LiveFragment, pk *packetizer) {
	defer close(ls.done)
	defer ls.close()
	log := ls.hub.b.log.With("camera", ls.key.camera)
	check := time.NewTicker(ls.hub.b.cfg.LiveIdle / 2)
	defer check.Stop()
	for {
		select {
		case f, ok := <-ch:
			if !ok {
				ls.hub.mu.Lock()
				closing := ls.closed
				ls.hub.mu.Unlock()
				if !closing {
					log.Info("live stream ended: the camera stopped recording")
				}
				return
			}
			if f.Init != nil {
				tr, err := parseInit(f.Init)
				if err != nil || !ls.tr.sameCodec(tr) {
					// The SDP no longer describes the video: readers must DESCRIBE again.
					log.Info("live stream ended: the camera's codec changed", "err", err)
					return
				}
				pk.setParams(tr)
				continue
			}
			frames, err := fragmentFrames(f.Data, ls.tr.h265)
			if err != nil {
				log.Warn("live fragment skipped", "err", err)
				continue
			}
			for _, fr := range frames {
				pkts, err := pk.packets(fr)
				if err != nil {
					log.Warn("live frame skipped", "err", err)
					continue
				}
				ntp := record.TimeOf(fr.PTS)
				for _, p := range pkts {
					if err := ls.stream.WritePacketRTPWithNTP(ls.media, p, ntp); err != nil {
						return
					}
				}
			}
		case <-check.C:
			ls.hub.mu.Lock()
			idle := ls.readers == 0 && ls.hub.b.cfg.Now().Sub(ls.idle) >= ls.hub.b.cfg.LiveIdle
			ls.hub.mu.Unlock()
			if idle {
				return
			}
		}
	}
}

// close ends the stream (disconnecting its readers) and the subscription.
func (ls *liveStream) close() {
	ls.hub.mu.Lock()
	if ls.closed {
		ls.hub.mu.Unlock()
		return
	}
	ls.closed = true
	if ls.hub.m[ls.key] == ls {
		delete(ls.hub.m, ls.key)
	}
	ls.hub.mu.Unlock()
	ls.cancel()
	ls.stream.Close()
}

func (h *liveHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.m)
}

// closeAll ends every live stream and waits for the pumps.
func (h *liveHub) closeAll() {
	h.mu.Lock()
	all := make([]*liveStream, 0, len(h.m))
	for _, ls := range h.m {
		all = append(all, ls)
	}
	h.mu.Unlock()
	for _, ls := range all {
		ls.close()
		<-ls.done
	}
}
