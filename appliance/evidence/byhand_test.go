package evidence

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// byHandScript extracts the shell procedure of docs/evidence-format.md §5.
func byHandScript(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "evidence-format.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, "## 5. By hand")
	if i < 0 {
		t.Fatal("docs/evidence-format.md has no by-hand section")
	}
	s = s[i:]
	a := strings.Index(s, "```sh\n")
	b := strings.Index(s[a+6:], "```")
	if a < 0 || b < 0 {
		t.Fatal("no sh block in the by-hand section")
	}
	return s[a+6 : a+6+b]
}

// TestByHandProcedure follows the documented openssl and sha256sum procedure, with the real tools, on an
// export, and checks that it fails on a tampered one.
func TestByHandProcedure(t *testing.T) {
	for _, tool := range []string{"openssl", "jq", "unzip", "xxd", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: scripts/deps.sh installs it: %v", tool, err)
		}
	}
	script := byHandScript(t)
	f := newFixture(t, 4)
	good, _ := f.export(t, defaultRequest())
	run := func(export, pinned []byte) (string, error) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "export.zip"), export)
		writeFile(t, filepath.Join(dir, "pinned.pem"), pinned)
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PINNED=pinned.pem")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	pin := CertPEM(f.k.cert)
	start := time.Now()
	out, err := run(good, pin)
	if err != nil || !strings.Contains(out, "by hand: all checks passed") {
		t.Fatalf("by-hand procedure on a good export: %v\n%s", err, out)
	}
	t.Logf("by hand took %v:\n%s", time.Since(start), out)
	bad := rezip(t, good, func(m map[string][]byte) {
		man := manifestOf(t, m)
		off := man.Segments[1].Chunks[0].Offset
		m[EntryVideo][off+100] ^= 1
	})
	if out, err := run(bad, pin); err == nil {
		t.Fatalf("by-hand procedure passed a tampered export:\n%s", out)
	}

	// The committed format-1 vector, made before several cameras existed.
	vec, err := os.ReadFile(filepath.Join(vectorDir, "v1-single-camera.zip"))
	if err != nil {
		t.Fatal(err)
	}
	vecCert, err := os.ReadFile(filepath.Join(vectorDir, "v1-device-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(vec, vecCert); err != nil || !strings.Contains(out, "by hand: all checks passed") {
		t.Fatalf("by-hand procedure on the format-1 vector: %v\n%s", err, out)
	}

	// Format 2: two cameras, each checked against the one checkpoint.
	mf := newMultiFixture(t, []string{"cam1", "cam2"}, 3, nil)
	multi, _ := mf.export(t, multiRequest("cam1", "cam2"))
	out, err = run(multi, pin)
	if err != nil || !strings.Contains(out, "camera cam1: checks passed") || !strings.Contains(out, "camera cam2: checks passed") ||
		!strings.Contains(out, "by hand: all checks passed") {
		t.Fatalf("by-hand procedure on a two-camera export: %v\n%s", err, out)
	}
	for name, edit := range map[string]func(map[string][]byte){
		"byte flipped in the second camera's video": func(m map[string][]byte) {
			man := multiManifestOf(t, m)
			m["video-cam2.mp4"][man.Cameras[1].Segments[1].Chunks[0].Offset+100] ^= 1
		},
		"second camera's video removed": func(m map[string][]byte) { delete(m, "video-cam2.mp4") },
		"proofs of two cameras swapped": func(m map[string][]byte) {
			man := multiManifestOf(t, m)
			a, b := &man.Cameras[0].Segments[1], &man.Cameras[1].Segments[1]
			a.Proof, b.Proof = b.Proof, a.Proof
			resignMulti(t, m, man, mf)
		},
	} {
		if out, err := run(rezip(t, multi, edit), pin); err == nil || strings.Contains(out, "camera cam2: checks passed") {
			t.Errorf("by-hand procedure passed a two-camera export with %s:\n%s", name, out)
		}
	}
}
