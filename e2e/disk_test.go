package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFullDisk records two cameras onto a small tmpfs whose retention runs only when a write fails: the
// disk fills, writes fail, retention deletes the oldest segments, and recording goes on. The index stays
// consistent and nothing panics.
func TestFullDisk(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "disk")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (the test runs as root, as make test does): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	})
	cs := startCamsim(t, 2)
	a := newAppliance(t, filepath.Join(mnt, "data"), map[string]string{
		"cam1": "rtsp://" + cs.RTSP + "/cam1",
		"cam2": "rtsp://" + cs.RTSP + "/cam2",
	}, cs.Password, "-segment", "2s", "-transport", "tcp",
		"-retention-high", "0.97", "-retention-low", "0.6", "-retention-every", "1h")
	began := time.Now()
	nvrd := a.start()
	// About 1 MB/s for both cameras: 20 MiB fill in about 20 s. Wait for the disk to have filled and been
	// freed by retention, then for recording to have gone on after that.
	waitFor(t, 90*time.Second, "a write failing on the full disk", func() bool {
		return strings.Contains(nvrd.output(), "recording write failed")
	})
	waitFor(t, 60*time.Second, "retention freeing space", func() bool {
		for _, e := range a.events("retention") {
			if n, _ := e["space_deleted"].(float64); n > 0 {
				return true
			}
		}
		return false
	})
	freed := time.Now()
	waitFor(t, 60*time.Second, "segments recorded after the disk was freed", func() bool {
		n := 0
		for _, e := range a.events("segment closed") {
			if ts, err := time.Parse(time.RFC3339Nano, e["start"].(string)); err == nil && ts.After(freed) {
				n++
			}
		}
		return n >= 4
	})
	nvrd.stop(t, 30*time.Second)
	a.mustFsckClean()
	if strings.Contains(a.allLogs(), "panic") {
		t.Fatalf("nvrd panicked:\n%s", tail(a.allLogs(), 4000))
	}
	for _, cam := range []string{"cam1", "cam2"} {
		spans := recordedSpans(t, a, cam)
		if len(spans) == 0 {
			t.Fatalf("%s: nothing left recorded", cam)
		}
		if !spans[0].start.After(began.Add(2 * time.Second)) {
			t.Errorf("%s: the oldest recording (%v) survived a full disk", cam, spans[0].start)
		}
		if spans[len(spans)-1].end.Before(freed) {
			t.Errorf("%s: nothing recorded after the disk was freed", cam)
		}
		path, text, code := a.export(cam, spans[0].start, spans[len(spans)-1].end)
		if code != 0 {
			t.Fatalf("export %s: exit %d\n%s", cam, code, text)
		}
		ffprobe(t, path)
	}
}
