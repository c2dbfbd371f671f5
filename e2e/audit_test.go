package e2e

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// wrongSetupCode posts the first-setup form with a wrong code, which the appliance refuses and audits.
func wrongSetupCode(t *testing.T, client *http.Client, base string) {
	t.Helper()
	resp, err := client.Get(base + "setup")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("GET /setup: %s, no csrf field", resp.Status)
	}
	form := url.Values{"csrf": {string(m[1])}, "code": {"AAAA-BBBB-CCCC"}, "name": {"admin"},
		"password": {"a long password 4 audit"}, "password2": {"a long password 4 audit"}}
	req, _ := http.NewRequest(http.MethodPost, base+"setup", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", strings.TrimSuffix(base, "/"))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("POST /setup with a wrong code: %s", resp.Status)
	}
}

// rechainAudit rewrites audit.jsonl the way a careful forger would: every entry renumbered, relinked and
// rehashed, so that the file's own hash chain holds.
func rechainAudit(t *testing.T, file []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	prev := ""
	for i, ln := range bytes.Split(bytes.TrimSuffix(file, []byte("\n")), []byte("\n")) {
		var l struct {
			E json.RawMessage `json:"e"`
		}
		var e map[string]any
		if err := json.Unmarshal(ln, &l); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(l.E, &e); err != nil {
			t.Fatal(err)
		}
		e["seq"], e["prev"] = i+1, prev
		raw, _ := json.Marshal(e)
		sum := sha256.Sum256(raw)
		prev = hex.EncodeToString(sum[:])
		b, _ := json.Marshal(struct {
			E json.RawMessage `json:"e"`
			H string          `json:"h"`
		}{raw, prev})
		out.Write(append(b, '\n'))
	}
	return out.Bytes()
}

// TestAuditAnchoredByRunningAppliance: a running nvrd anchors its audit entries in the evidence log while
// it records (audit leaves between the segment leaves); after a clean stop `nvr audit verify` proves every
// entry under a TPM-signed checkpoint, evidence exports still verify, and a forgery of the audit file with
// its whole hash chain recomputed is caught.
func TestAuditAnchoredByRunningAppliance(t *testing.T) {
	cs := startCamsim(t, 1)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1"}, cs.Password,
		"-segment", "10s", "-transport", "tcp", "-log-level", "debug")
	began := time.Now()
	nvrd := a.start()
	base := a.webURL(t)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // the appliance's own certificate
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
	// Audited attempts, each followed by an anchor and a closed segment, so the leaves interleave.
	for i := range 3 {
		wrongSetupCode(t, client, base)
		waitFor(t, 30*time.Second, "the attempt anchored in the evidence log", func() bool {
			return len(a.events("audit anchored in the evidence log")) > i
		})
		segs := len(a.events("segment closed"))
		waitFor(t, 30*time.Second, "a segment closed after the anchor", func() bool { return len(a.events("segment closed")) > segs })
	}
	nvrd.stop(t, 30*time.Second)
	ended := time.Now()
	if strings.Contains(a.allLogs(), "could not anchor the audit log") {
		t.Error("an anchor fell back to a checkpoint in the file")
	}

	out, code := a.nvr("audit", "verify", "-data", a.data, "-device-cert", a.deviceCert())
	t.Log(out)
	if code != 0 || !regexp.MustCompile(`covered: entries 1–\d+ by audit anchors under signed evidence checkpoints`).MatchString(out) ||
		strings.Contains(out, "chain only") || !strings.Contains(out, "pinned device certificate") {
		t.Fatalf("audit verify: exit %d", code)
	}
	if out, code := a.nvr("log-check", "-data", a.data); code != 0 {
		t.Fatalf("log-check with audit leaves: exit %d\n%s", code, out)
	}
	// Exports carry inclusion proofs of their segments: audit leaves between them change nothing.
	exp := a.evidenceExport("cam1", began.Add(-time.Minute), ended.Add(time.Minute))
	if out, code := a.nvr("verify", exp, "-device-cert", a.deviceCert()); code != 0 || !strings.Contains(out, "VERDICT: AUTHENTIC") {
		t.Fatalf("verify an export of a log with audit leaves: exit %d\n%s", code, out)
	}

	// The forger edits the refused attempt into an accepted one and recomputes the chain: the file's own
	// checks hold, the anchors do not.
	path := filepath.Join(a.data, "audit.jsonl")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(`"result":"fail"`)) {
		t.Fatalf("no refused attempt in the audit log:\n%s", raw)
	}
	forged := rechainAudit(t, bytes.Replace(raw, []byte(`"result":"fail"`), []byte(`"result":"ok"`), 1))
	if err := os.WriteFile(path, forged, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := a.nvr("audit", "verify", "-file", path); code != 0 {
		t.Fatalf("the forged chain should hold on its own: exit %d\n%s", code, out)
	}
	out, code = a.nvr("audit", "verify", "-data", a.data, "-device-cert", a.deviceCert())
	t.Log(out)
	if code != 1 || !strings.Contains(out, "NOT intact") || !strings.Contains(out, "not what evidence log leaf") {
		t.Fatalf("a recomputed-chain forgery: exit %d, want 1 naming the anchor", code)
	}
}
