package e2e

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRecordTwoCamerasAndExport records two camsim cameras for 30 s across several segments, stops nvrd
// cleanly and exports each camera: ffprobe must read every export without error, with the frames camsim
// sent (within 2 %) and no gap at segment boundaries.
func TestRecordTwoCamerasAndExport(t *testing.T) {
	cs := startCamsim(t, 2)
	a := newAppliance(t, "", map[string]string{
		"cam1": "rtsp://" + cs.RTSP + "/cam1",
		"cam2": "rtsp://" + cs.RTSP + "/cam2",
	}, cs.Password, "-segment", "10s", "-transport", "tcp")
	before := cs.frames(t)
	began := time.Now()
	nvrd := a.start()
	time.Sleep(30 * time.Second) // the recording itself: 30 s of video is what the test is about
	nvrd.stop(t, 30*time.Second)
	ended := time.Now()
	after := cs.frames(t)
	out := a.mustFsckClean()
	t.Log(strings.TrimSpace(out))

	for _, cam := range []string{"cam1", "cam2"} {
		path, text, code := a.export(cam, began.Add(-time.Minute), ended.Add(time.Minute))
		if code != 0 {
			t.Fatalf("export %s: exit %d\n%s", cam, code, text)
		}
		if strings.Contains(text, "gap in the recording") {
			t.Errorf("export %s reports a gap:\n%s", cam, text)
		}
		p := ffprobe(t, path)
		if p.Codec != "h264" || p.Width != 1920 || p.Height != 1080 {
			t.Errorf("%s: %s %dx%d, want h264 1920x1080", cam, p.Codec, p.Width, p.Height)
		}
		sent := float64(after[cam] - before[cam])
		span := p.PTS[len(p.PTS)-1] - p.PTS[0] + 0.04
		// Inside the recording no frame is missing: 25 fps over the recorded span.
		if d := math.Abs(float64(p.Frames) - 25*span); d > 0.02*25*span {
			t.Errorf("%s: %d frames over %.2f s, want 25 fps within 2 %%", cam, p.Frames, span)
		}
		// Against what camsim sent: within 2 %, besides the pictures before the first key frame (a GOP is
		// 25 pictures), which no recorder can decode and so does not keep.
		if lost := sent - float64(p.Frames); lost < 0 || lost > 0.02*sent+25 {
			t.Errorf("%s: camsim sent %.0f frames during the run, export holds %d", cam, sent, p.Frames)
		}
		if g := p.maxGap(); g > 0.041 {
			t.Errorf("%s: a %.3f s gap between frames (segments are 10 s: boundaries must be seamless)", cam, g)
		}
		if len(p.PTS) < 700 {
			t.Errorf("%s: only %d frames in 30 s", cam, len(p.PTS))
		}
	}
	if n := len(a.events("segment closed")); n < 6 {
		t.Errorf("%d segments closed for 2 cameras × 30 s at 10 s segments", n)
	}
	if strings.Contains(a.allLogs(), cs.Password) {
		t.Error("the camera password appears in nvrd's log")
	}
}

// TestGStreamerCameraRecorded records a camera nobody here wrote (GStreamer's RTSP server) and exports it.
func TestGStreamerCameraRecorded(t *testing.T) {
	gst := startGst(t)
	a := newAppliance(t, "", map[string]string{"gst": gst}, "", "-segment", "4s")
	began := time.Now()
	nvrd := a.start()
	waitFor(t, 60*time.Second, "two closed segments", func() bool { return len(a.events("segment closed")) >= 2 })
	nvrd.stop(t, 30*time.Second)
	a.mustFsckClean()
	path, text, code := a.export("gst", began.Add(-time.Minute), time.Now().Add(time.Minute))
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, text)
	}
	p := ffprobe(t, path)
	if p.Codec != "h264" || p.Width != 640 || p.Height != 360 {
		t.Errorf("%s %dx%d, want h264 640x360", p.Codec, p.Width, p.Height)
	}
	if p.Frames < 150 {
		t.Errorf("%d frames for two 4 s segments at 25 fps", p.Frames)
	}
	if g := p.maxGap(); g > 0.041 {
		t.Errorf("a %.3f s gap between frames", g)
	}
}

// TestSegmentsAreCiphertextAndTamperEvident checks that no segment file holds an MP4 box tag, and that one
// flipped byte in any chunk makes the export fail naming the segment and the chunk.
func TestSegmentsAreCiphertextAndTamperEvident(t *testing.T) {
	cs := startCamsim(t, 1)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1"}, cs.Password, "-segment", "3s")
	began := time.Now()
	nvrd := a.start()
	waitFor(t, 60*time.Second, "three closed segments", func() bool { return len(a.events("segment closed")) >= 3 })
	nvrd.stop(t, 30*time.Second)
	a.mustFsckClean()

	var files []string
	err := filepath.WalkDir(filepath.Join(a.data, "rec"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".seg") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) < 3 {
		t.Fatalf("segment files: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, tag := range []string{"ftyp", "moov", "moof", "mdat", "avc1", "avcC"} {
			if bytes.Contains(b, []byte(tag)) {
				t.Errorf("%s holds the plaintext box tag %q", f, tag)
			}
		}
	}
	from, to := began.Add(-time.Minute), time.Now().Add(time.Minute)
	if _, text, code := a.export("cam1", from, to); code != 0 {
		t.Fatalf("export before tampering: exit %d\n%s", code, text)
	}

	// Flip one byte inside the third chunk (a fragment) of a segment that has one: walk the framing to find it.
	var victim string
	var b []byte
	off := -1
	for _, f := range files {
		if b, err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
		if off = chunkOffset(t, b, 2); off >= 0 && off+200 < len(b) {
			victim = f
			break
		}
	}
	if victim == "" {
		t.Fatal("no segment with three chunks")
	}
	b[off+100] ^= 0x01
	if err := os.WriteFile(victim, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, text, code := a.export("cam1", from, to)
	if code == 0 {
		t.Fatalf("export of a tampered segment succeeded:\n%s", text)
	}
	id := strings.TrimSuffix(filepath.Base(victim), ".seg")
	if !strings.Contains(text, id) || !strings.Contains(text, "chunk 2") || !strings.Contains(text, "authentication failed") {
		t.Errorf("export error does not name segment %s chunk 2 and the failed authentication:\n%s", id, text)
	}
}

// chunkOffset returns the file offset of chunk n's frame (-1 if the file has fewer chunks), from the format
// in docs/segment-format.md:
// magic (8) | header length u32 | header | frames of u32 length | u8 flags | ciphertext.
func chunkOffset(t *testing.T, b []byte, n int) int {
	t.Helper()
	if len(b) < 12 {
		t.Fatal("segment too short")
	}
	off := headerEnd(t, b)
	for i := 0; i < n; i++ {
		if off+5 > len(b) {
			return -1
		}
		l := int(binary.BigEndian.Uint32(b[off:]))
		off += 4 + 1 + l
	}
	if off+5 > len(b) {
		return -1
	}
	return off
}

// headerEnd returns the header length L stored at offset 8.
func headerEnd(t *testing.T, b []byte) int {
	t.Helper()
	if string(b[:6]) != "NVRSEG" {
		t.Fatalf("not a segment file: magic %q", b[:6])
	}
	return int(binary.BigEndian.Uint32(b[8:12]))
}
