package web

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTestSSL runs testssl.sh (Debian's package) against the server: no SSL, no TLS 1.0/1.1, no weak
// cipher category, TLS 1.3 offered, HSTS present.
func TestTestSSL(t *testing.T) {
	bin, err := exec.LookPath("testssl")
	if err != nil {
		t.Fatalf("testssl not found: make test installs it (scripts/deps.sh, package testssl.sh): %v", err)
	}
	e := startEnv(t)
	out := filepath.Join(t.TempDir(), "testssl.json")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--quiet", "--color", "0", "--warnings", "off", "--sneaky",
		"--jsonfile", out, "-p", "-s", "-h", "--ip", "127.0.0.1", e.origin+"/login")
	cmd.Env = append(os.Environ(), "TERM=dumb")
	cmd.WaitDelay = 5 * time.Second
	logb, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("testssl timed out: %s", tail(logb))
	}
	// testssl exits non-zero for findings of any severity; the JSON is what counts.
	raw, rerr := os.ReadFile(out)
	if rerr != nil {
		t.Fatalf("testssl wrote no JSON (%v): %s", err, tail(logb))
	}
	if os.Getenv("NVR_TESTSSL_DEBUG") != "" {
		t.Logf("%s\n%s", logb, raw)
	}
	var findings []struct {
		ID, Severity, Finding string
	}
	if err := json.Unmarshal(raw, &findings); err != nil {
		t.Fatalf("testssl JSON: %v", err)
	}
	got := map[string]string{}
	for _, f := range findings {
		got[f.ID] = f.Finding
	}
	for id, want := range map[string]string{
		"SSLv2": "not offered", "SSLv3": "not offered", "TLS1": "not offered", "TLS1_1": "not offered",
		"TLS1_2": "offered", "TLS1_3": "offered",
		"cipherlist_NULL": "not offered", "cipherlist_aNULL": "not offered", "cipherlist_EXPORT": "not offered",
		"cipherlist_LOW": "not offered", "cipherlist_3DES_IDEA": "not offered", "cipherlist_AVERAGE": "not offered",
		"cipherlist_STRONG": "offered",
		"HSTS_time":         "730 days",
	} {
		f, ok := got[id]
		if !ok {
			t.Errorf("testssl has no finding %s", id)
			continue
		}
		if !strings.HasPrefix(f, want) && !(want == "offered" && strings.Contains(f, "offered") && !strings.Contains(f, "not offered")) {
			t.Errorf("%s: %q, want %q", id, f, want)
		}
	}
	for _, f := range findings {
		if (f.Severity == "HIGH" || f.Severity == "CRITICAL") && !strings.HasPrefix(f.ID, "cert_") {
			t.Errorf("testssl %s %s: %s", f.Severity, f.ID, f.Finding)
		}
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
