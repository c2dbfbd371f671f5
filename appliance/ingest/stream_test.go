package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph264"
	"github.com/pion/rtp"
)

// A real SPS and PPS from libx264 (baseline, 320x240), so that parameter-set parsing runs on real bytes.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80}
	testPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// testAU makes an access unit: an IDR with parameter sets every gop pictures, else a non-IDR slice.
func testAU(i, gop, size int) [][]byte {
	body := bytes.Repeat([]byte{byte(i)}, size)
	if i%gop == 0 {
		return [][]byte{testSPS, testPPS, append([]byte{0x65, 0x88}, body...)}
	}
	return [][]byte{append([]byte{0x41, 0x9a}, body...)}
}

// packetize turns access units into RTP packets 40 ms apart, as a camera at 25 fps would send them.
func packetize(t testing.TB, aus [][][]byte) ([]*rtp.Packet, []int64) {
	ssrc, seq := uint32(0x4e565231), uint16(1000)
	enc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: 1200, SSRC: &ssrc, InitialSequenceNumber: &seq}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	var pkts []*rtp.Packet
	var pts []int64
	for i, au := range aus {
		ps, err := enc.Encode(au)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			p.Timestamp = uint32(i * 3600)
			pkts = append(pkts, p)
			pts = append(pts, int64(i*3600))
		}
	}
	return pkts, pts
}

func newTestStream(t testing.TB) *stream {
	s, err := newStream(CodecH264, 96, 1, nil, 1<<20, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func feed(s *stream, pkts []*rtp.Packet, pts []int64, t0 time.Time) (units []*Unit, errs []error) {
	for i, p := range pkts {
		now := t0.Add(time.Duration(pts[i]) * time.Second / ClockRate)
		u, err := s.packet(p, pts[i], now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if u != nil {
			units = append(units, u)
		}
	}
	return units, errs
}

func TestStreamUnits(t *testing.T) {
	var aus [][][]byte
	for i := 3; i < 3+60; i++ { // starts mid-GOP: the first pictures must be skipped
		aus = append(aus, testAU(i, 25, 3000))
	}
	pkts, pts := packetize(t, aus)
	units, errs := feed(newTestStream(t), pkts, pts, time.Unix(1700000000, 0))
	if len(errs) != 0 {
		t.Fatalf("errors on a clean stream: %v", errs)
	}
	// The first random access point is picture 25; every picture from there on is a unit.
	if want := 63 - 25; len(units) != want {
		t.Fatalf("got %d units, want %d", len(units), want)
	}
	if !units[0].RandomAccess || units[0].DTS != 0 {
		t.Errorf("first unit: random=%v dts=%d, want a key frame at 0", units[0].RandomAccess, units[0].DTS)
	}
	if !units[0].Params.complete() || !bytes.Equal(units[0].Params.SPS, testSPS) {
		t.Errorf("parameter sets not taken from the stream")
	}
	for i := 1; i < len(units); i++ {
		if units[i].DTS-units[i-1].DTS != 3600 {
			t.Fatalf("unit %d: dts step %d, want 3600", i, units[i].DTS-units[i-1].DTS)
		}
		if units[i].Params != units[0].Params {
			t.Fatalf("unit %d: parameter sets changed without a change in the stream", i)
		}
	}
	if w, h, err := units[0].Params.Size(); err != nil || w != 320 || h != 240 {
		t.Errorf("size %dx%d %v, want 320x240", w, h, err)
	}
}

func TestStreamRefusesBadPackets(t *testing.T) {
	var aus [][][]byte
	for i := 0; i < 30; i++ {
		aus = append(aus, testAU(i, 25, 2000))
	}
	pkts, pts := packetize(t, aus)
	s := newTestStream(t)
	t0 := time.Unix(1700000000, 0)
	units, _ := feed(s, pkts[:len(pkts)/2], pts[:len(pts)/2], t0)
	if len(units) == 0 {
		t.Fatal("no units before the faults")
	}
	now := t0.Add(time.Duration(pts[len(pts)/2]) * time.Second / ClockRate)
	cases := []struct {
		name string
		pkt  *rtp.Packet
		pts  int64
		want error
	}{
		{"wrong payload type", &rtp.Packet{Header: rtp.Header{PayloadType: 97}, Payload: []byte{0x41, 1}}, pts[len(pts)/2], errBadPacket},
		{"empty payload", &rtp.Packet{Header: rtp.Header{PayloadType: 96}}, pts[len(pts)/2], errBadPacket},
		{"timestamp jump", &rtp.Packet{Header: rtp.Header{PayloadType: 96, Marker: true}, Payload: []byte{0x41, 1}}, pts[len(pts)/2] + 3600*25*60, errTimestamp},
		{"forbidden bit", &rtp.Packet{Header: rtp.Header{PayloadType: 96, Marker: true}, Payload: []byte{0xc1, 1}}, pts[len(pts)/2], errBadUnit},
		{"bad FU-A", &rtp.Packet{Header: rtp.Header{PayloadType: 96, Marker: true}, Payload: []byte{0x7c}}, pts[len(pts)/2], errBadPacket},
	}
	for _, c := range cases {
		_, err := s.packet(c.pkt, c.pts, now)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// The stream carries on after the faults.
	more, _ := feed(s, pkts[len(pkts)/2:], pts[len(pts)/2:], t0)
	if len(more) == 0 {
		t.Fatal("no units after the faults")
	}
}

func TestStreamTimelineLost(t *testing.T) {
	s := newTestStream(t)
	pkts, pts := packetize(t, [][][]byte{testAU(0, 25, 100), testAU(1, 25, 100), testAU(2, 25, 100)})
	t0 := time.Unix(1700000000, 0)
	if units, errs := feed(s, pkts, pts, t0); len(units) == 0 || len(errs) > 0 {
		t.Fatalf("setup: %d units, %v", len(units), errs)
	}
	// The camera's clock leaves ours and stays away: first refusals, then the session is given up.
	far := int64(3600 * 25 * 3600)
	var last error
	for i := 0; i < 100; i++ {
		now := t0.Add(time.Duration(i) * 200 * time.Millisecond)
		_, last = s.packet(&rtp.Packet{Header: rtp.Header{PayloadType: 96, Marker: true}, Payload: []byte{0x41, 1}}, far, now)
		if errors.Is(last, errTimeline) {
			return
		}
		if !errors.Is(last, errTimestamp) {
			t.Fatalf("packet %d: %v", i, last)
		}
	}
	t.Fatalf("never gave up the timeline: %v", last)
}

func TestStreamParameterChange(t *testing.T) {
	s := newTestStream(t)
	aus := [][][]byte{testAU(0, 25, 100), testAU(1, 25, 100)}
	sps2 := bytes.Clone(testSPS)
	sps2[len(sps2)-1] ^= 0x80 // a different (still parseable) trailing bit pattern
	aus = append(aus, [][]byte{sps2, testPPS, {0x65, 0x88, 1, 2, 3}}, testAU(3, 25, 100), testAU(4, 25, 100))
	pkts, pts := packetize(t, aus)
	units, errs := feed(s, pkts, pts, time.Unix(1700000000, 0))
	if len(errs) > 0 {
		t.Logf("errors: %v", errs)
	}
	if len(units) < 3 {
		t.Fatalf("got %d units", len(units))
	}
	if units[0].Params == units[2].Params {
		t.Fatal("new SPS did not make new parameters")
	}
	if !bytes.Equal(units[2].Params.SPS, sps2) {
		t.Fatal("new parameters do not hold the new SPS")
	}
}

// fuzzSeeds encodes packet sequences as the fuzzer's input: repeated [u16 size][packet][u32 pts step].
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	build := func(pkts []*rtp.Packet, steps []uint32) []byte {
		var b []byte
		for i, p := range pkts {
			raw, err := p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			b = binary.BigEndian.AppendUint16(b, uint16(len(raw)))
			b = append(b, raw...)
			b = binary.BigEndian.AppendUint32(b, steps[i])
		}
		return b
	}
	for _, size := range []int{10, 1500, 4000} {
		var aus [][][]byte
		for i := 0; i < 4; i++ {
			aus = append(aus, testAU(i, 2, size))
		}
		pkts, pts := packetize(t, aus)
		steps := make([]uint32, len(pts))
		for i := 1; i < len(pts); i++ {
			steps[i] = uint32(pts[i] - pts[i-1])
		}
		seeds = append(seeds, build(pkts, steps))
	}
	return seeds
}

func FuzzStream(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := newStream(CodecH264, 96, 1, nil, 1<<20, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Unix(1700000000, 0)
		var pts int64
		for len(data) >= 2 {
			n := int(binary.BigEndian.Uint16(data))
			data = data[2:]
			if n > len(data) {
				return
			}
			var p rtp.Packet
			raw := data[:n]
			data = data[n:]
			if len(data) >= 4 {
				pts += int64(binary.BigEndian.Uint32(data))
				data = data[4:]
			}
			if err := p.Unmarshal(raw); err != nil {
				continue
			}
			u, err := s.packet(&p, pts, t0.Add(time.Duration(pts)*time.Second/ClockRate))
			if err != nil || u == nil {
				continue
			}
			if u.Params == nil || !u.Params.complete() {
				t.Fatal("unit without complete parameter sets")
			}
			size := 0
			for _, n := range u.NALUs {
				size += len(n)
			}
			if size > 1<<20 {
				t.Fatalf("unit of %d bytes passed a 1 MiB bound", size)
			}
		}
	})
}

// TestFuzzCorpusCommitted checks that the seeds are in the committed corpus, so `go test` replays them and
// `make fuzz` starts from them. NVR_UPDATE_FUZZ_CORPUS=1 writes missing ones.
func TestFuzzCorpusCommitted(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzStream")
	for i, s := range fuzzSeeds(t) {
		path := filepath.Join(dir, fmt.Sprintf("seed-%d", i))
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		got, err := os.ReadFile(path)
		if err == nil && string(got) == want {
			continue
		}
		if os.Getenv("NVR_UPDATE_FUZZ_CORPUS") == "1" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("seed %s is missing or stale: run NVR_UPDATE_FUZZ_CORPUS=1 go test ./appliance/ingest -run TestFuzzCorpusCommitted", path)
	}
}

// TestParameterSetsAloneJoinTheNextPicture: a camera that sends SPS and PPS as an access unit of their own
// (its own marker) must not produce a unit without a picture; they join the next picture.
func TestParameterSetsAloneJoinTheNextPicture(t *testing.T) {
	s := newTestStream(t)
	aus := [][][]byte{{testSPS, testPPS}, {{0x65, 0x88, 1, 2}}, {{0x41, 0x9a, 3}}, {testSPS, testPPS}, {{0x65, 0x88, 4}}}
	pkts, pts := packetize(t, aus)
	units, errs := feed(s, pkts, pts, time.Unix(1700000000, 0))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(units) != 3 {
		t.Fatalf("%d units, want 3 pictures", len(units))
	}
	for i, u := range units {
		if !s.hasPicture(u.NALUs) {
			t.Errorf("unit %d has no picture", i)
		}
	}
	if len(units[0].NALUs) != 3 || !bytes.Equal(units[0].NALUs[0], testSPS) || !units[0].RandomAccess {
		t.Errorf("first unit should be SPS, PPS, IDR: %d NAL units", len(units[0].NALUs))
	}
	if len(units[2].NALUs) != 3 {
		t.Errorf("third unit should carry the parameter sets sent before it: %d NAL units", len(units[2].NALUs))
	}
}
