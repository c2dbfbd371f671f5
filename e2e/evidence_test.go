package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
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
	out := filepath.Join(a.t.TempDir(), strings.ReplaceAll(camera, ",", "+")+"-evidence.zip")
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

// rewriteZip rewrites an export zip through edit (entries by name; a deleted name is left out), as a
// tamperer with a zip tool would.
func rewriteZip(t *testing.T, path string, edit func(map[string][]byte)) string {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	var order []string
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		if m[f.Name], err = io.ReadAll(rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		order = append(order, f.Name)
	}
	zr.Close()
	edit(m)
	out := filepath.Join(t.TempDir(), "tampered.zip")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for _, name := range order {
		if b, ok := m[name]; ok {
			w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
			if err != nil {
				t.Fatal(err)
			}
			w.Write(b)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// editManifest changes manifest.json as JSON (without re-signing it).
func editManifest(t *testing.T, m map[string][]byte, edit func(map[string]any)) {
	t.Helper()
	var man map[string]any
	if err := json.Unmarshal(m["manifest.json"], &man); err != nil {
		t.Fatal(err)
	}
	edit(man)
	b, err := json.MarshalIndent(man, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	m["manifest.json"] = append(b, '\n')
}

// webExport posts an export of several cameras to nvrd's API with a browser session and saves the answer.
func webExport(t *testing.T, w *webClient, body map[string]any, name string) string {
	t.Helper()
	tok := w.csrf("/export")
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", w.origin+"/api/v1/export", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", tok)
	req.Header.Set("Origin", w.origin)
	resp, err := w.c.Do(req)
	if err != nil {
		t.Fatalf("POST /api/v1/export: %v", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST /api/v1/export: %d %.500s", resp.StatusCode, data)
	}
	if !strings.Contains(resp.Header.Get("Content-Disposition"), "2-cameras-") {
		t.Errorf("download named %q", resp.Header.Get("Content-Disposition"))
	}
	out := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEvidenceSeveralCameras records two camsim cameras through nvrd and exports both in one evidence
// file, through the web API (plain and passphrase-encrypted) while nvrd runs and through the CLI
// (-camera repeated, and a comma list with a passphrase) once it has stopped: ffprobe plays each camera's
// video, nvr verify accepts every export camera by camera, Debian's age decrypts the encrypted ones, and
// a flipped byte in the second camera's video, its video removed, two cameras' proofs swapped and an
// edited manifest are each refused, naming the camera.
func TestEvidenceSeveralCameras(t *testing.T) {
	cs := startCamsim(t, 2)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1", "cam2": "rtsp://" + cs.RTSP + "/cam2"},
		cs.Password, "-segment", "5s", "-transport", "tcp", "-display", "console")
	began := time.Now()
	nvrd := a.start()
	origin := strings.TrimSuffix(a.webURL(t), "/")
	admin := setupAdmin(t, origin, setupCode(t, nvrd), "harbour copper 64 lantern")
	closed := func(cam string) int {
		n := 0
		for _, e := range a.events("segment closed") {
			if e["camera"] == cam {
				n++
			}
		}
		return n
	}
	waitFor(t, 90*time.Second, "three closed segments per camera", func() bool { return closed("cam1") >= 3 && closed("cam2") >= 3 })
	to := time.Now().Add(-6 * time.Second) // inside closed (logged) segments
	from := began.Add(-time.Minute)

	// Through the web API, while nvrd records.
	const pass = "a long shared passphrase"
	body := map[string]any{"cameras": []string{"cam1", "cam2"}, "from": from.UTC().Format(time.RFC3339), "to": to.UTC().Format(time.RFC3339Nano), "reason": "incident 2026-401"}
	webPlain := webExport(t, admin, body, "web.zip")
	body["passphrase"] = pass
	webEnc := webExport(t, admin, body, "web.zip.age")
	nvrd.stop(t, 30*time.Second)

	// Through the CLI.
	cli := a.evidenceExport("cam1", from, to, "-camera", "cam2")
	out, code := a.nvr("verify", cli, "-device-cert", a.deviceCert())
	t.Log(out)
	if code != 0 || !strings.Contains(out, "VERDICT: AUTHENTIC") || !strings.Contains(out, "Camera cam1 (video-cam1.mp4)") ||
		!strings.Contains(out, "camera cam2: every check passed") || !strings.Contains(out, "one manifest, one checkpoint") {
		t.Fatalf("verify the CLI's two-camera export: exit %d", code)
	}
	for _, cam := range []string{"cam1", "cam2"} {
		video := filepath.Join(t.TempDir(), cam+".mp4")
		if err := os.WriteFile(video, unzipEntry(t, cli, "video-"+cam+".mp4"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := ffprobe(t, video)
		if p.Codec != "h264" || p.Frames < 10*25 || p.PTS[0] > 1 {
			t.Errorf("video-%s.mp4: %s, %d frames, first at %.3f s", cam, p.Codec, p.Frames, p.PTS[0])
		}
	}
	passFile := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(passFile, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cliEnc := a.evidenceExport("cam1,cam2", from, to, "-passphrase-file", passFile)

	// Every export verifies; Debian's age decrypts the encrypted ones to zips that verify.
	for _, x := range []struct {
		path string
		enc  bool
	}{{webPlain, false}, {webEnc, true}, {cliEnc, true}} {
		args := []string{"verify", x.path, "-device-cert", a.deviceCert()}
		if x.enc {
			args = append(args, "-passphrase-file", passFile)
		}
		if out, code := a.nvr(args...); code != 0 || !strings.Contains(out, "the recordings of all 2 cameras are complete") {
			t.Errorf("verify %s: exit %d\n%s", filepath.Base(x.path), code, out)
		}
		if !x.enc {
			continue
		}
		dec := filepath.Join(t.TempDir(), "decrypted.zip")
		cmd := exec.Command("script", "-qec", "age -d -o "+dec+" "+x.path, "/dev/null")
		cmd.Stdin = strings.NewReader(pass + "\n")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("age -d %s: %v\n%s", filepath.Base(x.path), err, b)
		}
		if out, code := a.nvr("verify", dec, "-device-cert", a.deviceCert()); code != 0 {
			t.Errorf("verify what age decrypted from %s: exit %d\n%s", filepath.Base(x.path), code, out)
		}
	}

	// Tampering, each named with its camera.
	for _, c := range []struct {
		name  string
		edit  func(map[string][]byte)
		words []string
	}{
		{"a byte flipped in the second camera's video", func(m map[string][]byte) {
			v := m["video-cam2.mp4"]
			v[len(v)/2] ^= 0x20
		}, []string{"camera cam2: video-cam2.mp4 fragments", "=> camera cam1: every check passed"}},
		{"the second camera's video removed", func(m map[string][]byte) { delete(m, "video-cam2.mp4") },
			[]string{"camera cam2: video", "video-cam2.mp4 is missing from the archive"}},
		{"two cameras' proofs swapped", func(m map[string][]byte) {
			editManifest(t, m, func(man map[string]any) {
				cams := man["cameras"].([]any)
				s1 := cams[0].(map[string]any)["segments"].([]any)[1].(map[string]any)
				s2 := cams[1].(map[string]any)["segments"].([]any)[1].(map[string]any)
				s1["inclusion_proof"], s2["inclusion_proof"] = s2["inclusion_proof"], s1["inclusion_proof"]
			})
		}, []string{"export signature", "camera cam1: segment", "camera cam2: segment"}},
		{"the manifest edited", func(m map[string][]byte) {
			editManifest(t, m, func(man map[string]any) {
				man["cameras"].([]any)[1].(map[string]any)["start"] = from.UTC().Format(time.RFC3339Nano)
			})
		}, []string{"export signature", "camera cam2: time range"}},
	} {
		bad := rewriteZip(t, cli, c.edit)
		out, code := a.nvr("verify", bad, "-device-cert", a.deviceCert())
		if code != 1 || !strings.Contains(out, "VERDICT: NOT AUTHENTIC") {
			t.Errorf("%s: exit %d, want 1\n%s", c.name, code, out)
			continue
		}
		for _, w := range c.words {
			if !strings.Contains(out, w) {
				t.Errorf("%s: the report does not say %q\n%s", c.name, w, out)
			}
		}
	}
}
