package bridge

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener bounds the connections a hostile client set can hold: at most max at once and perSource
// from one address, and a connection that has not authenticated within authTimeout of its start is cut,
// however slowly it trickles bytes (gortsplib's read deadline is per message).
type limitListener struct {
	net.Listener
	max, perSource int
	authTimeout    time.Duration
	now            func() time.Time

	mu     sync.Mutex
	total  int
	bySrc  map[string]int
	closed bool
}

func newLimitListener(ln net.Listener, max, perSource int, authTimeout time.Duration, now func() time.Time) *limitListener {
	return &limitListener{Listener: ln, max: max, perSource: perSource, authTimeout: authTimeout, now: now, bySrc: map[string]int{}}
}

// Accept returns the next connection within the limits; connections over them are closed at once.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := hostOf(c.RemoteAddr())
		l.mu.Lock()
		ok := l.total < l.max && l.bySrc[src] < l.perSource
		if ok {
			l.total++
			l.bySrc[src]++
		}
		l.mu.Unlock()
		if !ok {
			c.Close()
			continue
		}
		lc := &limitConn{Conn: c, l: l, src: src, authBy: l.now().Add(l.authTimeout)}
		// Until the first request is authenticated, every read ends by authBy.
		_ = c.SetReadDeadline(lc.authBy)
		return lc, nil
	}
}

func (l *limitListener) release(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.bySrc[src]--; l.bySrc[src] <= 0 {
		delete(l.bySrc, src)
	}
}

// open returns how many connections are held.
func (l *limitListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// limitConn is a connection counted by a limitListener.
type limitConn struct {
	net.Conn
	l      *limitListener
	src    string
	authBy time.Time
	authed atomic.Bool
	once   sync.Once
}

// SetReadDeadline caps deadlines at authBy until the connection has authenticated.
func (c *limitConn) SetReadDeadline(t time.Time) error {
	if !c.authed.Load() && (t.IsZero() || t.After(c.authBy)) {
		t = c.authBy
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline applies the same cap to reads.
func (c *limitConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.l.release(c.src) })
	return c.Conn.Close()
}

// markAuthenticated lifts the authentication deadline of the connection under nc (plain or TLS).
func markAuthenticated(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if lc, ok := nc.(*limitConn); ok && !lc.authed.Load() {
		lc.authed.Store(true)
		// gortsplib sets the next read deadline itself before its next read.
	}
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}
