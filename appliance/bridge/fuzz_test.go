package bridge

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/edgenvr/nvr/appliance/authz"
)

// FuzzRequest sends arbitrary bytes to a running bridge as a client would (then half-closes) and checks
// that the server answers within a bounded time and size and gives every connection back: malformed
// request lines and headers, huge or lying Content-Length, pipelined requests, interleaved frames, bad
// Authorization, Range, Scale, Require and paths.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"OPTIONS rtsp://h/ RTSP/1.0\r\nCSeq: 1\r\n\r\n",
		"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
		"DESCRIBE rtsp://h/cam1/replay?start=20261123T101500Z RTSP/1.0\r\nCSeq: 2\r\nAuthorization: Basic dm1zOnNlY3JldA==\r\n\r\n",
		"DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 3\r\nAuthorization: Digest username=\"vms\", realm=\"Edge NVR bridge\", nonce=\"AAAA\", uri=\"rtsp://h/cam1\", response=\"00\"\r\n\r\n",
		"PLAY rtsp://h/cam1/replay RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\nRange: clock=20261123T101500.25Z-20261123T101600Z\r\nScale: 2\r\nRequire: onvif-replay\r\n\r\n",
		"SETUP rtsp://h/cam1/trackID=0 RTSP/1.0\r\nCSeq: 5\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
		"ANNOUNCE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 6\r\nContent-Length: 999999999\r\n\r\nv=0",
		"GET_PARAMETER rtsp://h/cam1 RTSP/1.0\r\nCSeq: 7\r\nContent-Length: 5\r\n\r\nhello",
		"$\x00\x00\x04abcd",
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"DESCRIBE rtsp://h/../../etc/passwd RTSP/1.0\r\nCSeq: 8\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	// One bridge serves the whole run.
	e := newEnv(f, func(c *Config) {
		c.AuthTimeout = 2 * time.Second
		c.LiveWait = 100 * time.Millisecond
		c.MaxConnsPerSource = 64
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 1<<20 {
			return
		}
		c, err := net.Dial("tcp", e.rtsp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_ = c.SetDeadline(start.Add(10 * time.Second))
		go func() {
			_, _ = c.Write(in)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		n, err := io.Copy(io.Discard, io.LimitReader(c, 4<<20))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("no end after %v", time.Since(start))
		}
		if n >= 4<<20 {
			t.Fatalf("the server answered %d bytes", n)
		}
	})
}

// FuzzHeaders feeds the header values the bridge parses itself: Range, Scale, Require, the replay query
// and the path, plus the Authorization header through the authenticator.
func FuzzHeaders(f *testing.F) {
	for _, s := range [][5]string{
		{"clock=20261123T101500Z-", "1", "onvif-replay", "start=20261123T101500Z", "/cam1/replay"},
		{"clock=20261123T101500.123Z-20261123T101600Z", "0.5", "onvif-replay, x", "start=20261123T101500Z&end=20261123T101600Z", "/cam1"},
		{"npt=0.000-", "-1", "", "", "/cam1/live"},
		{"npt=1:02:03.5-1:02:04", "8", "a,b,c", "start=x", "/x/y/z"},
		{"npt=now-", "nan", "", "end=20261123T101500Z", "/"},
		{"smpte=0:10:00-", "1e400", "", "%zz", "/cam_1-a/replay"},
		{"clock=99991231T235959.999999999Z-", "", "", "start=20261123T101500Z&start=20261123T101500Z", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	creds, err := OpenCredentials(f.TempDir(), nil, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	a := &authenticator{az: noAccounts{}, creds: creds, realm: "r", now: func() time.Time { return now }, rnd: zeroReader{},
		nonceTTL: time.Hour, fails: newFailures(16)}
	f.Fuzz(func(t *testing.T, rng, scale, require, query, path string) {
		if r, ok, err := parseRange(rng); err == nil && ok {
			if !r.Start.IsZero() && !r.End.IsZero() && !r.End.After(r.Start) {
				t.Fatalf("range %q ends before it starts", rng)
			}
			if r.NPT < 0 || r.NPTEnd < 0 {
				t.Fatalf("range %q: negative npt", rng)
			}
		}
		if s, err := parseScale(scale); err == nil && (s < minScale || s > maxScale) {
			t.Fatalf("scale %q accepted as %v", scale, s)
		}
		if tags := unsupportedRequire([]string{require}); len(tags) > 8 {
			t.Fatalf("%d tags", len(tags))
		}
		if r, ok, err := queryRange(query); err == nil && ok && r.Start.IsZero() {
			t.Fatalf("query %q without start accepted", query)
		}
		if tg, ok := parsePath(path); ok && (tg.camera == "" || strings.Contains(tg.camera, "/")) {
			t.Fatalf("path %q gave camera %q", path, tg.camera)
		}
		req := &base.Request{Method: base.Setup, URL: mustURL(path), Header: base.Header{"Authorization": base.HeaderValue{require}}}
		_ = uriMatches(req, query)
		_ = a.checkNonce(query, "127.0.0.1")
		// Any Authorization value: never a subject (no account exists), never a panic.
		if sub, err := a.authenticate(req, true, "127.0.0.1"); err == nil {
			t.Fatalf("authorization %q accepted as %v", require, sub)
		}
	})
}

// noAccounts is an Authz with no account at all: for fuzzing the parsers in front of it.
type noAccounts struct{}

func (noAccounts) Decide(authz.Request) authz.Decision { return authz.Decision{} }
func (noAccounts) AuthenticateToken(string) (authz.Subject, error) {
	return authz.Subject{}, authz.ErrBadCredentials
}
func (noAccounts) User(string) (authz.User, error)                             { return authz.User{}, authz.ErrNotFound }
func (noAccounts) Event(authz.Subject, string, string, string, string, string) {}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func mustURL(p string) *base.URL {
	u, err := base.ParseURL("rtsp://h" + "/" + strings.TrimLeft(p, "/"))
	if err != nil {
		return nil
	}
	return u
}
