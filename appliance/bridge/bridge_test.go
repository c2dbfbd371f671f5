package bridge

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/gortsplib/v5/pkg/headers"
	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/pion/rtp"
)

// rtspConn is a hand-driven RTSP client connection, for requests a well-behaved client would not send.
type rtspConn struct {
	t      testing.TB
	c      net.Conn
	r      *bufio.Reader
	host   string
	scheme string
	cseq   int
}

func dialRTSP(t testing.TB, host string, secure bool, local string) *rtspConn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	var c net.Conn
	var err error
	scheme := "rtsp"
	if secure {
		scheme = "rtsps"
		c, err = tls.DialWithDialer(d, "tcp", host, &tls.Config{InsecureSkipVerify: true}) // test certificate
	} else {
		c, err = d.Dial("tcp", host)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rtspConn{t: t, c: c, r: bufio.NewReader(c), host: host, scheme: scheme}
}

func (rc *rtspConn) url(path string) string { return rc.scheme + "://" + rc.host + path }

// do sends a request and reads the answer; ok is false if the connection ended instead.
func (rc *rtspConn) do(method base.Method, path string, h base.Header) (*base.Response, bool) {
	rc.t.Helper()
	u, err := base.ParseURL(rc.url(path))
	if err != nil {
		rc.t.Fatal(err)
	}
	rc.cseq++
	if h == nil {
		h = base.Header{}
	}
	h["CSeq"] = base.HeaderValue{fmt.Sprint(rc.cseq)}
	req := base.Request{Method: method, URL: u, Header: h}
	b, err := req.Marshal()
	if err != nil {
		rc.t.Fatal(err)
	}
	_ = rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.c.Write(b); err != nil {
		return nil, false
	}
	var res base.Response
	if err := res.Unmarshal(rc.r); err != nil {
		return nil, false
	}
	return &res, true
}

// digest answers a challenge for method and path.
func digest(t testing.TB, res *base.Response, method base.Method, uri, user, pass string) string {
	t.Helper()
	var ch headers.Authenticate
	found := false
	for _, v := range res.Header["WWW-Authenticate"] {
		if strings.HasPrefix(v, "Digest") {
			if err := ch.Unmarshal(base.HeaderValue{v}); err != nil {
				t.Fatal(err)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no digest challenge in %v", res.Header["WWW-Authenticate"])
	}
	ha1 := md5hex(user + ":" + ch.Realm + ":" + pass)
	r := md5hex(ha1 + ":" + ch.Nonce + ":" + md5hex(string(method)+":"+uri))
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s"`, user, ch.Realm, ch.Nonce, uri, r)
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// readResult is what a gortsplib client received.
type readResult struct {
	packets         int
	firstTS, lastTS uint32
	res             *base.Response
}

// play reads a stream with gortsplib's client until cond holds on what arrived.
func play(t testing.TB, scheme, host, user, pass, path string, h base.Header, cond func(readResult) bool) readResult {
	t.Helper()
	c := &gortsplib.Client{Scheme: scheme, Host: host, Protocol: ptr(gortsplib.ProtocolTCP),
		TLSConfig: &tls.Config{InsecureSkipVerify: true}} // test certificate
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u, err := base.ParseURL(scheme + "://" + url.UserPassword(user, pass).String() + "@" + host + path)
	if err != nil {
		t.Fatal(err)
	}
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("describe %s: %v", path, err)
	}
	var h264 *format.H264
	var medi *description.Media
	if medi = desc.FindFormat(&h264); medi == nil {
		t.Fatal("no H.264")
	}
	if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		t.Fatalf("setup: %v", err)
	}
	var mu sync.Mutex
	var out readResult
	c.OnPacketRTP(medi, h264, func(p *rtp.Packet) {
		mu.Lock()
		defer mu.Unlock()
		if out.packets == 0 {
			out.firstTS = p.Timestamp
		}
		out.packets++
		out.lastTS = p.Timestamp
	})
	var rng *headers.Range
	if v := h["Range"]; len(v) > 0 {
		rng = &headers.Range{}
		if err := rng.Unmarshal(v); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.Play(rng)
	if err != nil {
		t.Fatalf("play: %v", err)
	}
	waitFor(t, 20*time.Second, "packets", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return cond(out)
	})
	mu.Lock()
	defer mu.Unlock()
	out.res = res
	return out
}

func ptr[T any](v T) *T { return &v }

func ticks32(t time.Time) uint32 { return uint32(ticksOf(t)) }

// TestLive: a service account with a bridge credential reads live video over RTSP and RTSPS (digest);
// packets carry the recorded presentation times; readers of one camera share one stream.
func TestLive(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.live.run(ctx, t, 200*time.Millisecond, 600)
	for _, tc := range []struct{ scheme, host string }{{"rtsp", e.rtsp}, {"rtsps", e.rtsps}} {
		r := play(t, tc.scheme, tc.host, "vms", e.vmsCred, "/cam1", nil, func(r readResult) bool { return r.packets >= 50 })
		if got := strings.Join(r.res.Header["Range"], ""); got != "npt=now-" {
			t.Errorf("%s: PLAY Range %q", tc.scheme, got)
		}
		if d := int64(r.lastTS - r.firstTS); d <= 0 || d > 90000*10 {
			t.Errorf("%s: timestamps went %d ticks", tc.scheme, d)
		}
	}
	if st := e.b.Stats(); st.LiveStreams < 1 || st.LiveStreams > 2 {
		t.Errorf("live streams: %d, want one per listener used", st.LiveStreams)
	}
	if strings.Contains(e.logs.String(), e.vmsCred) {
		t.Fatal("the credential is in the log")
	}
}

// TestReplayClockRange: PLAY with Range: clock= starts at the key frame at or before the requested time,
// answers the actual range, is paced at real time, and Scale speeds it up; ONVIF's Require tag is
// accepted and an unknown one refused.
func TestReplayClockRange(t *testing.T) {
	e := newEnv(t, nil)
	start := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	e.rec.addSegments(t, "cam1", start, 12, 5)
	want := start.Add(6*time.Second + 400*time.Millisecond)

	hdr := base.Header{"Range": base.HeaderValue{"clock=" + formatClock(want) + "-"}}
	began := time.Now()
	r := play(t, "rtsp", e.rtsp, "vms", e.vmsCred, "/cam1/replay", hdr, func(r readResult) bool {
		return r.packets > 0 && r.lastTS-r.firstTS >= 2*90000
	})
	elapsed := time.Since(began)
	if r.firstTS != ticks32(start.Add(6*time.Second)) {
		t.Errorf("first timestamp %d, want the key frame at %d", r.firstTS, ticks32(start.Add(6*time.Second)))
	}
	if elapsed < 1800*time.Millisecond {
		t.Errorf("2 s of recording arrived in %v: not paced", elapsed)
	}
	if got := strings.Join(r.res.Header["Range"], ""); got != "clock="+formatClock(start.Add(6*time.Second))+"-" {
		t.Errorf("PLAY Range %q", got)
	}

	// A start inside the last frame of a fragment belongs to that fragment: the replay starts at its key
	// frame, not at the next fragment's. (Fragments 20 ms off the second, since clients send whole seconds.)
	off := start.Add(20*time.Second + 20*time.Millisecond)
	e.rec.addSegments(t, "cam1", off, 10, 5)
	inLast := base.Header{"Range": base.HeaderValue{"clock=" + formatClock(off.Add(7*time.Second).Truncate(time.Second)) + "-"}}
	r = play(t, "rtsp", e.rtsp, "vms", e.vmsCred, "/cam1/replay", inLast, func(r readResult) bool { return r.packets > 0 })
	if r.firstTS != ticks32(off.Add(6*time.Second)) {
		t.Errorf("start in the last frame of a fragment: first timestamp %d, want the key frame at %d", r.firstTS, ticks32(off.Add(6*time.Second)))
	}

	// Scale 4: 4 s of recording in about a second; the answer says the scale.
	hdr["Scale"] = base.HeaderValue{"4"}
	hdr["Require"] = base.HeaderValue{"onvif-replay"}
	began = time.Now()
	r = playRaw(t, e, "/cam1/replay", hdr, 4*90000)
	if el := time.Since(began); el > 3*time.Second {
		t.Errorf("Scale 4: 4 s of recording took %v", el)
	}
	if got := strings.Join(r.res.Header["Scale"], ""); got != "4" {
		t.Errorf("PLAY Scale %q", got)
	}

	// An unknown Require tag: 551 with Unsupported.
	rc := dialRTSP(t, e.rtsp, false, "")
	sess := setupRaw(t, rc, e, "/cam1/replay?start="+formatClock(want))
	res, _ := rc.do(base.Play, "/cam1/replay?start="+formatClock(want), base.Header{"Session": base.HeaderValue{sess},
		"Require": base.HeaderValue{"com.example.teleport"}, "Authorization": base.HeaderValue{rc.lastAuth(t, e, base.Play, "/cam1/replay?start="+formatClock(want))}})
	if res == nil || res.StatusCode != base.StatusOptionNotSupported || !strings.Contains(strings.Join(res.Header["Unsupported"], ""), "teleport") {
		t.Errorf("unknown Require: %+v", res)
	}
	// A range with nothing recorded: 457.
	res, _ = rc.do(base.Play, "/cam1/replay?start="+formatClock(want), base.Header{"Session": base.HeaderValue{sess},
		"Range":         base.HeaderValue{"clock=" + formatClock(start.Add(time.Hour)) + "-"},
		"Authorization": base.HeaderValue{rc.lastAuth(t, e, base.Play, "/cam1/replay?start="+formatClock(want))}})
	if res == nil || res.StatusCode != base.StatusInvalidRange {
		t.Errorf("range without recording: %+v", res)
	}
}

// lastAuth answers a fresh challenge for method and path on this connection's address.
func (rc *rtspConn) lastAuth(t testing.TB, e *testEnv, method base.Method, path string) string {
	t.Helper()
	// A nonce is bound to the client's address, not to its connection: take one from a second connection.
	rc2 := dialRTSP(t, rc.host, rc.scheme == "rtsps", "")
	res, ok := rc2.do(base.Describe, path, nil)
	if !ok || res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("no challenge: %+v", res)
	}
	return digest(t, res, method, rc.url(path), "vms", e.vmsCred)
}

// setupRaw does DESCRIBE and SETUP by hand and returns the session id.
func setupRaw(t testing.TB, rc *rtspConn, e *testEnv, path string) string {
	t.Helper()
	res, ok := rc.do(base.Describe, path, nil)
	if !ok || res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("DESCRIBE: %+v", res)
	}
	res, ok = rc.do(base.Describe, path, base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc.url(path), "vms", e.vmsCred)}})
	if !ok || res.StatusCode != base.StatusOK {
		t.Fatalf("DESCRIBE with credentials: %+v", res)
	}
	track := path
	if i := strings.IndexByte(track, '?'); i >= 0 {
		track = track[:i] + "/trackID=0" + track[i:]
	} else {
		track += "/trackID=0"
	}
	res, ok = rc.do(base.Setup, track, base.Header{"Transport": base.HeaderValue{"RTP/AVP/TCP;unicast;interleaved=0-1"},
		"Authorization": base.HeaderValue{rc.lastAuth(t, e, base.Setup, track)}})
	if !ok || res.StatusCode != base.StatusOK {
		t.Fatalf("SETUP: %+v", res)
	}
	sess, _, _ := strings.Cut(strings.Join(res.Header["Session"], ""), ";")
	return sess
}

// playRaw sets up path by hand, sends PLAY with extra headers, and reads interleaved RTP until the
// timestamps span span ticks.
func playRaw(t testing.TB, e *testEnv, path string, h base.Header, span uint32) readResult {
	t.Helper()
	rc := dialRTSP(t, e.rtsp, false, "")
	sess := setupRaw(t, rc, e, path)
	ph := base.Header{"Session": base.HeaderValue{sess}, "Authorization": base.HeaderValue{rc.lastAuth(t, e, base.Play, path)}}
	for k, v := range h {
		ph[k] = v
	}
	res, ok := rc.do(base.Play, path, ph)
	if !ok || res.StatusCode != base.StatusOK {
		t.Fatalf("PLAY: %+v", res)
	}
	out := readResult{res: res}
	_ = rc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var f base.InterleavedFrame
		if err := f.Unmarshal(rc.r); err != nil {
			t.Fatalf("read RTP: %v", err)
		}
		var p rtp.Packet
		if f.Channel != 0 || p.Unmarshal(f.Payload) != nil {
			continue
		}
		if out.packets == 0 {
			out.firstTS = p.Timestamp
		}
		out.packets++
		out.lastTS = p.Timestamp
		if out.lastTS-out.firstTS >= span {
			return out
		}
	}
}

// TestRefusals: no credentials → 401 with a digest challenge (Basic only over TLS), audited as an
// anonymous denial; Basic over plain RTSP refused; an API token over RTSPS accepted; a role without the
// camera → 403; a nonce from another address is stale; a session cannot be played by another account.
func TestRefusals(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.live.run(ctx, t, 200*time.Millisecond, 600)

	rc := dialRTSP(t, e.rtsp, false, "")
	res, _ := rc.do(base.Describe, "/cam1", nil)
	if res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("no credentials: %d", res.StatusCode)
	}
	if ch := strings.Join(res.Header["WWW-Authenticate"], " "); !strings.Contains(ch, "Digest") || strings.Contains(ch, "Basic") {
		t.Fatalf("plain RTSP challenge: %q", ch)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("vms:"+e.token))
	if res, _ := rc.do(base.Describe, "/cam1", base.Header{"Authorization": base.HeaderValue{basic}}); res == nil || res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("Basic over plain RTSP: %+v", res)
	}
	if _, ok := rc.do(base.Options, "/", nil); ok {
		t.Fatal("the connection stayed open after refused credentials")
	}

	tc := dialRTSP(t, e.rtsps, true, "")
	res, _ = tc.do(base.Describe, "/cam1", nil)
	if ch := strings.Join(res.Header["WWW-Authenticate"], " "); !strings.Contains(ch, "Basic") {
		t.Fatalf("RTSPS challenge without Basic: %q", ch)
	}
	if res, _ := tc.do(base.Describe, "/cam1", base.Header{"Authorization": base.HeaderValue{basic}}); res == nil || res.StatusCode != base.StatusOK {
		t.Fatalf("API token over RTSPS: %+v", res)
	}
	credBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte("vms:"+e.vmsCred))
	if res, _ := tc.do(base.Describe, "/cam1", base.Header{"Authorization": base.HeaderValue{credBasic}}); res == nil || res.StatusCode != base.StatusOK {
		t.Fatalf("bridge credential as Basic over RTSPS: %+v", res)
	}
	wrongUser := "Basic " + base64.StdEncoding.EncodeToString([]byte("other:"+e.token))
	if res, _ := tc.do(base.Describe, "/cam1", base.Header{"Authorization": base.HeaderValue{wrongUser}}); res == nil || res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("vms's token as other: %+v", res)
	}

	// other may not see cam1; vms may not see cam2.
	for _, c := range []struct{ user, pass, path string }{{"other", e.otherCred, "/cam1"}, {"vms", e.vmsCred, "/cam2"}} {
		rc := dialRTSP(t, e.rtsp, false, "")
		res, _ := rc.do(base.Describe, c.path, nil)
		res, _ = rc.do(base.Describe, c.path, base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc.url(c.path), c.user, c.pass)}})
		if res == nil || res.StatusCode != base.StatusForbidden {
			t.Fatalf("%s on %s: %+v, want 403", c.user, c.path, res)
		}
	}

	// A role whose bridge right is withdrawn: the credential its holder already has opens nothing (403,
	// audited), and works again once the right is given back.
	describeAs := func(user, pass, path string) *base.Response {
		rc := dialRTSP(t, e.rtsp, false, "")
		res, _ := rc.do(base.Describe, path, nil)
		res, _ = rc.do(base.Describe, path, base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc.url(path), user, pass)}})
		return res
	}
	noBridge := authz.Role{Name: "vms-cam2", Cameras: map[string][]authz.Action{"cam2": {authz.Live, authz.Playback}}, MaxRecordingAge: time.Hour}
	if err := e.az.PutRole(testAdmin, noBridge, "test"); err != nil {
		t.Fatal(err)
	}
	if res := describeAs("other", e.otherCred, "/cam2"); res == nil || res.StatusCode != base.StatusForbidden {
		t.Fatalf("other on cam2 without the bridge right: %+v, want 403", res)
	}
	noBridge.System = []authz.Action{authz.UseBridge}
	if err := e.az.PutRole(testAdmin, noBridge, "test"); err != nil {
		t.Fatal(err)
	}
	if res := describeAs("other", e.otherCred, "/cam2"); res == nil || res.StatusCode != base.StatusOK {
		t.Fatalf("other on cam2 with the bridge right back: %+v, want 200", res)
	}

	// A nonce issued to 127.0.0.1 is stale from 127.0.0.2.
	res, _ = dialRTSP(t, e.rtsp, false, "").do(base.Describe, "/cam1", nil)
	rc2 := dialRTSP(t, e.rtsp, false, "127.0.0.2")
	res2, _ := rc2.do(base.Describe, "/cam1", base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc2.url("/cam1"), "vms", e.vmsCred)}})
	if res2 == nil || res2.StatusCode != base.StatusUnauthorized || !strings.Contains(strings.Join(res2.Header["WWW-Authenticate"], ""), "stale") {
		t.Fatalf("nonce from another address: %+v", res2)
	}

	// A disabled account's credential stops working; so does a deleted one's, even for a new account of
	// the same name.
	if err := e.az.UpdateUser(testAdmin, "other", []string{"vms-cam2"}, false, true, "test"); err != nil {
		t.Fatal(err)
	}
	rc3 := dialRTSP(t, e.rtsp, false, "127.0.0.6")
	res, _ = rc3.do(base.Describe, "/cam2", nil)
	if res3, _ := rc3.do(base.Describe, "/cam2", base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc3.url("/cam2"), "other", e.otherCred)}}); res3 == nil || res3.StatusCode != base.StatusUnauthorized {
		t.Fatalf("disabled account: %+v", res3)
	}
	if err := e.az.DeleteUser(testAdmin, "other", "test"); err != nil {
		t.Fatal(err)
	}
	if err := e.az.CreateUser(testAdmin, authz.NewUser{Name: "other", Service: true, Roles: []string{"vms-cam2"}}, "test"); err != nil {
		t.Fatal(err)
	}
	rc4 := dialRTSP(t, e.rtsp, false, "127.0.0.6")
	res, _ = rc4.do(base.Describe, "/cam2", nil)
	if res4, _ := rc4.do(base.Describe, "/cam2", base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc4.url("/cam2"), "other", e.otherCred)}}); res4 == nil || res4.StatusCode != base.StatusUnauthorized {
		t.Fatalf("a new account of the same name with the old credential: %+v", res4)
	}

	// The audit log: anonymous and refused requests are there, as decisions.
	entries, err := e.az.AuditEntries(authz.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, en := range entries {
		seen[en.Subject+"|"+en.Action+"|"+en.Object+"|"+en.Result] = true
	}
	for _, k := range []string{
		"anonymous|camera.live|camera/cam1|deny",
		"other (token bridge-1)|camera.live|camera/cam1|deny",
		"vms (token bridge-1)|camera.live|camera/cam2|deny",
		"vms (token " + strings.Split(strings.TrimPrefix(e.token, "nvrt_"), "_")[0] + ")|camera.live|camera/cam1|allow",
		"vms|bridge.login|bridge|failure",
		"other (token bridge-1)|system.bridge|system|deny",
	} {
		if !seen[k] {
			t.Errorf("audit entry %q missing", k)
		}
	}
	for _, en := range entries {
		if strings.Contains(en.Reason+en.Object+en.Subject, e.vmsCred) || strings.Contains(en.Reason+en.Object+en.Subject, e.token) {
			t.Fatal("a secret is in the audit log")
		}
	}
}

// TestThrottle: after repeated failures from one address its credentials are not even checked for a while.
func TestThrottle(t *testing.T) {
	e := newEnv(t, nil)
	var last *base.Response
	for range failFree + 2 {
		rc := dialRTSP(t, e.rtsp, false, "127.0.0.3")
		res, _ := rc.do(base.Describe, "/cam1", nil)
		last, _ = rc.do(base.Describe, "/cam1", base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc.url("/cam1"), "vms", "wrong")}})
	}
	if last == nil || last.StatusCode != base.StatusServiceUnavailable {
		t.Fatalf("after %d failures: %+v, want 503", failFree+2, last)
	}
	// Another address is not affected.
	rc := dialRTSP(t, e.rtsp, false, "127.0.0.4")
	res, _ := rc.do(base.Describe, "/cam2", nil)
	res, _ = rc.do(base.Describe, "/cam2", base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc.url("/cam2"), "other", e.otherCred)}})
	if res == nil || res.StatusCode == base.StatusServiceUnavailable || res.StatusCode == base.StatusUnauthorized {
		t.Fatalf("another address after the throttle: %+v", res)
	}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
