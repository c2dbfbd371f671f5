package record

import (
	"bytes"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts the arena's pages that are backed by memory (mincore(2)).
func resident(t *testing.T, a *pictureArena) int {
	t.Helper()
	vec := make([]byte, (len(a.mem)+a.page-1)/a.page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&a.mem[0])), uintptr(len(a.mem)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestPictureArena(t *testing.T) {
	a := newPictureArena(1 << 20)
	pic := bytes.Repeat([]byte{0xab}, 300<<10)
	var kept [][]byte
	for range 3 {
		cp, ok, err := a.add(pic)
		if err != nil || !ok {
			t.Fatalf("add: ok %v err %v", ok, err)
		}
		kept = append(kept, cp)
	}
	if _, ok, err := a.add(pic); ok || err != nil {
		t.Fatalf("a fourth 300 KiB picture fits in 1 MiB: ok %v err %v", ok, err)
	}
	for i, cp := range kept {
		if !bytes.Equal(cp, pic) {
			t.Fatalf("picture %d changed in the arena", i)
		}
	}
	if cap(kept[0]) != len(pic) {
		t.Error("an arena slice can grow into the next picture")
	}
	if n := resident(t, a); n < 900<<10/a.page {
		t.Fatalf("%d pages resident after writing 900 KiB", n)
	}
	if err := a.reset(); err != nil {
		t.Fatal(err)
	}
	if n := resident(t, a); n != 0 {
		t.Errorf("%d pages still resident after reset", n)
	}
	if cp, ok, err := a.add(pic); !ok || err != nil || !bytes.Equal(cp, pic) {
		t.Fatalf("add after reset: ok %v err %v", ok, err)
	}
	if err := a.free(); err != nil {
		t.Fatal(err)
	}
	if a.mem != nil {
		t.Error("free left the mapping")
	}
	if cp, ok, err := a.add(pic); !ok || err != nil || !bytes.Equal(cp, pic) {
		t.Fatalf("add after free maps again: ok %v err %v", ok, err)
	}
	if err := a.free(); err != nil {
		t.Fatal(err)
	}
}

// TestArenaDoesNotChangeRecordings: the same stream recorded with the arena, with an arena too small for a
// fragment (pictures overflow to the Go heap) and without one gives the same fragments, byte for byte.
func TestArenaDoesNotChangeRecordings(t *testing.T) {
	record := func(arena *pictureArena) []byte {
		f := newFixture(t, Config{SegmentDuration: 2 * time.Second})
		f.rec.pics = arena
		feed(f.rec, 1, params1, time.Unix(1800000000, 0), 0, 150, 25)
		if err := f.rec.Close(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		for _, s := range segments(t, f.db) {
			for _, plain := range chunks(t, f, s) {
				out.Write(plain)
			}
		}
		return out.Bytes()
	}
	want := record(newPictureArena(pictureArenaSize))
	if len(want) == 0 {
		t.Fatal("nothing recorded")
	}
	small := newPictureArena(40) // about ten of the test's 7-byte pictures, then the Go heap
	if got := record(small); !bytes.Equal(got, want) {
		t.Error("a full arena changed the recording")
	}
	if got := record(&pictureArena{failed: true, page: 4096}); !bytes.Equal(got, want) {
		t.Error("recording without an arena differs")
	}
}
