package ingest_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/internal/testpeer"
)

// collector is a Handler that keeps what it receives.
type collector struct {
	mu     sync.Mutex
	units  []*ingest.Unit
	events []ingest.Event
}

func (c *collector) Unit(u *ingest.Unit) {
	c.mu.Lock()
	c.units = append(c.units, u)
	c.mu.Unlock()
}

func (c *collector) Event(e ingest.Event) {
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
}

func (c *collector) snapshot() ([]*ingest.Unit, []ingest.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*ingest.Unit(nil), c.units...), append([]ingest.Event(nil), c.events...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasEvent(evs []ingest.Event, k ingest.EventKind, n int) bool {
	c := 0
	for _, e := range evs {
		if e.Kind == k {
			c++
		}
	}
	return c >= n
}

func run(t *testing.T, cfg ingest.Config, log *slog.Logger) (*collector, *ingest.Camera, context.CancelFunc) {
	t.Helper()
	cam, err := ingest.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cam.Run(ctx, col) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not stop within 15 s of its context ending")
		}
	})
	return col, cam, cancel
}

// TestGStreamerCamera records from GStreamer's RTSP server, a camera nobody here wrote, over TCP and UDP,
// in H.264 and H.265.
func TestGStreamerCamera(t *testing.T) {
	for _, tc := range []struct{ codec, transport string }{{"h264", "tcp"}, {"h264", "udp"}, {"h265", "tcp"}} {
		t.Run(tc.codec+"-"+tc.transport, func(t *testing.T) {
			srv := testpeer.StartGst(t, tc.codec, 0)
			col, cam, _ := run(t, ingest.Config{Name: "gst", URL: srv.URL, Transport: tc.transport}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			waitFor(t, 30*time.Second, "50 units", func() bool { u, _ := col.snapshot(); return len(u) >= 50 })
			units, events := col.snapshot()
			if !hasEvent(events, ingest.EventConnected, 1) {
				t.Errorf("no connected event: %v", events)
			}
			if !units[0].RandomAccess {
				t.Error("first unit is not a random access point")
			}
			want := map[string]ingest.Codec{"h264": ingest.CodecH264, "h265": ingest.CodecH265}[tc.codec]
			if units[0].Params.Codec != want {
				t.Errorf("codec %v, want %v", units[0].Params.Codec, want)
			}
			if w, h, err := units[0].Params.Size(); err != nil || w != 640 || h != 360 {
				t.Errorf("size %dx%d (%v), want 640x360", w, h, err)
			}
			keys := 0
			for i, u := range units {
				if u.RandomAccess {
					keys++
				}
				if i > 0 && u.DTS <= units[i-1].DTS {
					t.Fatalf("unit %d: DTS %d after %d", i, u.DTS, units[i-1].DTS)
				}
			}
			if keys < 2 {
				t.Errorf("%d key frames in %d units at key-int-max=25", keys, len(units))
			}
			// 25 fps: 50 units span about two seconds of camera time.
			span := time.Duration(units[49].DTS-units[0].DTS) * time.Second / ingest.ClockRate
			if span < 1800*time.Millisecond || span > 2200*time.Millisecond {
				t.Errorf("50 units span %v of stream time, want about 1.96 s", span)
			}
			if st := cam.Stats(); st.Sessions != 1 || st.Units < 50 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestReconnectAndVideoLoss kills the camera, expects video loss and a disconnection, restarts it on the
// same port, and expects a new session with a new timeline.
func TestReconnectAndVideoLoss(t *testing.T) {
	srv := testpeer.StartGst(t, "h264", 0)
	var logs strings.Builder
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	col, _, _ := run(t, ingest.Config{
		Name: "gst", URL: srv.URL, Transport: "tcp", Username: "viewer", Password: "s3cret-Passw0rd!",
		VideoLossAfter: time.Second, ReadTimeout: 2 * time.Second, BackoffMin: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond,
	}, log)
	waitFor(t, 30*time.Second, "first units", func() bool { u, _ := col.snapshot(); return len(u) >= 10 })
	srv.Stop()
	waitFor(t, 15*time.Second, "video loss and disconnection", func() bool {
		_, e := col.snapshot()
		return hasEvent(e, ingest.EventVideoLoss, 1) && hasEvent(e, ingest.EventDisconnected, 1)
	})
	testpeer.StartGst(t, "h264", srv.Port)
	waitFor(t, 30*time.Second, "second session", func() bool {
		u, e := col.snapshot()
		return hasEvent(e, ingest.EventConnected, 2) && hasEvent(e, ingest.EventVideoRestored, 1) && len(u) > 0 && u[len(u)-1].Session > units0Session(u)
	})
	units, _ := col.snapshot()
	var first *ingest.Unit
	for _, u := range units {
		if u.Session != units[0].Session {
			first = u
			break
		}
	}
	if first == nil || !first.RandomAccess || first.DTS != 0 {
		t.Fatalf("second session does not start with a key frame at DTS 0: %+v", first)
	}
	if !first.Wall.After(units[0].Wall) {
		t.Error("second session's wall clock is not after the first's")
	}
	logMu.Lock()
	defer logMu.Unlock()
	if strings.Contains(logs.String(), "s3cret-Passw0rd!") {
		t.Error("the camera password appears in the log")
	}
}

func units0Session(u []*ingest.Unit) uint64 { return u[0].Session }

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestNewRefusesBadConfig(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []ingest.Config{
		{Name: "", URL: "rtsp://127.0.0.1/x"},
		{Name: "a", URL: "http://127.0.0.1/x"},
		{Name: "a", URL: "rtsp://user:pw@127.0.0.1/x"},
		{Name: "a", URL: "rtsp:///x"},
		{Name: "a", URL: "rtsp://127.0.0.1/x", Transport: "sctp"},
	} {
		if _, err := ingest.New(c, log); err == nil {
			t.Errorf("%+v accepted", c)
		} else if strings.Contains(err.Error(), "pw@") {
			t.Errorf("error shows credentials: %v", err)
		}
	}
}
