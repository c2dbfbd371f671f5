package e2e

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// evidenceExport runs nvr export -evidence and returns the export's path.
func (a *appliance) evidenceExport(camera string, from, to time.Time, extra ...string) string {
	a.t.Helper()
	out := filepath.Join(a.t.TempDir(), camera+"-evidence.zip")
	args := append([]string{"export", "-evidence", "-data", a.data, "-tpm", a.tpm, "-camera", camera,
		"-from", from.Format(time.RFC3339Nano), "-to", to.Format(time.RFC3339Nano), "-user", "officer 7", "-reason", "incident 2026-114",
		"-o", out}, extra...)
	text, code := a.nvr(args...)
	if code != 0 {
		a.t.Fatalf("nvr export -evidence: exit %d\n%s", code, text)
	}
	a.t.Log(strings.TrimSpace(text))
	return out
}

func (a *appliance) deviceCert() string { return filepath.Join(a.data, "device-cert.pem") }

// unzipEntry returns one entry of a zip file.
func unzipEntry(t *testing.T, path, name string) []byte {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if f.Name == name {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("%s has no %s", path, name)
	return nil
}

// TestEvidenceRoundTrip records 30 s from camsim, exports it as evidence (plain and age-encrypted),
// verifies it offline, decrypts it with Debian's age, plays video.mp4 with ffprobe, and shows that a segment
// deleted from the data directory before export is reported as missing.
func TestEvidenceRoundTrip(t *testing.T) {
	cs := startCamsim(t, 1)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1"}, cs.Password, "-segment", "10s", "-transport", "tcp")
	began := time.Now()
	nvrd := a.start()
	waitFor(t, 90*time.Second, "30 s recorded in at least three segments", func() bool {
		return time.Since(began) >= 30*time.Second && len(a.events("segment closed")) >= 3
	})
	nvrd.stop(t, 30*time.Second)
	ended := time.Now()
	if out, code := a.nvr("log-check", "-data", a.data); code != 0 {
		t.Fatalf("log-check: exit %d\n%s", code, out)
	}

	plain := a.evidenceExport("cam1", began.Add(-time.Minute), ended.Add(time.Minute))
	out, code := a.nvr("verify", plain, "-device-cert", a.deviceCert())
	t.Log(out)
	if code != 0 || !strings.Contains(out, "VERDICT: AUTHENTIC") {
		t.Fatalf("verify: exit %d", code)
	}
	if out, code := a.nvr("verify", plain); code != 3 || !strings.Contains(out, "not pinned") {
		t.Errorf("verify without -device-cert: exit %d, want 3 (not pinned)\n%s", code, out)
	}

	// ffprobe plays video.mp4, and the edit list starts its timeline at zero.
	video := filepath.Join(t.TempDir(), "video.mp4")
	if err := os.WriteFile(video, unzipEntry(t, plain, "video.mp4"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := ffprobe(t, video)
	if p.Codec != "h264" || p.Frames < 25*25 {
		t.Errorf("video.mp4: %s, %d frames", p.Codec, p.Frames)
	}
	if p.PTS[0] > 1 {
		t.Errorf("video.mp4 starts at %.3f s; the edit list should start it at 0", p.PTS[0])
	}

	// Encrypted with a passphrase: nvr verify opens it, and Debian's age decrypts it to a zip that verifies.
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte("a long shared passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc := a.evidenceExport("cam1", began.Add(-time.Minute), ended.Add(time.Minute), "-passphrase-file", pass)
	if out, code := a.nvr("verify", enc, "-passphrase-file", pass, "-device-cert", a.deviceCert()); code != 0 {
		t.Fatalf("verify encrypted: exit %d\n%s", code, out)
	}
	dec := filepath.Join(t.TempDir(), "decrypted.zip")
	cmd := exec.Command("script", "-qec", "age -d -o "+dec+" "+enc, "/dev/null")
	cmd.Stdin = strings.NewReader("a long shared passphrase\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("age -d: %v\n%s", err, b)
	}
	if out, code := a.nvr("verify", dec, "-device-cert", a.deviceCert()); code != 0 {
		t.Fatalf("verify the zip age decrypted: exit %d\n%s", code, out)
	}

	// A hold is listed.
	if out, code := a.nvr("hold", "-data", a.data, "-camera", "cam1", "-from", began.Format(time.RFC3339), "-to", ended.Format(time.RFC3339), "-reason", "incident 2026-114"); code != 0 {
		t.Fatalf("hold: exit %d\n%s", code, out)
	}
	if out, _ := a.nvr("hold", "-data", a.data, "-list"); !strings.Contains(out, "incident 2026-114") {
		t.Errorf("hold -list:\n%s", out)
	}

	// A segment deleted from the data directory before export: the export says so and verify fails.
	segs := segmentFiles(t, a.data)
	if len(segs) < 3 {
		t.Fatalf("%d segment files", len(segs))
	}
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	gap := a.evidenceExport("cam1", began.Add(-time.Minute), ended.Add(time.Minute))
	out, code = a.nvr("verify", gap, "-device-cert", a.deviceCert())
	t.Log(out)
	if code != 1 || !strings.Contains(out, "missing from the export") {
		t.Errorf("verify with a deleted segment: exit %d, want 1 naming the missing segment", code)
	}
}

// segmentFiles lists the segment files under DATA/rec, in name (time) order within a camera.
func segmentFiles(t *testing.T, data string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(filepath.Join(data, "rec"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".seg") {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Order by modification time: the recording order.
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			a, _ := os.Stat(out[i])
			b, _ := os.Stat(out[j])
			if b.ModTime().Before(a.ModTime()) {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestEvidenceLogAcrossKill9 kills nvrd with SIGKILL while it records; after each kill the evidence log is
// consistent with every checkpoint signed before it, and after the restarts an export of the whole
// recording verifies with no segment missing.
func TestEvidenceLogAcrossKill9(t *testing.T) {
	cs := startCamsim(t, 1)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1"}, cs.Password, "-segment", "3s", "-transport", "tcp")
	began := time.Now()
	nvrd := a.start()
	for i := range 3 {
		n := len(a.events("segment closed"))
		waitFor(t, 30*time.Second, "a segment closed in this run", func() bool { return len(a.events("segment closed")) > n+1 })
		nvrd.kill()
		out, code := a.nvr("log-check", "-data", a.data)
		if code != 0 {
			t.Fatalf("kill %d: log-check: exit %d\n%s", i, code, out)
		}
		t.Log(strings.TrimSpace(out))
		nvrd = a.start()
	}
	n := len(a.events("segment closed"))
	waitFor(t, 30*time.Second, "a segment closed after the last restart", func() bool { return len(a.events("segment closed")) > n })
	nvrd.stop(t, 30*time.Second)
	out, code := a.nvr("log-check", "-data", a.data)
	if code != 0 {
		t.Fatalf("log-check: exit %d\n%s", code, out)
	}
	if c := strings.Fields(out); len(c) > 1 {
		if entries, err := strconv.Atoi(c[1]); err == nil && entries < 5 {
			t.Errorf("only %d log entries", entries)
		}
	}
	exp := a.evidenceExport("cam1", began.Add(-time.Minute), time.Now().Add(time.Minute))
	out, code = a.nvr("verify", exp, "-device-cert", a.deviceCert())
	if code != 0 {
		t.Fatalf("verify after kills: exit %d\n%s", code, out)
	}
	if !bytes.Contains([]byte(out), []byte("none missing")) {
		t.Errorf("verify output does not state completeness:\n%s", out)
	}
}
