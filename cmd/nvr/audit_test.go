package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance"
	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

var fastArgon2 = authz.Argon2Params{Time: 1, Memory: 64, Threads: 1}

// anchoredDataDir makes a stopped appliance's data directory the way nvrd leaves it: authz's audit.jsonl
// anchored in the evidence log of a bbolt index, the log key on swtpm, the last checkpoint signed at stop.
func anchoredDataDir(t *testing.T, entries int) string {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	dev, err := tpm.Open(swtpmtest.Start(t), log)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	db, err := store.Open(filepath.Join(dir, "index.db"), store.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ev, err := appliance.OpenEvidence(dir, dev, db, time.Hour, log)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	az, err := authz.New(authz.Config{DataDir: dir, Signer: ev.LogKey, Anchor: ev.AuditAnchor(log), CheckpointEvery: 8, Argon2: fastArgon2}, log)
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		az.Decide(authz.Request{Subject: authz.Subject{User: fmt.Sprintf("user%d", i)}, Action: authz.Live, Camera: "cam1", Source: "192.0.2.9"})
	}
	if err := az.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := az.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ev.Log.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rechain rewrites audit lines the way a careful forger would: every entry renumbered, relinked and
// rehashed, so that the file's own hash chain holds.
func rechain(t *testing.T, lines []string) string {
	t.Helper()
	var out strings.Builder
	prev := ""
	for i, ln := range lines {
		var l struct {
			E json.RawMessage `json:"e"`
		}
		var e authz.Entry
		if err := json.Unmarshal([]byte(ln), &l); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(l.E, &e); err != nil {
			t.Fatal(err)
		}
		e.Seq, e.Prev = uint64(i+1), prev
		raw, _ := json.Marshal(e)
		sum := sha256.Sum256(raw)
		prev = hex.EncodeToString(sum[:])
		b, _ := json.Marshal(struct {
			E json.RawMessage `json:"e"`
			H string          `json:"h"`
		}{raw, prev})
		out.Write(append(b, '\n'))
	}
	return out.String()
}

func runAudit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := run(append([]string{"audit", "verify"}, args...), &out, &errb)
	if err != nil {
		t.Logf("err: %v", err)
	}
	return code, out.String()
}

// TestAuditVerifyAnchored: `nvr audit verify -data DIR` proves the audit file against the evidence log's
// signed anchors and says which entries are covered by what; truncating, editing, deleting or reordering
// entries is caught even with the whole hash chain recomputed.
func TestAuditVerifyAnchored(t *testing.T) {
	dir := anchoredDataDir(t, 20)
	path := filepath.Join(dir, "audit.jsonl")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, out := runAudit(t, "-data", dir)
	t.Log(out)
	for _, want := range []string{"intact: 20 entries", "3 audit anchors, 3 of them under a signed checkpoint", "covered: entries 1–20 by audit anchors under signed evidence checkpoints",
		"not pinned: give -device-cert"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("intact: exit %d, want %q", code, want)
		}
	}
	if code, out := runAudit(t, "-data", dir, "-device-cert", filepath.Join(dir, appliance.DeviceCertFile)); code != 0 || !strings.Contains(out, "pinned device certificate") {
		t.Fatalf("pinned: exit %d\n%s", code, out)
	}

	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	edited := append([]string{}, lines...)
	edited[4] = strings.Replace(edited[4], `"result":"deny"`, `"result":"allow"`, 1)
	deleted := append(append([]string{}, lines[:10]...), lines[11:]...)
	reordered := append([]string{}, lines...)
	reordered[2], reordered[3] = reordered[3], reordered[2]
	replaced := append([]string{}, lines[:3]...)
	for name, forged := range map[string]string{
		"edited, chain recomputed":    rechain(t, edited),
		"deleted, chain recomputed":   rechain(t, deleted),
		"reordered, chain recomputed": rechain(t, reordered),
		"truncated":                   strings.Join(lines[:17], ""),
		"replaced by a new log":       rechain(t, replaced),
	} {
		if err := os.WriteFile(path, []byte(forged), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out := runAudit(t, "-file", path); code != 0 {
			t.Errorf("%s: the file's own checks should be fooled: exit %d\n%s", name, code, out)
		}
		code, out := runAudit(t, "-data", dir)
		if code != 1 || !strings.Contains(out, "PROBLEM: ") || !strings.Contains(out, "NOT intact") || !strings.Contains(out, "evidence log leaf") {
			t.Errorf("%s: exit %d\n%s", name, code, out)
		}
		t.Logf("%s:\n%s", name, out)
	}

	// Entries appended after the last anchor are the chain's alone, and the report says so.
	more := rechain(t, append(append([]string{}, lines...), lines[19], lines[19]))
	if err := os.WriteFile(path, []byte(more), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runAudit(t, "-data", dir); code != 0 || !strings.Contains(out, "chain only: entries 21–22, since the last anchor") {
		t.Errorf("tail after the last anchor: exit %d\n%s", code, out)
	}

	// An earlier export (a prefix) verifies against the anchors it reaches; alone, it says anchors were not
	// checked.
	export := filepath.Join(t.TempDir(), "export.jsonl")
	if err := os.WriteFile(export, []byte(strings.Join(lines[:12], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runAudit(t, "-file", export, "-data", dir); code != 0 || !strings.Contains(out, "ends before 2 later anchors") ||
		!strings.Contains(out, "covered: entries 1–8 by audit anchors") || !strings.Contains(out, "chain only: entries 9–12") {
		t.Errorf("earlier export: exit %d\n%s", code, out)
	}
	if code, out := runAudit(t, "-file", export); code != 0 || !strings.Contains(out, "anchors NOT checked") {
		t.Errorf("export alone: exit %d\n%s", code, out)
	}
	// Without an index there is nothing to check the anchors against: -data refuses.
	if err := os.Remove(filepath.Join(dir, "index.db")); err != nil {
		t.Fatal(err)
	}
	if code, _ := runAudit(t, "-data", dir); code != 1 {
		t.Errorf("no index: exit %d, want 1", code)
	}
}

// TestAuditVerifyInFileCheckpoints: an audit log from before the evidence log (or from a fallback period)
// carries its own signed checkpoints; they still verify, pinned with -pubkey, and tampering is detected.
func TestAuditVerifyInFileCheckpoints(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := authz.New(authz.Config{DataDir: dir, Signer: key, CheckpointEvery: 8, Argon2: fastArgon2}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		s.Decide(authz.Request{Subject: authz.Subject{User: "u" + string(rune('a'+i))}, Action: authz.Live, Camera: "cam1", Source: "10.0.0.9"})
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	pubFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "audit.jsonl")
	code, out := runAudit(t, "-file", file, "-pubkey", pubFile)
	if code != 0 || !strings.Contains(out, "intact: 23 entries") || !strings.Contains(out, "covered: entries 1–23 by 3 checkpoints signed into the audit log by the key in") {
		t.Fatalf("intact log: %d %s", code, out)
	}
	if code, out := runAudit(t, "-file", file); code != 0 || !strings.Contains(out, "not pinned") {
		t.Fatalf("unpinned: %d %s", code, out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	edit := append([]string{}, lines...)
	edit[4] = strings.Replace(edit[4], `"result":"deny"`, `"result":"allow"`, 1)
	del := append(append([]string{}, lines[:10]...), lines[11:]...)
	reorder := append([]string{}, lines...)
	reorder[2], reorder[3] = reorder[3], reorder[2]
	for name, ls := range map[string][]string{"edited": edit, "deleted": del, "reordered": reorder} {
		f := filepath.Join(dir, name+".jsonl")
		if err := os.WriteFile(f, []byte(strings.Join(ls, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out := runAudit(t, "-file", f, "-pubkey", pubFile); code != 1 || !strings.Contains(out, "PROBLEM:") || !strings.Contains(out, "NOT intact") {
			t.Errorf("%s log: %d %s", name, code, out)
		}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der2, _ := x509.MarshalPKIXPublicKey(other.Public())
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der2}), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runAudit(t, "-file", file, "-pubkey", pubFile); code != 1 || !strings.Contains(out, "signed by another key") {
		t.Errorf("other key: %d %s", code, out)
	}
}
