package appliance

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
)

func TestJudgePipeline(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const maxAge = 15 * time.Second
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	ev := func(k ingest.EventKind, d time.Duration) ingest.Event { return ingest.Event{Kind: k, Time: ago(d)} }
	for _, tc := range []struct {
		name   string
		st     record.Status
		since  time.Time
		ok     bool
		reason string
	}{
		{"recording", record.Status{LastWrite: ago(time.Second), LastEvent: ev(ingest.EventConnected, time.Hour)}, time.Time{}, true, healthRecording},
		{"write at the edge of maxAge", record.Status{LastWrite: ago(maxAge)}, time.Time{}, true, healthRecording},
		{"connected, first fragment pending", record.Status{LastEvent: ev(ingest.EventConnected, 3*time.Second)}, time.Time{}, true, healthActive},
		{"bad packets but alive", record.Status{LastWrite: ago(time.Minute), LastEvent: ev(ingest.EventBadPackets, time.Second)}, time.Time{}, true, healthActive},
		{"camera unreachable, retrying", record.Status{LastEvent: ev(ingest.EventDisconnected, 40*time.Second)}, time.Time{}, true, healthReconnecting},
		{"camera lost after recording", record.Status{LastWrite: ago(time.Minute), LastEvent: ev(ingest.EventDisconnected, 20*time.Second)}, time.Time{}, true, healthReconnecting},
		{"video loss, session about to time out", record.Status{LastWrite: ago(30 * time.Second), LastEvent: ev(ingest.EventVideoLoss, 25*time.Second), VideoLost: true}, time.Time{}, true, healthReconnecting},
		{"lost and silent past the reconnect bound", record.Status{LastEvent: ev(ingest.EventDisconnected, maxAge+ReconnectGrace+time.Second)}, time.Time{}, false, healthWedged},
		{"connected, then nothing: wedged", record.Status{LastWrite: ago(time.Minute), LastEvent: ev(ingest.EventConnected, time.Minute)}, time.Time{}, false, healthWedged},
		{"restored, then nothing: wedged", record.Status{LastWrite: ago(time.Minute), LastEvent: ev(ingest.EventVideoRestored, 50*time.Second)}, time.Time{}, false, healthWedged},
		{"just started", record.Status{}, ago(5 * time.Second), true, healthStarting},
		{"started and never reported", record.Status{}, ago(maxAge + time.Second), false, healthWedged},
		{"no start time known", record.Status{}, time.Time{}, false, healthWedged},
		{"old write, no events", record.Status{LastWrite: ago(time.Minute)}, ago(time.Second), false, healthWedged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := judgePipeline(now, maxAge, tc.st, tc.since)
			if ok != tc.ok || reason != tc.reason {
				t.Fatalf("judgePipeline = %v, %q; want %v, %q", ok, reason, tc.ok, tc.reason)
			}
		})
	}
}

// TestPipelineHealthCheck: one unreachable camera next to a recording one keeps the appliance healthy; a
// wedged one does not; a started or replaced pipeline gets maxAge to report; forgotten cameras are dropped.
func TestPipelineHealthCheck(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const maxAge = 10 * time.Second
	var h pipelineHealth
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	recording := func(now time.Time) record.Status { return record.Status{LastWrite: now.Add(-time.Second)} }

	// t0: a recording camera and one just started.
	ok, bad := h.check(at(0), maxAge, map[string]record.Status{"door": recording(at(0)), "yard": {}})
	if !ok || len(bad) != 0 {
		t.Fatalf("t0: %v %v", ok, bad)
	}
	// +8 s: yard's camera refused the connection; it is reconnecting.
	lost := record.Status{LastEvent: ingest.Event{Kind: ingest.EventDisconnected, Time: at(8 * time.Second)}}
	if ok, bad := h.check(at(8*time.Second), maxAge, map[string]record.Status{"door": recording(at(8 * time.Second)), "yard": lost}); !ok {
		t.Fatalf("+8s: unreachable camera made the appliance unhealthy: %v", bad)
	}
	// +40 s: still no newer attempt reported, within the reconnect bound.
	if ok, bad := h.check(at(40*time.Second), maxAge, map[string]record.Status{"door": recording(at(40 * time.Second)), "yard": lost}); !ok {
		t.Fatalf("+40s: %v", bad)
	}
	// +70 s: the lost camera's pipeline stopped reporting anything: wedged.
	if ok, bad := h.check(at(70*time.Second), maxAge, map[string]record.Status{"door": recording(at(70 * time.Second)), "yard": lost}); ok || len(bad) != 1 || bad[0] != "yard" {
		t.Fatalf("+70s: want yard wedged, got %v %v", ok, bad)
	}
	// yard is replaced (a new pipeline, empty status): it gets maxAge from now, then counts as wedged.
	if ok, bad := h.check(at(71*time.Second), maxAge, map[string]record.Status{"door": recording(at(71 * time.Second)), "yard": {}}); !ok {
		t.Fatalf("replaced pipeline not given time to start: %v", bad)
	}
	if ok, bad := h.check(at(82*time.Second), maxAge, map[string]record.Status{"door": recording(at(82 * time.Second)), "yard": {}}); ok || len(bad) != 1 {
		t.Fatalf("silent new pipeline not reported: %v %v", ok, bad)
	}
	// door wedges too: both named, sorted.
	old := record.Status{LastWrite: at(0), LastEvent: ingest.Event{Kind: ingest.EventConnected, Time: at(0)}}
	if _, bad := h.check(at(90*time.Second), maxAge, map[string]record.Status{"yard": {}, "door": old}); len(bad) != 2 || bad[0] != "door" || bad[1] != "yard" {
		t.Fatalf("want [door yard], got %v", bad)
	}
	// Forgotten cameras leave no state behind.
	if ok, _ := h.check(at(91*time.Second), maxAge, nil); !ok || len(h.silentAt) != 0 {
		t.Fatalf("state left: %v", h.silentAt)
	}
}

// TestHealthyWithUnreachableCamera runs a real recording pipeline (ingest → record → store, with a real
// bbolt index) for a camera whose address refuses connections: its ingest keeps reconnecting and reporting
// it, so the pipeline stays healthy, past maxAge, while it records nothing.
func TestHealthyWithUnreachableCamera(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "index.db"), store.Options{Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A port the kernel gave and nobody listens on any more.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := &Config{DataDir: dir, SegmentDuration: time.Minute, FragmentDuration: time.Second, VideoLossAfter: time.Second}
	log := slog.New(slog.DiscardHandler)
	pl := newPipelines(ctx, log, cfg, key.PublicKey(), db, func() {}, func(store.Segment) {}, nil)
	if err := pl.start(Camera{Name: "gone", URL: "rtsp://" + addr + "/stream", Transport: "tcp"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pl.stopAll(); err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	})
	var h pipelineHealth
	const maxAge = 2 * time.Second
	start := time.Now()
	deadline := start.Add(20 * time.Second)
	disconnects := 0
	var last time.Time
	for time.Since(start) < 3*maxAge {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		st := pl.status()["gone"]
		if ev := st.LastEvent; ev.Kind == ingest.EventDisconnected && ev.Time.After(last) {
			disconnects++
			last = ev.Time
		}
		if ok, bad := h.check(time.Now(), maxAge, pl.status()); !ok {
			t.Fatalf("unreachable camera judged wedged after %v: %v (status %+v)", time.Since(start), bad, st)
		}
		if !st.LastWrite.IsZero() {
			t.Fatalf("recorded from a closed port: %+v", st)
		}
		time.Sleep(100 * time.Millisecond) // polling interval of the check, not a wait for a condition
	}
	if disconnects < 2 {
		t.Fatalf("ingest reported %d failed attempts in %v; want it to keep retrying", disconnects, 3*maxAge)
	}
}
