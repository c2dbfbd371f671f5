package evidence

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func auditHead(n uint64) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "audit entry %d", n)) }

func TestAuditLeafFormat(t *testing.T) {
	a := AuditLeaf{Appliance: "nvr-0123456789abcdef", Size: 42, Head: auditHead(42), Time: t0}
	b := a.Marshal()
	want := fmt.Sprintf("edgenvr/audit/v1\nappliance nvr-0123456789abcdef\nsize 42\nhead %x\ntime %d\n", a.Head, t0.UnixNano())
	if string(b) != want {
		t.Fatalf("Marshal:\n%s\nwant:\n%s", b, want)
	}
	got, err := ParseAuditLeaf(b)
	if err != nil || got != a {
		t.Fatalf("ParseAuditLeaf = %+v, %v", got, err)
	}
	if !IsAuditLeaf(b) || IsAuditLeaf(GenesisLeaf{Appliance: "nvr-1", Created: t0}.Marshal()) || LeafKind([]byte("no newline")) != "" {
		t.Error("IsAuditLeaf / LeafKind")
	}
	// A segment parser refuses an audit leaf and the audit parser a segment leaf.
	if _, err := ParseSegmentLeaf(b); !errors.Is(err, ErrFormat) {
		t.Errorf("ParseSegmentLeaf(audit leaf) = %v", err)
	}
	if _, err := ParseAuditLeaf(SegmentLeaf{Appliance: "nvr-1", Camera: "c", Seq: 1, Start: t0, End: t0, Chunks: 1}.Marshal()); !errors.Is(err, ErrFormat) {
		t.Errorf("ParseAuditLeaf(segment leaf) = %v", err)
	}
	hexHead := fmt.Sprintf("%x", a.Head)
	for name, bad := range map[string]string{
		"no entries":        strings.Replace(want, "size 42", "size 0", 1),
		"leading zero":      strings.Replace(want, "size 42", "size 042", 1),
		"signed size":       strings.Replace(want, "size 42", "size +42", 1),
		"upper-case head":   strings.Replace(want, hexHead, strings.ToUpper(hexHead), 1),
		"short head":        strings.Replace(want, hexHead, hexHead[2:], 1),
		"no final newline":  strings.TrimSuffix(want, "\n"),
		"extra line":        want + "note x\n",
		"fields reordered":  strings.Replace(strings.Replace(want, "size 42\n", "", 1), "time ", "size 42\ntime ", 1),
		"time zero":         strings.Replace(want, fmt.Sprint(t0.UnixNano()), "0", 1),
		"space in value":    strings.Replace(want, "appliance nvr-0123456789abcdef", "appliance nvr 0123", 1),
		"CR line ending":    strings.Replace(want, "size 42\n", "size 42\r\n", 1),
		"oversized":         want + strings.Repeat("x", maxLeaf),
		"another kind line": strings.Replace(want, "edgenvr/audit/v1", "edgenvr/audit/v2", 1),
	} {
		if _, err := ParseAuditLeaf([]byte(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: ParseAuditLeaf = %v, want ErrFormat", name, err)
		}
	}
}

// anchorBetween appends an audit anchor after every segment of a fixture: 10 entries per segment.
func anchorBetween(tb testing.TB) func(int, *Log) {
	return func(i int, l *Log) {
		n := uint64(i+1) * 10
		if _, err := l.AppendAudit(n, auditHead(n), t0.Add(time.Duration(i)*5*time.Second)); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestExportVerifyWithAuditLeaves: audit leaves between a camera's segment leaves change nothing for an
// export: its inclusion proofs, the seq/prev links and the checkpoint all verify.
func TestExportVerifyWithAuditLeaves(t *testing.T) {
	f := makeFixture(t, 4, 5, 5*time.Second, 0, anchorBetween(t))
	if f.log.Size() != 1+4+4 {
		t.Fatalf("log of %d leaves, want genesis, 4 segments and 4 anchors", f.log.Size())
	}
	b, er := f.export(t, defaultRequest())
	if er.Segments != 3 {
		t.Fatalf("export of %d segments, want 3", er.Segments)
	}
	if rep := verifyBytes(t, b, f.k.cert); !rep.OK() {
		t.Fatalf("an export from a log with audit leaves does not verify: %+v", rep.Failed())
	}
	if n, size, err := CheckCheckpoints(f.db, f.k.id); err != nil || n != 2 || size != 9 {
		t.Fatalf("CheckCheckpoints = %d, %d, %v", n, size, err)
	}
}

// TestReadAuditAnchors reads anchors back from a real index: signed ones with the earliest checkpoint that
// covers them, the one appended after the last checkpoint unsigned.
func TestReadAuditAnchors(t *testing.T) {
	f := makeFixture(t, 4, 5, 5*time.Second, 0, anchorBetween(t))
	last, err := f.log.AppendAudit(45, auditHead(45), t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	got, idx, ok, err := f.log.LastAudit()
	if err != nil || !ok || idx != last || got.Size != 45 || got.Head != auditHead(45) {
		t.Fatalf("LastAudit = %+v, %d, %v, %v", got, idx, ok, err)
	}
	as, err := ReadAuditAnchors(f.db, f.k.id)
	if err != nil {
		t.Fatal(err)
	}
	if len(as.Anchors) != 5 || as.LogSize != 10 || as.Latest.Size != 9 || as.Checkpoints != 2 {
		t.Fatalf("ReadAuditAnchors: %d anchors, log %d, latest %d, %d checkpoints", len(as.Anchors), as.LogSize, as.Latest.Size, as.Checkpoints)
	}
	for i, a := range as.Anchors[:4] {
		n := uint64(i+1) * 10
		if a.Size != n || a.Head != auditHead(n) || a.Index != uint64(2+2*i) || !a.Signed() {
			t.Errorf("anchor %d: %+v", i, a)
		}
	}
	if as.Anchors[0].SignedBy.Size != 3 || as.Anchors[1].SignedBy.Size != 9 {
		t.Errorf("first anchors signed by checkpoints of %d and %d leaves, want 3 (the early one) and 9", as.Anchors[0].SignedBy.Size, as.Anchors[1].SignedBy.Size)
	}
	if a := as.Anchors[4]; a.Signed() || a.Size != 45 || a.Index != 9 {
		t.Errorf("anchor after the last checkpoint: %+v", a)
	}
	// Another device's certificate proves nothing.
	_, other := testKeys(t)
	if _, err := ReadAuditAnchors(f.db, other.id); !errors.Is(err, ErrFork) {
		t.Errorf("with another device certificate: %v, want ErrFork", err)
	}
}

// TestReadAuditAnchorsRefusesEditedIndex: whoever can write the index but not sign cannot add, remove or
// change an anchor under a signed checkpoint, even keeping the stored hashes as they were.
func TestReadAuditAnchorsRefusesEditedIndex(t *testing.T) {
	k, _ := testKeys(t)
	build := func(t *testing.T) *memStore {
		st := newMemStore()
		lfp, _ := KeyFingerprint(k.log.Public())
		l, err := New(Config{Store: st, Key: k.log, Appliance: k.id.Appliance, LogKeyFingerprint: lfp, Clock: func() time.Time { return t0 }}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			if _, err := l.Append(Segment{ID: [16]byte{byte(i + 1)}, Camera: "cam1", Start: t0, End: t0.Add(time.Second), Chunks: 2}); err != nil {
				t.Fatal(err)
			}
			if _, err := l.AppendAudit(uint64(i+1), auditHead(uint64(i+1)), t0); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := l.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.AppendAudit(7, auditHead(7), t0); err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := build(t)
	as, err := ReadAuditAnchors(st, k.id)
	if err != nil || len(as.Anchors) != 7 {
		t.Fatalf("intact: %d anchors, %v", len(as.Anchors), err)
	}
	segmentLeaf := st.leaves[1]
	for name, edit := range map[string]func(st *memStore){
		"anchor changed": func(st *memStore) {
			st.leaves[4] = AuditLeaf{Appliance: k.id.Appliance, Size: 2, Head: auditHead(99), Time: t0}.Marshal()
		},
		"anchor replaced by a segment leaf": func(st *memStore) { st.leaves[6] = segmentLeaf },
		"anchor added":                      func(st *memStore) { st.leaves[3] = st.leaves[2] },
		"anchor unreadable":                 func(st *memStore) { st.leaves[2] = append(bytes.Clone(st.leaves[2]), "x\n"...) },
	} {
		st := build(t)
		edit(st)
		if _, err := ReadAuditAnchors(st, k.id); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// After the last checkpoint nothing is signed: an edit there changes an unsigned anchor, no error.
	st = build(t)
	st.leaves[13] = AuditLeaf{Appliance: k.id.Appliance, Size: 8, Head: auditHead(8), Time: t0}.Marshal()
	if as, err := ReadAuditAnchors(st, k.id); err != nil || as.Anchors[6].Signed() || as.Anchors[6].Size != 8 {
		t.Errorf("unsigned tail: %v", err)
	}
}

func TestCompactRoot(t *testing.T) {
	st := newMemStore()
	k, _ := testKeys(t)
	l, err := New(Config{Store: st, Key: k.log, Appliance: k.id.Appliance, Clock: func() time.Time { return t0 }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var c compactRoot
	c.add(LeafHash(st.leaves[0]))
	for n := uint64(1); n <= 70; n++ {
		c2 := c
		c2.hashes = append([][32]byte(nil), c.hashes...)
		cp, _, err := l.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if c2.sum() != cp.Root {
			t.Fatalf("compact root of %d leaves differs from tlog's", n)
		}
		if _, err := l.AppendAudit(n, auditHead(n), t0); err != nil {
			t.Fatal(err)
		}
		c.add(LeafHash(st.leaves[n]))
	}
}
