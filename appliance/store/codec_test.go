package store

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the committed fuzz seed corpus from the tables")

// validSegments is the table of valid records shared by the codec tests and
// the fuzz seed corpus.
func validSegments() map[string]Segment {
	full := testSegment("front-door", 1, 7, t0, time.Minute, StateClosed)
	full.LogIndex = 1 << 40
	open := testSegment("yard", 2, 1, t0, 0, StateOpen)
	open.End = time.Time{}
	recovered := testSegment("garage", 3, 9, t0.Add(-time.Hour), 17*time.Second, StateRecovered)
	recovered.WrappedKey = nil
	limits := Segment{
		ID:         [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		Camera:     strings.Repeat("c", MaxCameraName),
		Path:       strings.Repeat("p", MaxPath),
		Codec:      strings.Repeat("k", MaxCodec),
		Start:      minTime.UTC(),
		End:        maxTime.UTC(),
		Chunks:     math.MaxUint64,
		Bytes:      math.MaxInt64,
		WrappedKey: bytes.Repeat([]byte{1}, MaxWrappedKey),
		State:      StateClosed,
		LogIndex:   math.MaxUint64,
	}
	old := testSegment("ünïcode 📷", 4, 2, time.Date(1969, 12, 31, 23, 59, 59, 999, time.UTC), time.Nanosecond, StateClosed)
	return map[string]Segment{"full": full, "open": open, "recovered": recovered, "limits": limits, "pre-epoch": old}
}

func validHolds() map[string]Hold {
	return map[string]Hold{
		"camera":  {ID: 1, Camera: "front-door", From: t0, To: t0.Add(time.Hour), Reason: "case 2026-117", Created: t0},
		"all":     {ID: 1 << 33, From: t0.Add(-24 * time.Hour), To: t0, Reason: "court order", Created: t0},
		"minimal": {ID: 2, From: t0, To: t0.Add(time.Nanosecond)},
	}
}

func TestSegmentCodecRoundTrip(t *testing.T) {
	for name, s := range validSegments() {
		t.Run(name, func(t *testing.T) {
			b, err := MarshalSegment(s)
			if err != nil {
				t.Fatalf("MarshalSegment: %v", err)
			}
			if b[0] != segmentVersion {
				t.Errorf("version byte %d, want %d", b[0], segmentVersion)
			}
			got, err := UnmarshalSegment(b)
			if err != nil {
				t.Fatalf("UnmarshalSegment: %v", err)
			}
			if !sameSegment(got, s) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, s)
			}
			// Every strict prefix is refused as corrupt.
			for i := range len(b) {
				if _, err := UnmarshalSegment(b[:i]); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("prefix of %d bytes: err %v, want ErrCorrupt", i, err)
				}
			}
			if _, err := UnmarshalSegment(append(bytes.Clone(b), 0)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("trailing byte: err %v, want ErrCorrupt", err)
			}
			// Every single-bit flip either fails cleanly or decodes to a
			// record whose encoding is exactly the flipped bytes.
			for i := range len(b) {
				for bit := range 8 {
					c := bytes.Clone(b)
					c[i] ^= 1 << bit
					checkSegmentCanonical(t, c)
				}
			}
		})
	}
}

// checkSegmentCanonical asserts the decoder's contract on arbitrary bytes:
// an ErrCorrupt error, or a segment that encodes back to the same bytes.
func checkSegmentCanonical(t *testing.T, b []byte) {
	t.Helper()
	s, err := UnmarshalSegment(b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("UnmarshalSegment(%x): error %v does not wrap ErrCorrupt", b, err)
		}
		return
	}
	again, err := MarshalSegment(s)
	if err != nil {
		t.Fatalf("decoded %+v but cannot encode it: %v", s, err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("encoding not canonical:\n  in %x\n out %x", b, again)
	}
}

func checkHoldCanonical(t *testing.T, b []byte) {
	t.Helper()
	h, err := UnmarshalHold(b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("UnmarshalHold(%x): error %v does not wrap ErrCorrupt", b, err)
		}
		return
	}
	again, err := MarshalHold(h)
	if err != nil {
		t.Fatalf("decoded %+v but cannot encode it: %v", h, err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("encoding not canonical:\n  in %x\n out %x", b, again)
	}
}

func TestSegmentCodecRefuses(t *testing.T) {
	good := validSegments()["full"]
	marshal := []struct {
		name string
		edit func(*Segment)
	}{
		{"zero state", func(s *Segment) { s.State = 0 }},
		{"unknown state", func(s *Segment) { s.State = 9 }},
		{"negative size", func(s *Segment) { s.Bytes = -1 }},
		{"long camera", func(s *Segment) { s.Camera = strings.Repeat("x", MaxCameraName+1) }},
		{"long path", func(s *Segment) { s.Path = strings.Repeat("x", MaxPath+1) }},
		{"long codec", func(s *Segment) { s.Codec = strings.Repeat("x", MaxCodec+1) }},
		{"long key", func(s *Segment) { s.WrappedKey = make([]byte, MaxWrappedKey+1) }},
		{"year 2300", func(s *Segment) { s.End = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"year 1600", func(s *Segment) { s.Start = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) }},
	}
	for _, tc := range marshal {
		t.Run("marshal "+tc.name, func(t *testing.T) {
			s := good
			tc.edit(&s)
			if _, err := MarshalSegment(s); !errors.Is(err, ErrInvalid) {
				t.Errorf("err %v, want ErrInvalid", err)
			}
		})
	}
	b, err := MarshalSegment(good)
	if err != nil {
		t.Fatal(err)
	}
	hugeLen := append([]byte{segmentVersion}, good.ID[:]...)
	hugeLen = append(hugeLen, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
	padded := append([]byte{segmentVersion}, good.ID[:]...)
	padded = append(padded, 0x80, 0x00)
	unmarshal := map[string][]byte{
		"empty":           nil,
		"version 0":       append([]byte{0}, b[1:]...),
		"version 2":       append([]byte{2}, b[1:]...),
		"huge length":     hugeLen,
		"padded varint":   padded,
		"overlong varint": append(append([]byte{segmentVersion}, good.ID[:]...), bytes.Repeat([]byte{0xff}, 11)...),
	}
	for name, in := range unmarshal {
		t.Run("unmarshal "+name, func(t *testing.T) {
			if _, err := UnmarshalSegment(in); !errors.Is(err, ErrCorrupt) {
				t.Errorf("err %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestHoldCodec(t *testing.T) {
	for name, h := range validHolds() {
		t.Run(name, func(t *testing.T) {
			b, err := MarshalHold(h)
			if err != nil {
				t.Fatalf("MarshalHold: %v", err)
			}
			got, err := UnmarshalHold(b)
			if err != nil {
				t.Fatalf("UnmarshalHold: %v", err)
			}
			if got.ID != h.ID || got.Camera != h.Camera || !got.From.Equal(h.From) || !got.To.Equal(h.To) ||
				got.Reason != h.Reason || !got.Created.Equal(h.Created) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, h)
			}
			for i := range len(b) {
				if _, err := UnmarshalHold(b[:i]); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("prefix of %d bytes: err %v, want ErrCorrupt", i, err)
				}
				for bit := range 8 {
					c := bytes.Clone(b)
					c[i] ^= 1 << bit
					checkHoldCanonical(t, c)
				}
			}
		})
	}
	if _, err := MarshalHold(Hold{Reason: strings.Repeat("r", MaxReason+1)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("long reason: err %v, want ErrInvalid", err)
	}
}

func TestCameraCodec(t *testing.T) {
	c := Camera{Name: "front-door", URL: "rtsps://10.0.7.12:322/stream1", Added: t0, Disabled: true}
	b, err := marshalCamera(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := unmarshalCamera(b)
	if err != nil || got.Name != c.Name || got.URL != c.URL || !got.Added.Equal(c.Added) || !got.Disabled {
		t.Fatalf("round trip: got %+v, %v; want %+v", got, err, c)
	}
	bad := bytes.Clone(b)
	bad[len(bad)-1] = 0x82
	if _, err := unmarshalCamera(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unknown flag: err %v, want ErrCorrupt", err)
	}
	for i := range len(b) {
		if _, err := unmarshalCamera(b[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d bytes: err %v, want ErrCorrupt", i, err)
		}
	}
}

func FuzzUnmarshalSegment(f *testing.F) {
	for _, s := range validSegments() {
		b, err := MarshalSegment(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(checkSegmentCanonical)
}

func FuzzUnmarshalHold(f *testing.F) {
	for _, h := range validHolds() {
		b, err := MarshalHold(h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(checkHoldCanonical)
}

// TestFuzzSeedCorpus checks that the committed corpus holds every record of
// the tables, so `go test` replays them even without the f.Add seeds; run
// with -update-seeds to rewrite it.
func TestFuzzSeedCorpus(t *testing.T) {
	type seed struct {
		dir  string
		name string
		b    []byte
	}
	var seeds []seed
	for name, s := range validSegments() {
		b, err := MarshalSegment(s)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, seed{"FuzzUnmarshalSegment", name, b})
	}
	for name, h := range validHolds() {
		b, err := MarshalHold(h)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, seed{"FuzzUnmarshalHold", name, b})
	}
	for _, s := range seeds {
		path := filepath.Join("testdata", "fuzz", s.dir, "seed-"+s.name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.b)
		if *updateSeeds {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed %s: %v (run go test -run TestFuzzSeedCorpus -update-seeds)", path, err)
			continue
		}
		if string(got) != want {
			t.Errorf("seed %s is stale (run go test -run TestFuzzSeedCorpus -update-seeds)", path)
		}
	}
}
