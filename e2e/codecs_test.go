package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestH265Recorded records camsim's H.265 stream and exports it.
func TestH265Recorded(t *testing.T) {
	cs := startCamsim(t, 1, "-codec", "h265")
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1"}, cs.Password, "-segment", "3s", "-transport", "tcp")
	began := time.Now()
	nvrd := a.start()
	waitFor(t, 60*time.Second, "two closed segments", func() bool { return len(a.events("segment closed")) >= 2 })
	nvrd.stop(t, 30*time.Second)
	a.mustFsckClean()
	path, text, code := a.export("cam1", began.Add(-time.Minute), time.Now().Add(time.Minute))
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, text)
	}
	p := ffprobe(t, path)
	if p.Codec != "hevc" || p.Width != 1920 || p.Height != 1080 {
		t.Errorf("%s %dx%d, want hevc 1920x1080", p.Codec, p.Width, p.Height)
	}
	if g := p.maxGap(); g > 0.041 {
		t.Errorf("a %.3f s gap between frames", g)
	}
}

// TestRTSPSPinned records camsim over RTSPS with its certificate pinned, and refuses a camera presenting
// another certificate.
func TestRTSPSPinned(t *testing.T) {
	dir := t.TempDir()
	certOut := filepath.Join(dir, "cam.pem")
	cs := startCamsim(t, 1, "-rtsps", "127.0.0.1:0", "-cert-out", certOut)
	var addrs struct{ RTSPS string }
	readReady(t, cs, &addrs)
	other := filepath.Join(dir, "other.pem")
	cs2 := startCamsim(t, 1, "-rtsps", "127.0.0.1:0", "-cert-out", other)
	_ = cs2
	a := newAppliance(t, "", map[string]string{
		"good": "rtsps://" + addrs.RTSPS + "/cam1",
		"bad":  "rtsps://" + addrs.RTSPS + "/cam1",
	}, cs.Password, "-segment", "3s", "-camera-cert", "good="+certOut, "-camera-cert", "bad="+other)
	nvrd := a.start()
	waitFor(t, 60*time.Second, "a segment over RTSPS", func() bool { return len(a.events("segment closed")) >= 1 })
	nvrd.stop(t, 30*time.Second)
	for _, e := range a.events("segment closed") {
		if e["camera"] == "bad" {
			t.Fatal("recorded a camera whose certificate does not match its pin")
		}
	}
	if !strings.Contains(a.allLogs(), "does not match the pinned certificate") {
		t.Error("the refused camera's certificate mismatch is not in the log")
	}
	a.mustFsckClean()
}

// readReady decodes camsim's ready file into v.
func readReady(t *testing.T, cs *camsim, v any) {
	t.Helper()
	b, err := os.ReadFile(cs.readyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := jsonUnmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
