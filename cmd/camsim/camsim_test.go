package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/gortsplib/v5/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v5/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
)

const (
	testUser     = "viewer"
	testPassword = "s3cret-pass"
)

var clipsOnce struct {
	sync.Once
	dir string
	err error
}

// clipDir runs scripts/clips.sh once per test binary into build/clips at the
// repository root and returns that directory.
func clipDir(t *testing.T) string {
	t.Helper()
	clipsOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			clipsOnce.err = err
			return
		}
		clipsOnce.dir = filepath.Join(root, "build", "clips")
		out, err := exec.Command(filepath.Join(root, "scripts", "clips.sh"), clipsOnce.dir).CombinedOutput()
		if err != nil {
			clipsOnce.err = fmt.Errorf("scripts/clips.sh: %w\n%s", err, out)
		}
	})
	if clipsOnce.err != nil {
		t.Fatal(clipsOnce.err)
	}
	return clipsOnce.dir
}

// testSim is a camsim running in-process.
type testSim struct {
	Addrs
	cert string // PEM file of the generated RTSPS certificate
}

func (s testSim) url(scheme, host, user, pass, cam string) string {
	return fmt.Sprintf("%s://%s:%s@%s/%s", scheme, user, pass, host, cam)
}

func (s testSim) rtspURL(cam string) string {
	return s.url("rtsp", s.RTSP, testUser, testPassword, cam)
}

// startSim runs camsim with auth, kernel-chosen ports and RTSPS, plus extra
// flags, and waits for its ready file. The simulator is stopped in cleanup.
func startSim(t *testing.T, extra ...string) testSim {
	t.Helper()
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := testSim{cert: filepath.Join(dir, "cert.pem")}
	ready := filepath.Join(dir, "ready.json")
	args := append([]string{
		"-rtsp", "127.0.0.1:0", "-rtsps", "127.0.0.1:0", "-cert-out", ts.cert,
		"-control", "127.0.0.1:0", "-clips", clipDir(t),
		"-user", testUser, "-password-file", pwFile, "-ready-file", ready,
	}, extra...)

	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("camsim: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("camsim did not stop within 10 s")
		}
		if t.Failed() {
			t.Logf("camsim log:\n%s", logs.String())
		}
	})

	waitFor(t, 15*time.Second, "ready file", func() bool {
		select {
		case err := <-done:
			t.Fatalf("camsim exited early: %v\n%s", err, logs.String())
		default:
		}
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &ts.Addrs) == nil
	})
	return ts
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond every 20 ms until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reader is a gortsplib client reading one camera and decoding H.264.
type reader struct {
	client *gortsplib.Client
	mu     sync.Mutex
	seen   readerStats
}

// readerStats is what a reader has seen so far.
type readerStats struct {
	packets      int
	arrivals     []time.Time
	aus          int
	sizes        map[string]int // "WxH" of every SPS seen, in-band or in the SDP
	decodeErrors int
	unknownPT    int // packets with the payload type not in the SDP
	lost         uint64
}

func (r *reader) snapshot() readerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := r.seen
	cp.sizes = maps.Clone(r.seen.sizes)
	cp.arrivals = slices.Clone(r.seen.arrivals)
	return cp
}

func (r *reader) noteSPS(sps []byte) {
	var s h264.SPS
	if s.Unmarshal(sps) == nil {
		r.seen.sizes[fmt.Sprintf("%dx%d", s.Width(), s.Height())]++
	}
}

// play opens rawURL with the given transport and TLS configuration.
func play(t *testing.T, rawURL string, proto gortsplib.Protocol, tc *tls.Config) *reader {
	t.Helper()
	u, err := base.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	r := &reader{seen: readerStats{sizes: make(map[string]int)}}
	r.client = &gortsplib.Client{
		Scheme:    u.Scheme,
		Host:      u.Host,
		Protocol:  &proto,
		TLSConfig: tc,
		OnDecodeError: func(err error) {
			r.mu.Lock()
			r.seen.decodeErrors++
			var pt liberrors.ErrClientRTPPacketUnknownPayloadType
			if errors.As(err, &pt) && pt.PayloadType == wrongPT {
				r.seen.unknownPT++
			}
			r.mu.Unlock()
		},
		OnPacketsLost: func(n uint64) {
			r.mu.Lock()
			r.seen.lost += n
			r.mu.Unlock()
		},
	}
	if err := r.client.Start(); err != nil {
		t.Fatalf("client start: %v", err)
	}
	t.Cleanup(r.client.Close)

	desc, _, err := r.client.Describe(u)
	if err != nil {
		t.Fatalf("describe %s: %v", u.Path, err)
	}
	var forma *format.H264
	medi := desc.FindFormat(&forma)
	if medi == nil {
		t.Fatal("no H.264 media in SDP")
	}
	r.noteSPS(forma.SPS)
	dec, err := forma.CreateDecoder()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		t.Fatalf("setup: %v", err)
	}
	r.client.OnPacketRTP(medi, forma, func(pkt *rtp.Packet) {
		au, err := dec.Decode(pkt)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seen.packets++
		r.seen.arrivals = append(r.seen.arrivals, time.Now())
		if err != nil {
			if !errors.Is(err, rtph264.ErrMorePacketsNeeded) &&
				!errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) {
				r.seen.decodeErrors++
			}
			return
		}
		r.seen.aus++
		for _, n := range au {
			if len(n) > 0 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
				r.noteSPS(n)
			}
		}
	})
	if _, err := r.client.Play(nil); err != nil {
		t.Fatalf("play: %v", err)
	}
	return r
}

func (r *reader) waitAUs(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d access units", n), func() bool { return r.snapshot().aus >= n })
}

func fault(t *testing.T, ts testSim, query string) {
	t.Helper()
	res, err := http.Post("http://"+ts.Control+"/fault?"+query, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST /fault?%s: %s: %s", query, res.Status, body)
	}
}

func stats(t *testing.T, ts testSim) map[string]camStats {
	t.Helper()
	res, err := http.Get("http://" + ts.Control + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]camStats
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("decode /stats: %v", err)
	}
	return out
}

// ffprobe runs ffprobe on rawURL and returns its combined output.
func ffprobe(t *testing.T, rawURL string, extra ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"-v", "error", "-show_entries", "stream=codec_name,width,height,nb_read_frames",
		"-of", "default=noprint_wrappers=1"}, extra...)
	args = append(args, rawURL)
	out, err := exec.CommandContext(ctx, "ffprobe", args...).CombinedOutput()
	return string(out), err
}

func TestStartRefusals(t *testing.T) {
	dir := t.TempDir()
	clips := clipDir(t)
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"-rtsp", "127.0.0.1:0", "-clips", clips}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no auth flags", nil, "refusing to start without authentication"},
		{"missing password file", []string{"-user", "u", "-password-file", filepath.Join(dir, "nope")}, "read -password-file"},
		{"user without password file", []string{"-user", "u"}, "-user needs -password-file"},
		{"password file without user", []string{"-password-file", pw}, "-password-file needs -user"},
		{"no-auth with user", []string{"-no-auth", "-user", "u"}, "conflicts"},
		{"control not loopback", []string{"-no-auth", "-control", "0.0.0.0:0"}, "loopback"},
		{"missing clips", []string{"-no-auth", "-clips", dir}, "scripts/clips.sh"},
		{"bad codec", []string{"-no-auth", "-codec", "mjpeg"}, "codec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, append(append([]string{}, base...), tt.args...), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestGortsplibClient(t *testing.T) {
	ts := startSim(t, "-cameras", "2")
	for _, tc := range []struct {
		name  string
		proto gortsplib.Protocol
	}{
		{"tcp", gortsplib.ProtocolTCP},
		{"udp", gortsplib.ProtocolUDP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := play(t, ts.rtspURL("cam1"), tc.proto, nil)
			r.waitAUs(t, 30)
			s := r.snapshot()
			if s.sizes["1920x1080"] == 0 {
				t.Errorf("no 1920x1080 SPS seen: %v", s.sizes)
			}
			if s.decodeErrors != 0 || s.lost != 0 {
				t.Errorf("decode errors %d, lost %d; want none", s.decodeErrors, s.lost)
			}
			if got := stats(t, ts)["cam1"].Sessions; got != 1 {
				t.Errorf("cam1 sessions = %d, want 1", got)
			}
		})
	}
	st := stats(t, ts)
	if st["cam2"].Frames == 0 || st["cam2"].Sessions != 0 {
		t.Errorf("cam2 stats = %+v, want frames > 0 and no sessions", st["cam2"])
	}
}

func TestWrongPasswordRefused(t *testing.T) {
	ts := startSim(t)
	out, err := ffprobe(t, ts.url("rtsp", ts.RTSP, testUser, "wrong", "cam1"), "-rtsp_transport", "tcp")
	if err == nil || !strings.Contains(out, "401") {
		t.Fatalf("ffprobe with a wrong password: err %v, output %q; want a 401", err, out)
	}
	u, _ := base.ParseURL(ts.url("rtsp", ts.RTSP, testUser, "wrong", "cam1"))
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.Describe(u); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("describe with a wrong password: %v, want 401", err)
	}
}

func TestFFprobe(t *testing.T) {
	ts := startSim(t)
	for _, tc := range []struct {
		name string
		url  string
		args []string
	}{
		{"rtsp-tcp", ts.rtspURL("cam1"), []string{"-rtsp_transport", "tcp"}},
		{"rtsp-udp", ts.rtspURL("cam1"), []string{"-rtsp_transport", "udp"}},
		{"rtsps", ts.url("rtsps", ts.RTSPS, testUser, testPassword, "cam1"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-count_frames", "-read_intervals", "%+2"}, tc.args...)
			out, err := ffprobe(t, tc.url, args...)
			if err != nil {
				t.Fatalf("ffprobe: %v\n%s", err, out)
			}
			for _, want := range []string{"codec_name=h264", "width=1920", "height=1080"} {
				if !strings.Contains(out, want) {
					t.Errorf("ffprobe output lacks %q:\n%s", want, out)
				}
			}
			if n := ffprobeFrames(out); n < 10 {
				t.Errorf("ffprobe read %d frames in 2 s, want at least 10:\n%s", n, out)
			}
		})
	}
}

func ffprobeFrames(out string) int {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "nb_read_frames="); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

func TestH265(t *testing.T) {
	ts := startSim(t, "-codec", "h265")
	out, err := ffprobe(t, ts.rtspURL("cam1"), "-rtsp_transport", "tcp")
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	if !strings.Contains(out, "codec_name=hevc") || !strings.Contains(out, "width=1920") {
		t.Fatalf("ffprobe output: %s, want hevc 1920 wide", out)
	}
}

func TestRTSPSPinnedCert(t *testing.T) {
	ts := startSim(t)
	pemBytes, err := os.ReadFile(ts.cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in -cert-out file")
	}
	r := play(t, ts.url("rtsps", ts.RTSPS, testUser, testPassword, "cam1"), gortsplib.ProtocolTCP,
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	r.waitAUs(t, 25)

	// A client that pins a different root refuses the server.
	u, _ := base.ParseURL(ts.url("rtsps", ts.RTSPS, testUser, testPassword, "cam1"))
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.Describe(u); err == nil {
		t.Fatal("describe with an unpinned certificate succeeded")
	}
}

func TestFaultDrop(t *testing.T) {
	ts := startSim(t)
	r := play(t, ts.rtspURL("cam1"), gortsplib.ProtocolTCP, nil)
	r.waitAUs(t, 5)
	waited := make(chan error, 1)
	go func() { waited <- r.client.Wait() }()
	fault(t, ts, "cam=cam1&kind=drop")
	select {
	case err := <-waited:
		t.Logf("client session ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("client session still running 10 s after drop")
	}
	waitFor(t, 5*time.Second, "sessions to reach 0", func() bool { return stats(t, ts)["cam1"].Sessions == 0 })
	// The camera accepts new sessions afterwards.
	r2 := play(t, ts.rtspURL("cam1"), gortsplib.ProtocolTCP, nil)
	r2.waitAUs(t, 5)
}

func TestFaultStall(t *testing.T) {
	ts := startSim(t)
	r := play(t, ts.rtspURL("cam1"), gortsplib.ProtocolTCP, nil)
	r.waitAUs(t, 5)
	framesBefore := stats(t, ts)["cam1"].Frames
	start := time.Now()
	fault(t, ts, "cam=cam1&kind=stall&for=2s")

	// Wait until packets flow again after the stall, then look for the gap.
	waitFor(t, 10*time.Second, "packets after the stall", func() bool {
		a := r.snapshot().arrivals
		return len(a) > 0 && a[len(a)-1].Sub(start) > 2500*time.Millisecond
	})
	var gap time.Duration
	prev := start
	for _, at := range r.snapshot().arrivals {
		if at.Before(start) {
			continue
		}
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	if gap < 1500*time.Millisecond {
		t.Errorf("largest gap between packets after the stall = %v, want about 2 s", gap)
	}
	if stats(t, ts)["cam1"].Sessions != 1 {
		t.Errorf("stall ended the session")
	}
	if got := stats(t, ts)["cam1"].Frames - framesBefore; got > 40 {
		t.Errorf("%d frames counted over a 2 s stall plus 0.5 s, want fewer", got)
	}
}

func TestFaultResolution(t *testing.T) {
	ts := startSim(t)
	r := play(t, ts.rtspURL("cam1"), gortsplib.ProtocolTCP, nil)
	r.waitAUs(t, 5)
	fault(t, ts, "cam=cam1&kind=resolution")
	waitFor(t, 5*time.Second, "an in-band 1280x720 SPS", func() bool { return r.snapshot().sizes["1280x720"] > 0 })

	// A new client gets the new size in the SDP and the stream.
	out, err := ffprobe(t, ts.rtspURL("cam1"), "-rtsp_transport", "tcp")
	if err != nil || !strings.Contains(out, "width=1280") || !strings.Contains(out, "height=720") {
		t.Fatalf("ffprobe after the switch: %v\n%s", err, out)
	}

	// Switching again returns to 1080p.
	before := r.snapshot().sizes["1920x1080"]
	fault(t, ts, "cam=cam1&kind=resolution")
	waitFor(t, 5*time.Second, "a 1920x1080 SPS again", func() bool { return r.snapshot().sizes["1920x1080"] > before })
}

func TestFaultMalformed(t *testing.T) {
	ts := startSim(t)
	for _, tc := range []struct {
		name  string
		proto gortsplib.Protocol
	}{
		{"tcp", gortsplib.ProtocolTCP},
		{"udp", gortsplib.ProtocolUDP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := play(t, ts.rtspURL("cam1"), tc.proto, nil)
			r.waitAUs(t, 5)
			before := r.snapshot()
			fault(t, ts, "cam=cam1&kind=malformed&count=50")
			waitFor(t, 10*time.Second, "decode errors, sequence gaps and a foreign payload type", func() bool {
				s := r.snapshot()
				return s.decodeErrors > before.decodeErrors && s.lost > before.lost && s.unknownPT > 0
			})
			// The stream recovers: whole frames keep arriving and other clients work.
			mid := r.snapshot().aus
			r.waitAUs(t, mid+50)
			out, err := ffprobe(t, ts.rtspURL("cam1"), "-rtsp_transport", "tcp")
			if err != nil || !strings.Contains(out, "codec_name=h264") {
				t.Fatalf("ffprobe after malformed packets: %v\n%s", err, out)
			}
			s := r.snapshot()
			t.Logf("packets %d, decode errors %d (foreign payload type %d), lost %d",
				s.packets, s.decodeErrors, s.unknownPT, s.lost)
		})
	}
}

func TestFaultErrors(t *testing.T) {
	ts := startSim(t)
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"cam=cam9&kind=drop", http.StatusNotFound},
		{"cam=cam1&kind=melt", http.StatusBadRequest},
		{"cam=cam1&kind=stall&for=soon", http.StatusBadRequest},
		{"cam=cam1&kind=malformed&count=-1", http.StatusBadRequest},
	} {
		res, err := http.Post("http://"+ts.Control+"/fault?"+tc.query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("POST /fault?%s = %d, want %d", tc.query, res.StatusCode, tc.want)
		}
	}
}
