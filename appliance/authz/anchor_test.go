package authz

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingAnchor keeps anchors in memory, as the evidence log keeps them in its Merkle tree (the real
// one is tested in package appliance against the evidence log in a real index).
type recordingAnchor struct {
	mu      sync.Mutex
	anchors []ExternalAnchor
}

func (r *recordingAnchor) Anchor(size uint64, head string, t time.Time) (*Checkpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.anchors = append(r.anchors, ExternalAnchor{Size: size, Head: head, Time: t, Where: "test anchor", Signed: true})
	return nil, nil
}

// rechain rewrites audit lines the way a careful forger would: every entry renumbered, relinked and
// rehashed, so that the file's own hash chain holds.
func rechain(t testing.TB, lines []string) []byte {
	t.Helper()
	var out bytes.Buffer
	prev := ""
	for i, ln := range lines {
		var l line
		var e Entry
		if err := json.Unmarshal([]byte(ln), &l); err != nil {
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
		b, _ := json.Marshal(line{E: raw, H: prev})
		out.Write(append(b, '\n'))
	}
	return out.Bytes()
}

func auditLines(t testing.TB, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
}

// TestExternalAnchorsCatchRecomputedChain: with the audit log anchored elsewhere, no checkpoint is written
// into the file, and a forger who edits, deletes, reorders or truncates entries and recomputes the whole
// chain fools the chain check but not the anchors. Entries after the last anchor are the chain's alone.
func TestExternalAnchorsCatchRecomputedChain(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	anchor := &recordingAnchor{}
	s, err := New(Config{DataDir: t.TempDir(), Anchor: anchor, Now: clk.Now, Sleep: clk.Sleep, Argon2: testArgon2, CheckpointEvery: 10},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for i := range 25 {
		s.Event(Subject{User: "u"}, "test", "obj", "ok", strings.Repeat("x", i), "192.0.2.4")
		clk.Advance(time.Second)
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(); err != nil { // nothing new: no second anchor of the same state
		t.Fatal(err)
	}
	anchors := anchor.anchors
	if len(anchors) != 3 || anchors[0].Size != 10 || anchors[1].Size != 20 || anchors[2].Size != 25 {
		t.Fatalf("anchors %+v, want at 10, 20 and 25 entries", anchors)
	}
	lines := auditLines(t, s.AuditPath())
	raw := []byte(strings.Join(lines, ""))
	rep, err := VerifyLogWith(bytes.NewReader(raw), VerifyOptions{Anchors: anchors})
	if err != nil || !rep.OK() || rep.Entries != 25 || rep.Checkpoints != 0 || rep.ExternalAnchors != 3 || rep.SignedAnchored != 25 || rep.LastSigned.Size != 25 {
		t.Fatalf("intact log: %v %+v", err, rep)
	}

	edited := append([]string{}, lines...)
	edited[3] = strings.Replace(edited[3], `"result":"ok"`, `"result":"no"`, 1)
	deleted := append(append([]string{}, lines[:11]...), lines[12:]...)
	reordered := append([]string{}, lines...)
	reordered[6], reordered[7] = reordered[7], reordered[6]
	for name, forged := range map[string][]byte{
		"edited": rechain(t, edited), "deleted": rechain(t, deleted), "reordered": rechain(t, reordered),
	} {
		if rep, _ := VerifyLog(bytes.NewReader(forged), nil); !rep.OK() {
			t.Fatalf("%s: the forger's chain should hold on its own: %v", name, rep.Problems)
		}
		rep, err := VerifyLogWith(bytes.NewReader(forged), VerifyOptions{Anchors: anchors})
		if err != nil || rep.OK() || !strings.Contains(strings.Join(rep.Problems, "\n"), "not what test anchor anchored") {
			t.Errorf("%s with a recomputed chain: not caught by the anchors: %v %+v", name, err, rep.Problems)
		}
		t.Logf("%s: %s", name, rep.Problems[0])
	}

	// Truncation: a cut through anchored entries is caught, unless the file is an earlier export (a prefix).
	cut := []byte(strings.Join(lines[:18], ""))
	rep, _ = VerifyLogWith(bytes.NewReader(cut), VerifyOptions{Anchors: anchors})
	if rep.OK() || len(rep.Problems) != 2 || !strings.Contains(rep.Problems[0], "truncated") {
		t.Errorf("truncated to 18: %+v", rep.Problems)
	}
	rep, _ = VerifyLogWith(bytes.NewReader(cut), VerifyOptions{Anchors: anchors, Prefix: true})
	if !rep.OK() || rep.BeyondEnd != 2 || rep.SignedAnchored != 10 {
		t.Errorf("prefix of 18: %+v", rep)
	}

	// After the last anchor only the chain holds: entries appended there, or cut from there, do not show.
	more := append(append([]string{}, lines...), lines[24], lines[24])
	rep, _ = VerifyLogWith(bytes.NewReader(rechain(t, more)), VerifyOptions{Anchors: anchors})
	if !rep.OK() || rep.Entries != 27 || rep.SignedAnchored != 25 {
		t.Errorf("tail after the last anchor: %+v", rep)
	}

	// An anchor not (yet) signed counts apart.
	unsigned := append([]ExternalAnchor{}, anchors...)
	unsigned[2].Signed = false
	rep, _ = VerifyLogWith(bytes.NewReader(raw), VerifyOptions{Anchors: unsigned})
	if !rep.OK() || rep.SignedAnchored != 20 || rep.UnsignedAnchored != 25 {
		t.Errorf("unsigned last anchor: %+v", rep)
	}
	// An anchor whose place in the file is unreadable is a problem too.
	garbled := append([]string{}, lines...)
	garbled[9] = "not json\n"
	if rep, _ := VerifyLogWith(bytes.NewReader([]byte(strings.Join(garbled, ""))), VerifyOptions{Anchors: anchors}); rep.OK() ||
		!strings.Contains(strings.Join(rep.Problems, "\n"), "unreadable") {
		t.Errorf("garbled anchored entry: %+v", rep.Problems)
	}
}
