package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestCameraFaults injects camsim's faults — a dropped connection, a stall, a burst of malformed RTP and a
// resolution change — and expects reconnects, video-loss events and new segments, never a crash or a corrupt
// segment.
func TestCameraFaults(t *testing.T) {
	cs := startCamsim(t, 1)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1"}, cs.Password,
		"-segment", "30s", "-transport", "tcp", "-video-loss", "1s")
	began := time.Now()
	nvrd := a.start()
	count := func(event string) int {
		n := 0
		for _, e := range a.events("camera event") {
			if e["event"] == event {
				n++
			}
		}
		return n
	}
	closed := func() int { return len(a.events("segment closed")) }
	waitFor(t, 30*time.Second, "connected", func() bool { return count("connected") == 1 })
	time.Sleep(2 * time.Second) // some recording before the first fault

	cs.fault(t, "cam=cam1&kind=drop")
	waitFor(t, 30*time.Second, "reconnect after drop", func() bool { return count("disconnected") >= 1 && count("connected") >= 2 })
	waitFor(t, 10*time.Second, "segment closed at the drop", func() bool { return closed() >= 1 })

	cs.fault(t, "cam=cam1&kind=stall&for=3s")
	waitFor(t, 30*time.Second, "video loss and restore after stall", func() bool {
		return count("video-loss") >= 1 && count("video-restored") >= 1
	})

	cs.fault(t, "cam=cam1&kind=malformed&count=200")
	waitFor(t, 30*time.Second, "bad packets reported", func() bool { return count("bad-packets") >= 1 })

	before := closed()
	cs.fault(t, "cam=cam1&kind=resolution")
	waitFor(t, 30*time.Second, "a new segment at the resolution change", func() bool { return closed() > before })
	changed := time.Now()
	time.Sleep(3 * time.Second) // record at the new resolution
	nvrd.stop(t, 30*time.Second)
	if strings.Contains(nvrd.output(), "panic") {
		t.Fatalf("nvrd panicked:\n%s", tail(nvrd.output(), 4000))
	}
	a.mustFsckClean()

	// The whole range crosses the resolution change: one MP4 cannot hold both, and the export says so.
	_, text, code := a.export("cam1", began.Add(-time.Minute), time.Now().Add(time.Minute))
	if code == 0 || !strings.Contains(text, "parameter sets change") {
		t.Errorf("export across the resolution change: exit %d\n%s", code, text)
	}
	spans := recordedSpans(t, a, "cam1")
	if len(spans) < 3 {
		t.Fatalf("%d segments after drop, stall and resolution change", len(spans))
	}
	last := spans[len(spans)-1]
	if last.start.Before(changed.Add(-10 * time.Second)) {
		t.Fatalf("last segment starts %v, before the resolution change", last.start)
	}
	path, text, code := a.export("cam1", last.start, last.end)
	if code != 0 {
		t.Fatalf("export after the change: exit %d\n%s", code, text)
	}
	if p := ffprobe(t, path); p.Width != 1280 || p.Height != 720 {
		t.Errorf("after the change: %dx%d, want 1280x720", p.Width, p.Height)
	}
	first := spans[0]
	path, text, code = a.export("cam1", first.start, first.end)
	if code != 0 {
		t.Fatalf("export before the change: exit %d\n%s", code, text)
	}
	if p := ffprobe(t, path); p.Width != 1920 || p.Height != 1080 {
		t.Errorf("before the change: %dx%d, want 1920x1080", p.Width, p.Height)
	}
}
