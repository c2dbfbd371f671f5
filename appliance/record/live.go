package record

import (
	"sync"
)

// LiveFragment is what a live viewer receives: the init segment when it joins and whenever the camera's
// parameters change, then every fragment as it is written, byte for byte what is recorded.
type LiveFragment struct {
	// Init is set (and Data empty) when a new init segment starts: a viewer resets its decoder.
	Init []byte
	// Data is one fMP4 fragment (moof+mdat).
	Data []byte
	// Start and End place the fragment on the recording timeline (90 kHz since the Unix epoch).
	Start, End int64
	// Key reports whether the fragment starts with a key frame (a viewer may start there).
	Key bool
}

// liveHub fans the recorder's fragments out to live viewers. A slow viewer loses fragments (its channel is
// full) and is told to resynchronise at the next key fragment; the recorder never waits for a viewer.
type liveHub struct {
	mu   sync.Mutex
	init []byte
	subs map[*liveSub]struct{}
}

type liveSub struct {
	ch      chan LiveFragment
	waitKey bool
}

// liveQueue is how many fragments (about one a second) a viewer may fall behind.
const liveQueue = 8

// Subscribe returns a channel of live fragments, starting with the current init segment (if recording) and
// the next fragment that starts with a key frame; cancel ends the subscription and closes the channel.
func (r *Recorder) Subscribe() (<-chan LiveFragment, func()) {
	h := &r.live
	s := &liveSub{ch: make(chan LiveFragment, liveQueue), waitKey: true}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*liveSub]struct{}{}
	}
	h.subs[s] = struct{}{}
	if h.init != nil {
		s.ch <- LiveFragment{Init: h.init}
	}
	h.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
			close(s.ch)
		})
	}
}

// publishInit announces a new init segment to every viewer.
func (h *liveHub) publishInit(init []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.init = init
	for s := range h.subs {
		s.waitKey = true
		h.send(s, LiveFragment{Init: init})
	}
}

// publish hands a written fragment to every viewer. b is copied only when someone watches.
func (h *liveHub) publish(b []byte, start, end int64, key bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	f := LiveFragment{Data: append([]byte(nil), b...), Start: start, End: end, Key: key}
	for s := range h.subs {
		if s.waitKey && !key {
			continue
		}
		s.waitKey = false
		h.send(s, f)
	}
}

func (h *liveHub) send(s *liveSub, f LiveFragment) {
	select {
	case s.ch <- f:
	default:
		// The viewer is behind: drop, and restart it at the next key fragment (with the init again, so a
		// decoder that was reset can start).
		s.waitKey = true
	}
}
