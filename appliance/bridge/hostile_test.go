package bridge

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/base"
)

// closedWithin reports whether the server closed c within d (reading and discarding what it sends).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// TestSlowClient: a client that trickles a request byte by byte (slowloris) is cut once AuthTimeout has
// passed since it connected, however often it sends.
func TestSlowClient(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AuthTimeout = 1 * time.Second })
	c, err := net.Dial("tcp", e.rtsp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	req := []byte("DESCRIBE rtsp://" + e.rtsp + "/cam1 RTSP/1.0\r\nCSeq: 1\r\n" + strings.Repeat("X-Pad: y\r\n", 200))
	closed := false
	for i := 0; i < len(req) && !closed; i++ {
		if _, err := c.Write(req[i : i+1]); err != nil {
			closed = true
			break
		}
		// One byte every 50 ms: each byte well within gortsplib's per-message read deadline.
		closed = closedWithin(c, 50*time.Millisecond)
	}
	if !closed {
		t.Fatal("the slow client was never cut")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("the slow client held its connection for %v with AuthTimeout 1 s", el)
	}
}

// TestIdleAfterConnect: a connection that sends nothing is closed after AuthTimeout.
func TestIdleAfterConnect(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AuthTimeout = 500 * time.Millisecond })
	for _, secure := range []bool{false, true} {
		addr := e.rtsp
		if secure {
			addr = e.rtsps // a TLS handshake never started is bounded the same way
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if !closedWithin(c, 3*time.Second) {
			t.Fatalf("secure=%v: an idle connection stayed open", secure)
		}
		c.Close()
	}
	waitFor(t, 5*time.Second, "connections released", func() bool { return e.b.Stats().Conns == 0 })
}

// TestHugeRequests: bodies over gortsplib's limit, too many headers and overlong header values end the
// connection without the server buffering them; garbage (which gortsplib skips byte by byte, looking for
// the next message) is cut by the authentication deadline.
func TestHugeRequests(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AuthTimeout = time.Second })
	for name, req := range map[string]string{
		"body":    "DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 104857600\r\n\r\n",
		"headers": "DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\n" + strings.Repeat("X-A: b\r\n", 300) + "\r\n",
		"value":   "DESCRIBE rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\nX-Long: " + strings.Repeat("v", 10000) + "\r\n\r\n",
		"line":    "DESCRIBE rtsp://h/" + strings.Repeat("a", 100000) + " RTSP/1.0\r\nCSeq: 1\r\n\r\n",
		"garbage": string(bytes.Repeat([]byte{0xff, 0x00, '\r', '\n'}, 1000)),
	} {
		c, err := net.Dial("tcp", e.rtsp)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = c.Write([]byte(req))
			// Keep sending, as a flood would: the server must close rather than buffer.
			_, _ = c.Write(bytes.Repeat([]byte("z"), 1<<20))
		}()
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s: the connection stayed open", name)
		}
		c.Close()
	}
}

// TestConnectionLimits: one address may hold MaxConnsPerSource connections; more are closed at once, and
// the memory the held ones cost is bounded.
func TestConnectionLimits(t *testing.T) {
	const per = 8
	e := newEnv(t, func(c *Config) { c.MaxConnsPerSource = per; c.MaxConns = 32; c.AuthTimeout = 20 * time.Second })
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range per {
		c, err := net.Dial("tcp", e.rtsp)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// Each one sends a partial request with near-maximal headers.
		fmt.Fprintf(c, "DESCRIBE rtsp://h/cam%d RTSP/1.0\r\nCSeq: 1\r\n%s", i, strings.Repeat("X-Pad: "+strings.Repeat("p", 2000)+"\r\n", 200))
	}
	waitFor(t, 5*time.Second, "the connections to be held", func() bool { return e.b.Stats().Conns == per })
	extra, err := net.Dial("tcp", e.rtsp)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closedWithin(extra, 3*time.Second) {
		t.Fatal("a connection over the per-address limit stayed open")
	}
	// Another address still gets in.
	other, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}).Dial("tcp", e.rtsp)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	rc := &rtspConn{t: t, c: other, r: newReader(other), host: e.rtsp, scheme: "rtsp"}
	if res, ok := rc.do(base.Options, "/", nil); !ok || res.StatusCode != base.StatusOK {
		t.Fatalf("another address: %+v", res)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 32<<20 {
		t.Fatalf("%d held connections grew the heap by %d bytes", per, grown)
	}
}

// TestSessionLimit: SETUP beyond MaxSessions is refused with 503, and the slot comes back when a session
// ends.
func TestSessionLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSessions = 1 })
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	e.rec.addSegments(t, "cam1", start, 10, 5)
	path := "/cam1/replay?start=" + formatClock(start)
	first := dialRTSP(t, e.rtsp, false, "")
	setupRaw(t, first, e, path)
	second := dialRTSP(t, e.rtsp, false, "")
	res, _ := second.do(base.Describe, path, nil)
	res, _ = second.do(base.Describe, path, base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, second.url(path), "vms", e.vmsCred)}})
	if res == nil || res.StatusCode != base.StatusOK {
		t.Fatalf("DESCRIBE: %+v", res)
	}
	track := "/cam1/replay/trackID=0?start=" + formatClock(start)
	res, _ = second.do(base.Setup, track, base.Header{"Transport": base.HeaderValue{"RTP/AVP/TCP;unicast;interleaved=0-1"},
		"Authorization": base.HeaderValue{second.lastAuth(t, e, base.Setup, track)}})
	if res == nil || res.StatusCode != base.StatusServiceUnavailable {
		t.Fatalf("SETUP over the limit: %+v", res)
	}
	first.c.Close()
	waitFor(t, 10*time.Second, "the session slot back", func() bool { return e.b.Stats().Sessions == 0 })
	third := dialRTSP(t, e.rtsp, false, "")
	setupRaw(t, third, e, path)
}
