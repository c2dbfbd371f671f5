package appliance

import (
	"sort"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/record"
)

// ReconnectGrace is how long a pipeline whose camera is lost may go without a new event and still count
// as alive: ingest's longest pause between reconnection attempts (its BackoffMax, 30 s) plus one attempt
// bounded by its read timeout (10 s), with slack. A lost camera reports a disconnection at every failed
// attempt, so a pipeline silent for longer than this is wedged, not reconnecting.
const ReconnectGrace = 45 * time.Second

// Pipeline health verdicts, as Healthy's stale list explains them.
const (
	healthRecording    = "recording"    // wrote a fragment within maxAge
	healthActive       = "active"       // no fragment yet, but the stream reported an event within maxAge
	healthReconnecting = "reconnecting" // camera lost; ingest keeps reporting failed attempts
	healthStarting     = "starting"     // started within maxAge, nothing reported yet
	healthWedged       = "wedged"       // no fragment and no event: the pipeline is stuck
)

// judgePipeline says whether one pipeline is alive at now: it made progress (a fragment written) within
// maxAge, or it reported something (an event) within maxAge, or its last report says its camera is lost
// and that report is within maxAge+ReconnectGrace. since is when this pipeline was first seen without any
// sign of life (a pipeline just started). Only a pipeline that does none of these is wedged: one unreachable
// camera must not make the watchdog restart recording of every other camera.
func judgePipeline(now time.Time, maxAge time.Duration, st record.Status, since time.Time) (bool, string) {
	if !st.LastWrite.IsZero() && now.Sub(st.LastWrite) <= maxAge {
		return true, healthRecording
	}
	ev := st.LastEvent
	if !ev.Time.IsZero() {
		age := now.Sub(ev.Time)
		if age <= maxAge {
			return true, healthActive
		}
		lost := ev.Kind == ingest.EventDisconnected || ev.Kind == ingest.EventVideoLoss
		if lost && age <= maxAge+ReconnectGrace {
			return true, healthReconnecting
		}
		return false, healthWedged
	}
	if st.LastWrite.IsZero() && !since.IsZero() && now.Sub(since) <= maxAge {
		return true, healthStarting
	}
	return false, healthWedged
}

// pipelineHealth remembers when each pipeline was first seen without any sign of life, so a freshly
// started (or replaced) pipeline gets maxAge to report something before it counts as wedged.
type pipelineHealth struct {
	mu       sync.Mutex
	silentAt map[string]time.Time
}

// check judges every pipeline in status and returns whether all are alive and the names of those that
// are not, sorted.
func (h *pipelineHealth) check(now time.Time, maxAge time.Duration, status map[string]record.Status) (bool, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.silentAt == nil {
		h.silentAt = map[string]time.Time{}
	}
	for name := range h.silentAt {
		if _, ok := status[name]; !ok {
			delete(h.silentAt, name)
		}
	}
	var bad []string
	for name, st := range status {
		silent := st.LastWrite.IsZero() && st.LastEvent.Time.IsZero()
		if !silent {
			delete(h.silentAt, name)
		} else if _, ok := h.silentAt[name]; !ok {
			h.silentAt[name] = now
		}
		if ok, _ := judgePipeline(now, maxAge, st, h.silentAt[name]); !ok {
			bad = append(bad, name)
		}
	}
	sort.Strings(bad)
	return len(bad) == 0, bad
}
