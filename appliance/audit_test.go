package appliance

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/evidence"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// auditRig is the appliance's audit side on real parts: swtpm's log key, the evidence log in a bbolt index,
// and authz writing DATA/audit.jsonl.
type auditRig struct {
	dir  string
	dev  *tpm.TPM
	db   *store.DB
	ev   *Evidence
	az   *authz.Service
	logs *syncBuffer
	log  *slog.Logger
}

func newAuditRig(tb testing.TB, dir, device string, every int) *auditRig {
	tb.Helper()
	r := &auditRig{dir: dir, logs: &syncBuffer{}}
	r.log = slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	if r.dev, err = tpm.Open(device, r.log); err != nil {
		tb.Fatal(err)
	}
	if r.db, err = store.Open(filepath.Join(dir, "index.db"), store.Options{Timeout: 5 * time.Second}, r.log); err != nil {
		tb.Fatal(err)
	}
	if r.ev, err = OpenEvidence(dir, r.dev, r.db, time.Hour, r.log); err != nil {
		tb.Fatal(err)
	}
	r.az, err = authz.New(authz.Config{DataDir: dir, Signer: r.ev.LogKey, Anchor: r.ev.AuditAnchor(r.log), CheckpointEvery: every,
		Argon2: authz.Argon2Params{Time: 1, Memory: 64, Threads: 1}}, r.log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.close(tb) })
	return r
}

// close stops the rig as the appliance does: authz (its last anchor), then the log's last checkpoint.
func (r *auditRig) close(tb testing.TB) {
	if r.az != nil {
		if err := r.az.Checkpoint(); err != nil {
			tb.Errorf("last audit checkpoint: %v", err)
		}
		if err := r.az.Close(); err != nil {
			tb.Error(err)
		}
		r.az = nil
	}
	if r.ev != nil {
		if _, _, err := r.ev.Log.Checkpoint(); err != nil && r.db != nil {
			tb.Errorf("last evidence checkpoint: %v", err)
		}
		if err := r.ev.Close(); err != nil {
			tb.Error(err)
		}
		r.ev = nil
	}
	if r.db != nil {
		if err := r.db.VerifyLog(); err != nil {
			tb.Error(err)
		}
		if err := r.db.Close(); err != nil {
			tb.Error(err)
		}
		r.db = nil
	}
	if r.dev != nil {
		if err := r.dev.Close(); err != nil {
			tb.Error(err)
		}
		r.dev = nil
	}
}

func (r *auditRig) events(n int, what string) {
	for i := range n {
		r.az.Event(authz.Subject{User: "operator"}, what, fmt.Sprintf("camera/cam%d", i%4), "ok", "", "192.0.2.7")
	}
}

// verify checks the audit file against the anchors a stopped appliance's index holds, as nvr audit
// verify does.
func verifyAudit(t *testing.T, dir string, file []byte) (authz.VerifyReport, evidence.AuditAnchors) {
	t.Helper()
	cert, err := os.ReadFile(filepath.Join(dir, DeviceCertFile))
	if err != nil {
		t.Fatal(err)
	}
	id, err := evidence.ParseDeviceCert(cert)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(dir, "index.db"), store.Options{Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	as, err := evidence.ReadAuditAnchors(db, id)
	if err != nil {
		t.Fatalf("ReadAuditAnchors: %v", err)
	}
	var anchors []authz.ExternalAnchor
	for _, a := range as.Anchors {
		anchors = append(anchors, authz.ExternalAnchor{Size: a.Size, Head: hex.EncodeToString(a.Head[:]), Time: a.Time,
			Where: fmt.Sprintf("evidence log leaf %d", a.Index), Signed: a.Signed()})
	}
	rep, err := authz.VerifyLogWith(bytes.NewReader(file), authz.VerifyOptions{Key: id.LogKey, Anchors: anchors})
	if err != nil {
		t.Fatal(err)
	}
	return rep, as
}

// TestAuditAnchoredInEvidenceLog: the audit log's checkpoints become audit leaves of the evidence log (no
// checkpoint line and no TPM signature per audit checkpoint), covered by the log's TPM-signed checkpoint.
// When the index fails, the audit log falls back to a TPM-signed checkpoint in the file, says so, and the
// first anchor after the index is back covers the fallback period too.
func TestAuditAnchoredInEvidenceLog(t *testing.T) {
	device := swtpmtest.Start(t)
	dir := t.TempDir()
	r := newAuditRig(t, dir, device, 8)
	r.events(20, "live")
	if err := r.az.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	last, _, ok, err := r.ev.Log.LastAudit()
	if err != nil || !ok || last.Size != 20 || last.Appliance != r.ev.Appliance {
		t.Fatalf("LastAudit = %+v, %v, %v; want 20 entries anchored", last, ok, err)
	}
	if r.ev.Log.Signatures() != 0 {
		t.Fatalf("%d TPM signatures for audit anchors, want none", r.ev.Log.Signatures())
	}
	file, err := os.ReadFile(r.az.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(file, []byte(`"kind":"checkpoint"`)) {
		t.Fatal("a checkpoint line in the audit file although the evidence log anchors it")
	}

	// The index fails (closed under the running log): the next checkpoint is signed into the file instead.
	if err := r.db.Close(); err != nil {
		t.Fatal(err)
	}
	r.db = nil
	r.events(5, "playback")
	if err := r.az.Checkpoint(); err != nil {
		t.Fatalf("an audit checkpoint while the index is down: %v (want a signed fallback)", err)
	}
	if !strings.Contains(r.logs.String(), "the evidence log could not anchor the audit log") {
		t.Error("the failed anchor was not logged")
	}
	r.close(t)
	file, _ = os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if n := bytes.Count(file, []byte(`"kind":"checkpoint"`)); n != 1 {
		t.Fatalf("%d fallback checkpoint lines, want 1", n)
	}

	// Restarted with the index back: the next anchor covers everything, the fallback period included.
	r = newAuditRig(t, dir, device, 8)
	r.events(3, "export")
	r.close(t)
	file, _ = os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	rep, as := verifyAudit(t, dir, file)
	if !rep.OK() || rep.Entries != 29 || rep.SignedAnchored != 29 || rep.Checkpoints != 1 || rep.Anchored != 25 || !rep.KeyPinned {
		t.Fatalf("after restart: %+v", rep)
	}
	if len(as.Anchors) != 4 || rep.ExternalAnchors != 4 {
		t.Fatalf("%d anchors in the log, %d matched; want 4 (8, 16, 20, 29)", len(as.Anchors), rep.ExternalAnchors)
	}
	for _, a := range as.Anchors {
		if !a.Signed() {
			t.Errorf("anchor at leaf %d not under a signed checkpoint after a clean stop", a.Index)
		}
	}

	// A forger who edits an entry, drops the signed checkpoint line they cannot re-sign and recomputes the
	// whole chain fools the file's own checks, but not the anchors.
	var kept [][]byte
	for _, ln := range bytes.SplitAfter(file, []byte("\n")) {
		if !bytes.Contains(ln, []byte(`"kind":"checkpoint"`)) {
			kept = append(kept, ln)
		}
	}
	forged := bytes.Replace(bytes.Join(kept, nil), []byte(`"action":"live","object":"camera/cam2"`), []byte(`"action":"live","object":"camera/cam3"`), 1)
	forged = rechainFile(t, forged)
	if rep, _ := authz.VerifyLog(bytes.NewReader(forged), nil); !rep.OK() {
		t.Fatalf("the forged chain should hold on its own: %v", rep.Problems)
	}
	if rep, _ := verifyAudit(t, dir, forged); rep.OK() {
		t.Fatal("a recomputed-chain forgery passed the anchors")
	}

	// A third start on an audit log cut short says so at its first anchor.
	lines := bytes.SplitAfter(file, []byte("\n"))
	if err := os.WriteFile(filepath.Join(dir, "audit.jsonl"), bytes.Join(lines[:10], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	r = newAuditRig(t, dir, device, 8)
	r.events(1, "live")
	if err := r.az.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.logs.String(), "the audit log is shorter than the evidence log last anchored") {
		t.Error("a truncated audit log was not reported at start")
	}
}

// rechainFile rewrites an audit file the way a careful forger would: every entry renumbered, relinked and
// rehashed, so that the file's own hash chain holds.
func rechainFile(t *testing.T, file []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	prev := ""
	for i, ln := range bytes.Split(bytes.TrimSuffix(file, []byte("\n")), []byte("\n")) {
		var l struct {
			E json.RawMessage `json:"e"`
		}
		var e authz.Entry
		if err := json.Unmarshal(ln, &l); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(l.E, &e); err != nil {
			t.Fatal(err)
		}
		e.Seq, e.Prev = uint64(i+1), prev
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
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
