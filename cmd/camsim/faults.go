package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/pion/rtp"
)

// Fault kinds accepted by POST /fault.
const (
	faultDrop       = "drop"
	faultStall      = "stall"
	faultMalformed  = "malformed"
	faultResolution = "resolution"
)

// maxMalformed bounds one malformed burst.
const maxMalformed = 100000

// errNoAlternateClip is returned for a resolution fault when the camera has
// no clip at the other resolution.
var errNoAlternateClip = errors.New("no clip at the other resolution")

// camStats is one camera's entry in GET /stats.
type camStats struct {
	Frames      uint64 `json:"frames"`
	Sessions    int    `json:"sessions"`
	WriteErrors uint64 `json:"write_errors"`
}

// controlHandler serves the fault-injection API:
//
//	GET  /stats                                   frames sent and sessions per camera
//	POST /fault?cam=cam1&kind=drop                close every session of cam1
//	POST /fault?cam=cam1&kind=stall&for=5s        send nothing for 5 s, keep sessions
//	POST /fault?cam=cam1&kind=malformed&count=50  send 50 malformed RTP packets
//	POST /fault?cam=cam1&kind=resolution          switch clip resolution at the next IDR
func controlHandler(cams map[string]*camera, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		out := make(map[string]camStats, len(cams))
		for name, c := range cams {
			out[name] = camStats{Frames: c.frames.Load(), Sessions: c.sessionCount(), WriteErrors: c.writeErrors.Load()}
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(out); err != nil {
			log.Debug("write stats", "err", err)
		}
	})
	mux.HandleFunc("POST /fault", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		c, ok := cams[q.Get("cam")]
		if !ok {
			http.Error(w, fmt.Sprintf("unknown camera %q", q.Get("cam")), http.StatusNotFound)
			return
		}
		if err := c.inject(q.Get("kind"), q.Get("for"), q.Get("count")); err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, errNoAlternateClip) {
				status = http.StatusConflict
			}
			http.Error(w, err.Error(), status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"ok":true}`)
	})
	return mux
}

// inject schedules or applies a fault; its arguments are the query values.
func (c *camera) inject(kind, forArg, countArg string) error {
	switch kind {
	case faultDrop:
		c.mu.Lock()
		sessions := make([]*gortsplib.ServerSession, 0, len(c.sessions))
		for ss := range c.sessions {
			sessions = append(sessions, ss)
		}
		c.mu.Unlock()
		for _, ss := range sessions {
			ss.Close()
		}
		c.log.Info("fault: drop", "sessions", len(sessions))
	case faultStall:
		d, err := time.ParseDuration(forArg)
		if err != nil || d <= 0 {
			return fmt.Errorf("stall: bad duration %q (want e.g. for=5s)", forArg)
		}
		c.mu.Lock()
		c.stallEnd = time.Now().Add(d)
		c.mu.Unlock()
		c.log.Info("fault: stall", "for", d)
	case faultMalformed:
		n, err := strconv.Atoi(countArg)
		if err != nil || n <= 0 || n > maxMalformed {
			return fmt.Errorf("malformed: bad count %q (want 1..%d)", countArg, maxMalformed)
		}
		c.mu.Lock()
		c.malformed += n
		c.mu.Unlock()
		c.log.Info("fault: malformed", "count", n)
	case faultResolution:
		if c.clips[1] == nil {
			return fmt.Errorf("resolution: %w", errNoAlternateClip)
		}
		c.mu.Lock()
		c.switchRes = true
		c.mu.Unlock()
		c.log.Info("fault: resolution change requested")
	default:
		return fmt.Errorf("unknown fault kind %q (want drop, stall, malformed or resolution)", kind)
	}
	return nil
}

// malformedPacket builds the i-th packet of a malformed burst. The kinds
// rotate: FU header with both start and end bits, a fragmentation unit that
// is started but never finished, a truncated single NAL unit, random bytes, a
// huge timestamp jump, a sequence number jump and a payload type that the SDP
// does not announce (see wire.go).
func (c *camera) malformedPacket(i int, ts uint32) *rtp.Packet {
	h265 := c.clips[c.cur].codec == "h265"
	pkt := &rtp.Packet{Header: rtp.Header{
		Version:     2,
		PayloadType: rtpPayloadType,
		Timestamp:   ts,
	}}
	random := func(n int) []byte {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(c.rnd.Uint32())
		}
		return b
	}
	switch i % 7 {
	case 0: // FU with start and end set at once
		if h265 {
			pkt.Payload = append([]byte{49 << 1, 1, 0xc0 | 19}, random(64)...)
		} else {
			pkt.Payload = append([]byte{0x7c, 0xc5}, random(64)...)
		}
	case 1: // FU start that no continuation follows
		if h265 {
			pkt.Payload = append([]byte{49 << 1, 1, 0x80 | 19}, random(300)...)
		} else {
			pkt.Payload = append([]byte{0x7c, 0x85}, random(300)...)
		}
	case 2: // NAL unit header only: the IDR slice is truncated
		if h265 {
			pkt.Payload = []byte{19 << 1}
		} else {
			pkt.Payload = []byte{0x65}
		}
		pkt.Marker = true
	case 3: // random bytes
		pkt.Payload = random(1 + c.rnd.IntN(1200))
	case 4: // timestamp jump
		pkt.Timestamp = ts + 1<<31 + c.rnd.Uint32()>>4
		pkt.Payload = random(32)
	case 5: // sequence jump
		c.seq += 1000 + uint16(c.rnd.IntN(20000))
		pkt.Payload = random(32)
	case 6: // payload type not in the SDP, rewritten on the wire
		pkt.Payload = append(bytes.Clone(wrongPTCookie), random(32)...)
	}
	pkt.SequenceNumber = c.nextSeq()
	return pkt
}
