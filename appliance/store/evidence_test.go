package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestAppendLogIsCompareAndAppend(t *testing.T) {
	db := newDB(t)
	t.Cleanup(func() {
		if err := db.VerifyLog(); err != nil {
			t.Errorf("VerifyLog: %v", err)
		}
	})
	if n, err := db.LogSize(); err != nil || n != 0 {
		t.Fatalf("LogSize = %d, %v; want 0", n, err)
	}
	h := [][32]byte{{1}, {2}}
	if err := db.AppendLog(0, []byte("genesis"), 0, h[:1], [16]byte{}, map[string][]byte{"id": []byte("x")}); err != nil {
		t.Fatalf("AppendLog 0: %v", err)
	}
	if err := db.AppendLog(0, []byte("fork"), 0, h[:1], [16]byte{}, nil); !errors.Is(err, ErrLogPosition) {
		t.Fatalf("second AppendLog at 0: %v, want ErrLogPosition", err)
	}
	if err := db.AppendLog(5, []byte("gap"), 0, nil, [16]byte{}, nil); !errors.Is(err, ErrLogPosition) {
		t.Fatalf("AppendLog at 5: %v, want ErrLogPosition", err)
	}

	seg := testSegment("cam1", 1, 1, t0, time.Minute, StateClosed)
	mustStore(t, db, seg)
	open := testSegment("cam1", 1, 2, t0.Add(time.Minute), time.Minute, StateOpen)
	mustStore(t, db, open)
	if err := db.AppendLog(1, []byte("open"), 1, nil, open.ID, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("logging an open segment: %v, want ErrInvalid", err)
	}
	if err := db.AppendLog(1, []byte("seg"), 1, h, seg.ID, map[string][]byte{"cam/cam1": []byte("head")}); err != nil {
		t.Fatalf("AppendLog 1: %v", err)
	}
	if err := db.AppendLog(2, []byte("again"), 3, nil, seg.ID, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("logging a segment twice: %v, want ErrInvalid", err)
	}
	got, err := db.Segment(seg.ID)
	if err != nil || got.LogIndex != 1 {
		t.Fatalf("segment log index = %d, %v; want 1", got.LogIndex, err)
	}
	if leaf, err := db.LogLeaf(1); err != nil || string(leaf) != "seg" {
		t.Fatalf("LogLeaf(1) = %q, %v", leaf, err)
	}
	if _, err := db.LogLeaf(2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LogLeaf(2): %v, want ErrNotFound", err)
	}
	hs, err := db.LogHashes([]int64{2, 0, 1})
	if err != nil || hs[0] != h[1] || hs[1] != h[0] || hs[2] != h[0] {
		t.Fatalf("LogHashes = %x, %v", hs, err)
	}
	if _, err := db.LogHashes([]int64{9}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LogHashes(9): %v, want ErrNotFound", err)
	}
	if v, err := db.EvidenceMeta("cam/cam1"); err != nil || string(v) != "head" {
		t.Fatalf("EvidenceMeta = %q, %v", v, err)
	}
	if v, err := db.EvidenceMeta("none"); err != nil || v != nil {
		t.Fatalf("EvidenceMeta(none) = %q, %v", v, err)
	}
}

func TestCheckpointsKeepOnePerSizeAndSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db, err := Open(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := db.AppendLog(uint64(i), []byte{byte(i + 1)}, int64(i), nil, [16]byte{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutCheckpoint(4, []byte("too big")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("checkpoint beyond the log: %v", err)
	}
	for _, c := range []struct {
		size uint64
		note string
	}{{1, "a"}, {3, "b"}, {3, "c"}, {2, "d"}} {
		if err := db.PutCheckpoint(c.size, []byte(c.note)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path, Options{})
	size, note, err := db.LatestCheckpoint()
	if err != nil || size != 3 || string(note) != "c" {
		t.Fatalf("LatestCheckpoint = %d %q %v; want 3 c", size, note, err)
	}
	size, note, err = db.CheckpointAtLeast(2)
	if err != nil || size != 2 || string(note) != "d" {
		t.Fatalf("CheckpointAtLeast(2) = %d %q %v", size, note, err)
	}
	if _, _, err := db.CheckpointAtLeast(4); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CheckpointAtLeast(4): %v", err)
	}
	var all bytes.Buffer
	if err := db.Checkpoints(func(n uint64, b []byte) error { all.Write(b); return nil }); err != nil {
		t.Fatal(err)
	}
	if all.String() != "adc" {
		t.Errorf("Checkpoints in order = %q, want adc", all.String())
	}
	if err := db.VerifyLog(); err != nil {
		t.Errorf("VerifyLog: %v", err)
	}
}
