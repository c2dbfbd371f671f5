package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/gortsplib/v5/pkg/headers"
	"github.com/pion/rtp"

	nvr "github.com/edgenvr/nvr/appliance"
	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/bridge"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

// TestBridgeLiveAndReplay: camsim → the appliance (in process, swtpm) records → the bridge serves it.
// ffprobe reads the live stream and a recorded stream with a bridge credential (digest); an API token
// works as Basic over RTSPS only; without credentials the answer is 401; an account whose role lacks the
// camera is refused; a clock-range PLAY starts at the requested recorded time and is paced at real time;
// every DESCRIBE and PLAY is in the audit log. (Each phase has its own credential store, so both
// credentials are serial 1.)
func TestBridgeLiveAndReplay(t *testing.T) {
	if _, err := exec.LookPath("ffprobe"); err != nil {
		t.Fatal("ffprobe is missing: apt-get install ffmpeg (scripts/deps.sh installs it)")
	}
	cs := startCamsim(t, 2)
	data := filepath.Join(t.TempDir(), "data")
	dev := swtpmtest.Start(t)
	logBuf := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", tail(logBuf.String(), 6000))
		}
	})

	// Accounts and rights: an administrator who issues credentials, a VMS allowed cam1, another allowed cam2.
	az := newBridgeAuthz(t, log)
	admin := authz.Subject{User: "admin", Via: "session", Ref: "test"}
	for _, r := range []authz.Role{
		{Name: "admins", System: []authz.Action{authz.ManageUsers}},
		{Name: "vms-cam1", System: []authz.Action{authz.UseBridge}, Cameras: map[string][]authz.Action{"cam1": {authz.Live, authz.Playback}}},
		{Name: "vms-cam2", System: []authz.Action{authz.UseBridge}, Cameras: map[string][]authz.Action{"cam2": {authz.Live, authz.Playback}}},
	} {
		if err := az.PutRole(admin, r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate := func(nu authz.NewUser) {
		if err := az.CreateUser(admin, nu, "test"); err != nil {
			t.Fatalf("create %s: %v", nu.Name, err)
		}
	}
	mustCreate(authz.NewUser{Name: "admin", Password: "correct horse battery staple 9", Roles: []string{"admins"}})
	mustCreate(authz.NewUser{Name: "vms", Service: true, Roles: []string{"vms-cam1"}})
	mustCreate(authz.NewUser{Name: "other", Service: true, Roles: []string{"vms-cam2"}})
	token, err := az.IssueToken(admin, "vms", "bridge test", "test")
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := selfSignedTLS(t)

	// Phase 1: live, while the appliance records.
	app, err := nvr.New(nvr.Config{DataDir: data, TPM: dev, SegmentDuration: 3 * time.Second,
		Cameras: []nvr.Camera{
			{Name: "cam1", URL: "rtsp://" + cs.RTSP + "/cam1", Username: cameraUser, Password: cs.Password, Transport: "tcp"},
			{Name: "cam2", URL: "rtsp://" + cs.RTSP + "/cam2", Username: cameraUser, Password: cs.Password, Transport: "tcp"},
		}}, log.With("part", "appliance"))
	if err != nil {
		t.Fatal(err)
	}
	appCtx, stopApp := context.WithCancel(context.Background())
	appDone := make(chan error, 1)
	go func() { appDone <- app.Run(appCtx) }()
	appStopped := false
	stopAppliance := func() {
		if appStopped {
			return
		}
		appStopped = true
		stopApp()
		if err := <-appDone; err != nil {
			t.Errorf("appliance: %v", err)
		}
	}
	t.Cleanup(stopAppliance)
	waitFor(t, 60*time.Second, "cam1 and cam2 recording", func() bool {
		st := app.Status()
		return st["cam1"].Recording && st["cam2"].Recording
	})

	creds, err := bridge.OpenCredentials(t.TempDir(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	live := startBridge(t, bridge.Config{RTSPAddr: "127.0.0.1:0", RTSPSAddr: "127.0.0.1:0", TLS: tlsConf,
		Authz: az, Credentials: creds, Live: app.Live}, log)
	if _, err := live.b.IssueCredential(authz.Subject{User: "vms", Via: "token"}, "vms", "test"); !errors.Is(err, authz.ErrDenied) {
		t.Fatalf("a service account issued itself a credential: %v", err)
	}
	if _, err := live.b.IssueCredential(admin, "admin", "test"); err == nil {
		t.Fatal("a bridge credential was issued for an interactive account")
	}
	vmsCred, err := live.b.IssueCredential(admin, "vms", "test")
	if err != nil {
		t.Fatal(err)
	}
	otherCred, err := live.b.IssueCredential(admin, "other", "test")
	if err != nil {
		t.Fatal(err)
	}

	// ffprobe reads live video with the credential (digest over plain RTSP).
	p := ffprobeURL(t, rtspURL("rtsp", live.rtsp, "vms", vmsCred, "/cam1"), 25)
	if p.Codec != "h264" || p.Width == 0 || p.Frames < 10 {
		t.Fatalf("live: ffprobe saw %+v", p)
	}
	// ffprobe over RTSPS too.
	if p := ffprobeURL(t, rtspURL("rtsps", live.rtsps, "vms", vmsCred, "/cam1"), 10); p.Codec != "h264" || p.Frames < 5 {
		t.Fatalf("live over RTSPS: ffprobe saw %+v", p)
	}
	// The same with gortsplib over RTSPS.
	got := readRTP(t, "rtsps", live.rtsps, "vms", vmsCred, "/cam1", nil, 30)
	if got.packets < 30 {
		t.Fatalf("live over RTSPS: %d packets", got.packets)
	}
	// Without credentials: 401 with a digest challenge, and Basic is offered over RTSPS only.
	res := rawDescribe(t, live.rtsp, false, "/cam1", "")
	if res.StatusCode != base.StatusUnauthorized || !strings.Contains(strings.Join(res.Header["WWW-Authenticate"], ","), "Digest") {
		t.Fatalf("DESCRIBE without credentials: %d %v", res.StatusCode, res.Header["WWW-Authenticate"])
	}
	if strings.Contains(strings.Join(res.Header["WWW-Authenticate"], ","), "Basic") {
		t.Fatal("Basic offered over plain RTSP")
	}
	if out, err := exec.Command("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-i", "rtsp://"+live.rtsp+"/cam1").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "401") {
		t.Fatalf("ffprobe without credentials: err %v, output %s", err, out)
	}
	// An API token is accepted as Basic over RTSPS, and refused over plain RTSP.
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("vms:"+token))
	if res := rawDescribe(t, live.rtsps, true, "/cam1", basic); res.StatusCode != base.StatusOK || !strings.Contains(string(res.Body), "H264") {
		t.Fatalf("DESCRIBE over RTSPS with an API token: %d", res.StatusCode)
	}
	if res := rawDescribe(t, live.rtsp, false, "/cam1", basic); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("Basic over plain RTSP: %d, want 401", res.StatusCode)
	}
	// A role without the camera: refused.
	if res := digestDescribe(t, live.rtsp, "/cam1", "other", otherCred); res.StatusCode != base.StatusForbidden {
		t.Fatalf("DESCRIBE cam1 as other: %d, want 403", res.StatusCode)
	}
	if out, err := exec.Command("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-i",
		rtspURL("rtsp", live.rtsp, "other", otherCred, "/cam1")).CombinedOutput(); err == nil || !strings.Contains(string(out), "403") {
		t.Fatalf("ffprobe as other on cam1: err %v, output %s", err, out)
	}
	if strings.Contains(logBuf.String(), vmsCred) || strings.Contains(logBuf.String(), token) {
		t.Fatal("a secret is in the log")
	}

	// Let a few segments close, then stop recording.
	waitFor(t, 30*time.Second, "live sessions to end", func() bool { return live.b.Stats().Sessions == 0 })
	live.stop(t)
	waitFor(t, 30*time.Second, "three closed segments of cam1", func() bool { return app.Status()["cam1"].Segments >= 3 })
	stopAppliance()

	// Phase 2: replay through the appliance's own wiring (index, vault, TPM key cache).
	tp, err := tpm.Open(dev, log.With("part", "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	db, err := store.Open(filepath.Join(data, "index.db"), store.Options{Timeout: 5 * time.Second}, log.With("part", "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	segs, err := db.Segments("cam1", time.Unix(0, 0), time.Now().Add(time.Hour))
	if err != nil || len(segs) < 2 {
		t.Fatalf("cam1 has %d segments (%v)", len(segs), err)
	}
	recStart, recEnd := segs[0].Start, segs[len(segs)-1].End
	t.Logf("cam1 recorded %s to %s in %d segments", recStart.Format(time.RFC3339Nano), recEnd.Format(time.RFC3339Nano), len(segs))

	type ready struct {
		b           *bridge.Bridge
		rtsp, rtsps net.Addr
	}
	readyc := make(chan ready, 1)
	bctx, stopBridge := context.WithCancel(context.Background())
	bdone := make(chan error, 1)
	go func() {
		bdone <- app.RunBridge(bctx, nvr.BridgeConfig{RTSPListen: "127.0.0.1:0", RTSPSListen: "127.0.0.1:0",
			Ready: func(b *bridge.Bridge, rtsp, rtsps net.Addr) { readyc <- ready{b, rtsp, rtsps} }}, az, tlsConf, tp, db)
	}()
	t.Cleanup(func() {
		stopBridge()
		if err := <-bdone; err != nil {
			t.Errorf("RunBridge: %v", err)
		}
	})
	var rb ready
	select {
	case rb = <-readyc:
	case err := <-bdone:
		t.Fatalf("RunBridge: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("RunBridge did not start")
	}
	replayCred, err := rb.b.IssueCredential(admin, "vms", "test")
	if err != nil {
		t.Fatal(err)
	}
	otherCred, err = rb.b.IssueCredential(admin, "other", "test")
	if err != nil {
		t.Fatal(err)
	}

	// ffprobe reads a recorded stream from a start time given in the URL.
	from := recStart.Add(1500 * time.Millisecond)
	q := "?start=" + from.UTC().Format("20060102T150405Z")
	p = ffprobeURL(t, rtspURL("rtsp", rb.rtsp.String(), "vms", replayCred, "/cam1/replay"+q), 25)
	if p.Codec != "h264" || p.Frames < 10 {
		t.Fatalf("replay: ffprobe saw %+v", p)
	}
	// A clock range: the first frame is the key frame at or before the requested time (within a
	// fragment), and 3 s of recording take about 3 s to arrive.
	want := recStart.Add(2 * time.Second).Truncate(time.Second)
	rng := &headers.Range{Value: &headers.RangeUTC{Start: want}}
	began := time.Now()
	got = readRTP(t, "rtsp", rb.rtsp.String(), "vms", replayCred, "/cam1/replay", rng, 0, 3*time.Second)
	elapsed := time.Since(began)
	wantTS := uint32(want.Unix()*90000 + int64(want.Nanosecond())*90000/1e9)
	if d := int64(wantTS - got.firstTS); d < 0 || d > 2*90000 {
		t.Fatalf("replay started %d ticks before the requested time (first RTP timestamp %d, want ≤ %d within 2 s)", d, got.firstTS, wantTS)
	}
	if span := time.Duration(int64(got.lastTS-got.firstTS)) * time.Second / 90000; span < 2*time.Second || span > elapsed+time.Second {
		t.Fatalf("replay sent %v of recording in %v: not paced at real time", span, elapsed)
	}
	if !strings.HasPrefix(got.rangeHdr, "clock=") {
		t.Fatalf("PLAY answered Range %q", got.rangeHdr)
	}
	// Replay over RTSPS too, and refusals.
	if got := readRTP(t, "rtsps", rb.rtsps.String(), "vms", replayCred, "/cam1/replay", rng, 20); got.packets < 20 {
		t.Fatalf("replay over RTSPS: %d packets", got.packets)
	}
	if res := digestDescribe(t, rb.rtsp.String(), "/cam1/replay"+q, "other", otherCred); res.StatusCode != base.StatusForbidden {
		t.Fatalf("replay DESCRIBE cam1 as other: %d, want 403", res.StatusCode)
	}
	if res := rawDescribe(t, rb.rtsp.String(), false, "/cam1/replay"+q, ""); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("replay DESCRIBE without credentials: %d, want 401", res.StatusCode)
	}

	// The audit log holds every decision: allowed for vms, refused for other and for anonymous requests.
	entries, err := az.AuditEntries(authz.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range entries {
		if e.Kind == "decision" {
			count[e.Subject+" "+e.Action+" "+e.Object[:min(len(e.Object), len("camera/cam1"))]+" "+e.Result]++
		}
	}
	for _, k := range []string{
		"vms (token bridge-1) camera.live camera/cam1 allow",
		"other (token bridge-1) camera.live camera/cam1 deny",
		"anonymous camera.live camera/cam1 deny",
		"vms (token bridge-1) camera.playback camera/cam1 allow",
		"other (token bridge-1) camera.playback camera/cam1 deny",
		"anonymous camera.playback camera/cam1 deny",
	} {
		if count[k] == 0 {
			t.Errorf("no audit entry %q; have %v", k, count)
		}
	}
	for _, e := range entries {
		if strings.Contains(e.Reason+e.Object+e.Subject, replayCred) {
			t.Fatal("a credential is in the audit log")
		}
	}
}

func newBridgeAuthz(t testing.TB, log *slog.Logger) *authz.Service {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	az, err := authz.New(authz.Config{DataDir: t.TempDir(), Signer: key, Argon2: authz.Argon2Params{Time: 1, Memory: 256, Threads: 1}},
		log.With("part", "authz"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- az.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("authz run: %v", err)
		}
		if err := az.Close(); err != nil {
			t.Errorf("authz close: %v", err)
		}
	})
	return az
}

// runningBridge is a bridge started by a test.
type runningBridge struct {
	b           *bridge.Bridge
	rtsp, rtsps string
	cancel      func()
	done        chan error
	stopped     bool
}

func startBridge(t *testing.T, cfg bridge.Config, log *slog.Logger) *runningBridge {
	t.Helper()
	type addrs struct{ rtsp, rtsps net.Addr }
	readyc := make(chan addrs, 1)
	cfg.Ready = func(a, b net.Addr) { readyc <- addrs{a, b} }
	b, err := bridge.New(cfg, log.With("part", "bridge"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rb := &runningBridge{b: b, cancel: cancel, done: make(chan error, 1)}
	go func() { rb.done <- b.Run(ctx) }()
	select {
	case a := <-readyc:
		if a.rtsp != nil {
			rb.rtsp = a.rtsp.String()
		}
		if a.rtsps != nil {
			rb.rtsps = a.rtsps.String()
		}
	case err := <-rb.done:
		t.Fatalf("bridge: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("bridge did not start")
	}
	t.Cleanup(func() { rb.stop(t) })
	return rb
}

func (rb *runningBridge) stop(t *testing.T) {
	if rb.stopped {
		return
	}
	rb.stopped = true
	rb.cancel()
	if err := <-rb.done; err != nil {
		t.Errorf("bridge run: %v", err)
	}
}

func rtspURL(scheme, host, user, pass, path string) string {
	return scheme + "://" + url.UserPassword(user, pass).String() + "@" + host + path
}

// ffprobeURL reads frames of an RTSP stream with ffprobe (over TCP) and fails on any error it reports.
func ffprobeURL(t *testing.T, u string, frames int) probe {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "probe.json")
	cmd := exec.Command("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-timeout", "15000000",
		"-select_streams", "v:0", "-read_intervals", fmt.Sprintf("%%+#%d", frames),
		"-show_entries", "stream=codec_name,width,height:frame=pts_time", "-of", "json", "-o", out, u)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, redact(string(b), u))
	}
	j, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Width     int
			Height    int
		}
		Frames []struct{}
	}
	if err := jsonUnmarshal(j, &res); err != nil || len(res.Streams) != 1 {
		t.Fatalf("ffprobe output: %v\n%s", err, j)
	}
	return probe{Codec: res.Streams[0].CodecName, Width: res.Streams[0].Width, Height: res.Streams[0].Height, Frames: len(res.Frames)}
}

func redact(s, u string) string {
	if pu, err := url.Parse(u); err == nil && pu.User != nil {
		if pw, ok := pu.User.Password(); ok {
			s = strings.ReplaceAll(s, pw, "***")
		}
	}
	return s
}

// rtpResult is what readRTP received.
type rtpResult struct {
	packets         int
	firstTS, lastTS uint32
	rangeHdr        string
}

// readRTP plays a stream with gortsplib's client (over TCP) until it has n packets or, with n = 0, for d.
func readRTP(t *testing.T, scheme, host, user, pass, path string, rng *headers.Range, n int, d ...time.Duration) rtpResult {
	t.Helper()
	c := &gortsplib.Client{Scheme: scheme, Host: host, Protocol: ptr(gortsplib.ProtocolTCP),
		TLSConfig: &tls.Config{InsecureSkipVerify: true}} // the appliance's own certificate
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u, err := base.ParseURL(rtspURL(scheme, host, user, pass, path))
	if err != nil {
		t.Fatal(err)
	}
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("describe %s: %v", path, err)
	}
	var medi *description.Media
	var h264 *format.H264
	if medi = desc.FindFormat(&h264); medi == nil {
		t.Fatal("no H.264 track")
	}
	if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		t.Fatalf("setup: %v", err)
	}
	var mu sync.Mutex
	var res rtpResult
	var count atomic.Int64
	c.OnPacketRTP(medi, h264, func(p *rtp.Packet) {
		mu.Lock()
		if res.packets == 0 {
			res.firstTS = p.Timestamp
		}
		res.packets++
		res.lastTS = p.Timestamp
		mu.Unlock()
		count.Add(1)
	})
	resp, err := c.Play(rng)
	if err != nil {
		t.Fatalf("play: %v", err)
	}
	if n > 0 {
		waitFor(t, 20*time.Second, fmt.Sprintf("%d RTP packets", n), func() bool { return count.Load() >= int64(n) })
	} else {
		deadline := time.Now().Add(d[0])
		waitFor(t, d[0]+10*time.Second, "the replay window", func() bool { return time.Now().After(deadline) })
	}
	mu.Lock()
	defer mu.Unlock()
	res.rangeHdr = strings.Join(resp.Header["Range"], ",")
	return res
}

func ptr[T any](v T) *T { return &v }

// rawDescribe sends one DESCRIBE with an optional Authorization header and returns the answer.
func rawDescribe(t *testing.T, host string, secure bool, path, authorization string) *base.Response {
	t.Helper()
	var conn net.Conn
	var err error
	if secure {
		conn, err = tls.Dial("tcp", host, &tls.Config{InsecureSkipVerify: true}) // the appliance's own certificate
	} else {
		conn, err = net.Dial("tcp", host)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return rtspExchange(t, conn, host, secure, path, authorization)
}

func rtspExchange(t *testing.T, conn net.Conn, host string, secure bool, path, authorization string) *base.Response {
	t.Helper()
	scheme := "rtsp"
	if secure {
		scheme = "rtsps"
	}
	u, err := base.ParseURL(scheme + "://" + host + path)
	if err != nil {
		t.Fatal(err)
	}
	req := base.Request{Method: base.Describe, URL: u, Header: base.Header{"CSeq": base.HeaderValue{"1"}, "Accept": base.HeaderValue{"application/sdp"}}}
	if authorization != "" {
		req.Header["Authorization"] = base.HeaderValue{authorization}
	}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	var res base.Response
	if err := res.Unmarshal(bufio.NewReader(conn)); err != nil {
		t.Fatalf("read response: %v", err)
	}
	return &res
}

// digestDescribe answers the bridge's digest challenge for a DESCRIBE of path.
func digestDescribe(t *testing.T, host, path, user, pass string) *base.Response {
	t.Helper()
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res := rtspExchange(t, conn, host, false, path, "")
	if res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("first DESCRIBE: %d, want a challenge", res.StatusCode)
	}
	var ch headers.Authenticate
	for _, v := range res.Header["WWW-Authenticate"] {
		if strings.HasPrefix(v, "Digest") {
			if err := ch.Unmarshal(base.HeaderValue{v}); err != nil {
				t.Fatal(err)
			}
		}
	}
	uri := "rtsp://" + host + path
	ha1 := md5hex(user + ":" + ch.Realm + ":" + pass)
	resp := md5hex(ha1 + ":" + ch.Nonce + ":" + md5hex("DESCRIBE:"+uri))
	auth := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s"`, user, ch.Realm, ch.Nonce, uri, resp)
	return rtspExchange(t, conn, host, false, path, auth)
}

// selfSignedTLS is a TLS configuration with a fresh P-256 certificate for 127.0.0.1.
func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nvr bridge test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// BenchmarkBridgeReplayStart measures playback start latency through the real path: a recording made by
// the appliance from camsim (2 s segments), replayed by the bridge through the index, the vault and swtpm
// (with the bridge's key cache): from DESCRIBE to the first RTP packet of a clock-range PLAY at a random
// recorded second. first-ms is the very first start (the TPM unwraps the segment key).
func BenchmarkBridgeReplayStart(b *testing.B) {
	cs := startCamsim(b, 1)
	data := filepath.Join(b.TempDir(), "data")
	dev := swtpmtest.Start(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	app, err := nvr.New(nvr.Config{DataDir: data, TPM: dev, SegmentDuration: 2 * time.Second,
		Cameras: []nvr.Camera{{Name: "cam1", URL: "rtsp://" + cs.RTSP + "/cam1", Username: cameraUser, Password: cs.Password, Transport: "tcp"}}}, log)
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	waitFor(b, 60*time.Second, "5 closed segments", func() bool { return app.Status()["cam1"].Segments >= 5 })
	stop()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	tp, err := tpm.Open(dev, log)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	db, err := store.Open(filepath.Join(data, "index.db"), store.Options{Timeout: 5 * time.Second}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	segs, err := db.Segments("cam1", time.Unix(0, 0), time.Now().Add(time.Hour))
	if err != nil || len(segs) < 5 {
		b.Fatalf("%d segments, %v", len(segs), err)
	}
	az := newBridgeAuthz(b, log)
	admin := authz.Subject{User: "admin", Via: "session"}
	_ = az.PutRole(admin, authz.Role{Name: "admins", System: []authz.Action{authz.ManageUsers}}, "bench")
	_ = az.PutRole(admin, authz.Role{Name: "vms", System: []authz.Action{authz.UseBridge}, Cameras: map[string][]authz.Action{"cam1": {authz.Playback}}}, "bench")
	_ = az.CreateUser(admin, authz.NewUser{Name: "admin", Password: "correct horse battery staple 9", Roles: []string{"admins"}}, "bench")
	_ = az.CreateUser(admin, authz.NewUser{Name: "vms", Service: true, Roles: []string{"vms"}}, "bench")
	readyc := make(chan *bridge.Bridge, 1)
	var addr string
	bctx, bstop := context.WithCancel(context.Background())
	bdone := make(chan error, 1)
	go func() {
		bdone <- app.RunBridge(bctx, nvr.BridgeConfig{RTSPListen: "127.0.0.1:0", Ready: func(br *bridge.Bridge, rtsp, _ net.Addr) {
			addr = rtsp.String()
			readyc <- br
		}}, az, nil, tp, db)
	}()
	defer func() {
		bstop()
		<-bdone
	}()
	br := <-readyc
	cred, err := br.IssueCredential(admin, "vms", "bench")
	if err != nil {
		b.Fatal(err)
	}
	first, last := segs[0].Start, segs[len(segs)-1].End.Add(-time.Second)
	span := int64(last.Sub(first) / time.Second)
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		at := first.Add(time.Duration(int64(i)*7919%span)*time.Second + 200*time.Millisecond)
		t0 := time.Now()
		c := &gortsplib.Client{Scheme: "rtsp", Host: addr, Protocol: ptr(gortsplib.ProtocolTCP)}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		u, _ := base.ParseURL(rtspURL("rtsp", addr, "vms", cred, "/cam1/replay"))
		desc, _, err := c.Describe(u)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Setup(desc.BaseURL, desc.Medias[0], 0, 0); err != nil {
			b.Fatal(err)
		}
		got := make(chan struct{})
		var once sync.Once
		c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) { once.Do(func() { close(got) }) })
		if _, err := c.Play(&headers.Range{Value: &headers.RangeUTC{Start: at}}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			b.Fatal("no packet")
		}
		lat = append(lat, time.Since(t0))
		c.Close()
	}
	b.StopTimer()
	firstStart := lat[0]
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(firstStart.Microseconds())/1000, "first-ms")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
