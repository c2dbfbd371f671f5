package record

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
)

// TestFragmentMatchesMediacommon: the fragmenter writes exactly what mediacommon's fmp4.Part.Marshal writes
// for the same samples (key frames only, non-sync frames, composition offsets, uneven durations), and
// mediacommon reads it back to the same samples.
func TestFragmentMatchesMediacommon(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var f fragmenter
	for round := range 200 {
		n := 1 + rnd.IntN(60)
		var samples []*sample
		var parts []*fmp4.Sample
		dts := int64(1_800_000_000) * TimeScale
		for i := range n {
			payload := make([]byte, 4+rnd.IntN(3000))
			for j := range payload {
				payload[j] = byte(rnd.Uint32())
			}
			s := &sample{dts: dts, random: i == 0 || rnd.IntN(10) == 0, payload: payload, dur: uint32(3000 + rnd.IntN(1200))}
			if round%3 == 1 {
				s.ptsOff = int32(rnd.IntN(7200) - 1800)
			}
			if round%5 == 2 {
				s.random = true
			}
			samples = append(samples, s)
			parts = append(parts, &fmp4.Sample{Duration: s.dur, PTSOffset: s.ptsOff, IsNonSyncSample: !s.random, Payload: payload})
			dts += int64(s.dur)
		}
		seq := uint32(round + 1)
		var want seekablebuffer.Buffer
		part := fmp4.Part{SequenceNumber: seq, Tracks: []*fmp4.PartTrack{{ID: videoTrack, BaseTime: uint64(samples[0].dts), Samples: parts}}}
		if err := part.Marshal(&want); err != nil {
			t.Fatal(err)
		}
		var got []byte
		if err := f.fragment(seq, samples, func(b []byte) error { got = bytes.Clone(b); return nil }); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("round %d (%d samples): %d bytes, mediacommon writes %d; they differ", round, n, len(got), want.Len())
		}
		var back fmp4.Parts
		if err := back.Unmarshal(got); err != nil {
			t.Fatalf("round %d: mediacommon cannot read it: %v", round, err)
		}
		if len(back) != 1 || len(back[0].Tracks) != 1 || len(back[0].Tracks[0].Samples) != n {
			t.Fatalf("round %d: read back %+v", round, back)
		}
		for i, s := range back[0].Tracks[0].Samples {
			if !bytes.Equal(s.Payload, samples[i].payload) || s.Duration != samples[i].dur || s.PTSOffset != samples[i].ptsOff {
				t.Fatalf("round %d sample %d differs after reading back", round, i)
			}
		}
	}
}

func BenchmarkFragment(b *testing.B) {
	// One second of a 4 Mbit/s, 25 fps camera: a 100 kB key frame and 24 frames of about 16 kB.
	var samples []*sample
	for i := range 25 {
		size := 16_000
		if i == 0 {
			size = 100_000
		}
		samples = append(samples, &sample{dts: int64(i) * 3600, random: i == 0, payload: make([]byte, size), dur: 3600})
	}
	var f fragmenter
	b.ReportAllocs()
	b.SetBytes(100_000 + 24*16_000)
	for b.Loop() {
		if err := f.fragment(1, samples, func([]byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
