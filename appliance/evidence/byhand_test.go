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
	run := func(export []byte) (string, error) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "export.zip"), export)
		writeFile(t, filepath.Join(dir, "pinned.pem"), CertPEM(f.k.cert))
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PINNED=pinned.pem")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	start := time.Now()
	out, err := run(good)
	if err != nil || !strings.Contains(out, "by hand: all checks passed") {
		t.Fatalf("by-hand procedure on a good export: %v\n%s", err, out)
	}
	t.Logf("by hand took %v:\n%s", time.Since(start), out)
	bad := rezip(t, good, func(m map[string][]byte) {
		man := manifestOf(t, m)
		off := man.Segments[1].Chunks[0].Offset
		m[EntryVideo][off+100] ^= 1
	})
	if out, err := run(bad); err == nil {
		t.Fatalf("by-hand procedure passed a tampered export:\n%s", out)
	}
}
