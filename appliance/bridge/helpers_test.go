package bridge

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/record"
)

// A valid H.264 SPS (240p Baseline) and PPS: the payloads need not decode, the parameter sets are
// parsed by the fMP4 muxer.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0xf0, 0x11, 0x7e, 0xf0, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x30, 0x8f, 0x18, 0x32, 0x48}
	testPPS = []byte{0x68, 0xcb, 0x8c, 0xb2}
)

const fps = 25

// testInit is an fMP4 init segment with one H.264 track at 90 kHz, as the recorder writes it.
func testInit(t testing.TB) []byte {
	t.Helper()
	in := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: record.TimeScale, Codec: &fmp4.CodecH264{SPS: testSPS, PPS: testPPS}}}}
	var b seekablebuffer.Buffer
	if err := in.Marshal(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// testFragment is one recorded fragment of n frames at 25 fps starting at start (a key frame first), each
// frame of size bytes.
func testFragment(t testing.TB, start time.Time, n, size int) []byte {
	t.Helper()
	var samples []*fmp4.Sample
	for i := range n {
		nalu := bytes.Repeat([]byte{0x41, byte(i)}, size/2)
		if i == 0 {
			nalu[0] = 0x65
		}
		s, err := fmp4.NewSampleH264(0, [][]byte{nalu})
		if err != nil {
			t.Fatal(err)
		}
		s.Duration = record.TimeScale / fps
		s.IsNonSyncSample = i != 0
		samples = append(samples, s)
	}
	p := fmp4.Part{Tracks: []*fmp4.PartTrack{{ID: 1, BaseTime: uint64(ticksOf(start)), Samples: samples}}}
	var b seekablebuffer.Buffer
	if err := p.Marshal(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// memRecordings is a recording held in memory: segments of one-second fragments. It stands in for the
// index and the vault in unit tests; the e2e test reads the real ones.
type memRecordings struct {
	mu   sync.Mutex
	segs map[string][]memSegment
	open int // Chunks calls
}

type memSegment struct {
	Segment
	chunks [][]byte
}

// addSegments records secs seconds of camera from start, in segments of segSecs.
func (m *memRecordings) addSegments(t testing.TB, camera string, start time.Time, secs, segSecs int) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.segs == nil {
		m.segs = map[string][]memSegment{}
	}
	init := testInit(t)
	for s := 0; s < secs; s += segSecs {
		seg := memSegment{chunks: [][]byte{init}}
		seg.Start = start.Add(time.Duration(s) * time.Second)
		if _, err := rand.Read(seg.ID[:]); err != nil {
			t.Fatal(err)
		}
		for f := s; f < min(s+segSecs, secs); f++ {
			seg.chunks = append(seg.chunks, testFragment(t, start.Add(time.Duration(f)*time.Second), fps, 600))
			seg.End = start.Add(time.Duration(f+1) * time.Second)
		}
		m.segs[camera] = append(m.segs[camera], seg)
	}
}

func (m *memRecordings) Segments(camera string, from, to time.Time) ([]Segment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Segment
	for _, s := range m.segs[camera] {
		if s.End.After(from) && s.Start.Before(to) {
			out = append(out, s.Segment)
		}
	}
	return out, nil
}

func (m *memRecordings) Chunks(camera string, id [16]byte) (ChunkReader, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open++
	for _, s := range m.segs[camera] {
		if s.ID == id {
			return &memChunks{chunks: s.chunks}, nil
		}
	}
	return nil, errors.New("no such segment")
}

type memChunks struct {
	chunks [][]byte
	i      int
}

func (c *memChunks) Next() ([]byte, error) {
	if c.i >= len(c.chunks) {
		return nil, io.EOF
	}
	c.i++
	return c.chunks[c.i-1], nil
}

func (c *memChunks) Close() error { return nil }

// liveFeed is a LiveSource whose fragments a test writes: it stands in for the recorder's fan-out, which
// the e2e test uses for real.
type liveFeed struct {
	mu   sync.Mutex
	init []byte
	subs map[chan record.LiveFragment]struct{}
}

func (l *liveFeed) source(camera string) (<-chan record.LiveFragment, func(), error) {
	if !strings.HasPrefix(camera, "cam") {
		return nil, nil, errors.New("no such camera")
	}
	ch := make(chan record.LiveFragment, 8)
	l.mu.Lock()
	if l.subs == nil {
		l.subs = map[chan record.LiveFragment]struct{}{}
	}
	l.subs[ch] = struct{}{}
	if l.init != nil {
		ch <- record.LiveFragment{Init: l.init}
	}
	l.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs, ch)
			l.mu.Unlock()
			close(ch)
		})
	}, nil
}

// publish sends a fragment to every subscriber, dropping it for a full one (as the recorder does).
func (l *liveFeed) publish(f record.LiveFragment) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f.Init != nil {
		l.init = f.Init
	}
	for ch := range l.subs {
		select {
		case ch <- f:
		default:
		}
	}
}

// run publishes one fragment a second (scaled by speed) until ctx ends.
func (l *liveFeed) run(ctx context.Context, t testing.TB, speed time.Duration, size int) {
	init := testInit(t)
	l.publish(record.LiveFragment{Init: init})
	tick := time.NewTicker(speed)
	defer tick.Stop()
	at := time.Now().Truncate(time.Second)
	for {
		b := testFragment(t, at, fps, size)
		l.publish(record.LiveFragment{Data: b, Start: ticksOf(at), End: ticksOf(at.Add(time.Second)), Key: true})
		at = at.Add(time.Second)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

var testArgon2 = authz.Argon2Params{Time: 1, Memory: 256, Threads: 1}

// testEnv is a bridge with real authz (roles: vms may see cam1 live and replay, other only cam2) and
// in-memory media.
type testEnv struct {
	b           *Bridge
	az          *authz.Service
	rec         *memRecordings
	live        *liveFeed
	rtsp, rtsps string
	vmsCred     string
	otherCred   string
	benchCred   string
	token       string
	logs        *lockedBuffer
}

var testAdmin = authz.Subject{User: "admin", Via: "session", Ref: "test"}

func newEnv(t testing.TB, mod func(*Config)) *testEnv {
	t.Helper()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	az, err := authz.New(authz.Config{DataDir: t.TempDir(), Signer: key, Argon2: testArgon2}, log.With("part", "authz"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := az.Close(); err != nil {
			t.Errorf("authz close: %v", err)
		}
	})
	for _, r := range []authz.Role{
		{Name: "admins", System: []authz.Action{authz.ManageUsers}},
		{Name: "vms-cam1", System: []authz.Action{authz.UseBridge}, Cameras: map[string][]authz.Action{"cam1": {authz.Live, authz.Playback}}},
		{Name: "bench", System: []authz.Action{authz.UseBridge}, Cameras: map[string][]authz.Action{authz.AllCameras: {authz.Live, authz.Playback}}},
		{Name: "vms-cam2", System: []authz.Action{authz.UseBridge}, Cameras: map[string][]authz.Action{"cam2": {authz.Live, authz.Playback}}, MaxRecordingAge: time.Hour},
	} {
		if err := az.PutRole(testAdmin, r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, nu := range []authz.NewUser{
		{Name: "admin", Password: "correct horse battery staple 9", Roles: []string{"admins"}},
		{Name: "vms", Service: true, Roles: []string{"vms-cam1"}},
		{Name: "other", Service: true, Roles: []string{"vms-cam2"}},
		{Name: "bench", Service: true, Roles: []string{"bench"}},
	} {
		if err := az.CreateUser(testAdmin, nu, "test"); err != nil {
			t.Fatal(err)
		}
	}
	token, err := az.IssueToken(testAdmin, "vms", "test", "test")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := OpenCredentials(t.TempDir(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{az: az, rec: &memRecordings{}, live: &liveFeed{}, logs: logs, token: token}
	cfg := Config{RTSPAddr: "127.0.0.1:0", RTSPSAddr: "127.0.0.1:0", TLS: testTLS(t), Authz: az, Credentials: creds,
		Live: e.live.source, Recordings: e.rec, LiveWait: 3 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	type addrs struct{ a, b net.Addr }
	ready := make(chan addrs, 1)
	cfg.Ready = func(a, b net.Addr) { ready <- addrs{a, b} }
	e.b, err = New(cfg, log.With("part", "bridge"))
	if err != nil {
		t.Fatal(err)
	}
	if e.vmsCred, err = e.b.IssueCredential(testAdmin, "vms", "test"); err != nil {
		t.Fatal(err)
	}
	if e.otherCred, err = e.b.IssueCredential(testAdmin, "other", "test"); err != nil {
		t.Fatal(err)
	}
	if e.benchCred, err = e.b.IssueCredential(testAdmin, "bench", "test"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bridge run: %v", err)
		}
	})
	select {
	case a := <-ready:
		if a.a != nil {
			e.rtsp = a.a.String()
		}
		if a.b != nil {
			e.rtsps = a.b.String()
		}
	case err := <-done:
		t.Fatalf("bridge: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("bridge did not start")
	}
	return e
}

func testTLS(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bridge test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
