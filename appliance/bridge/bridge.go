package bridge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/record"
)

// Config configures a Bridge.
type Config struct {
	// RTSPAddr is the plain RTSP listener (such as ":554"); empty disables it. Digest only: credentials never
	// cross it in clear, but the video does.
	RTSPAddr string
	// RTSPSAddr is the RTSPS listener (such as ":322"); empty disables it. TLS is required with it.
	RTSPSAddr string
	TLS       *tls.Config

	// Authz decides and audits every DESCRIBE and PLAY; Credentials holds the bridge credentials. Required.
	Authz       Authz
	Credentials *Credentials
	// Live serves live streams; nil disables them. Recordings serves replay; nil disables it.
	Live       LiveSource
	Recordings Recordings

	// Realm names the appliance in digest challenges (default "Edge NVR bridge"). Changing it invalidates
	// nothing stored (credentials are derived), but clients must answer the new realm.
	Realm string

	// MaxConns and MaxConnsPerSource bound open connections (defaults 64 and 16). MaxSessions bounds RTSP
	// sessions (default 64).
	MaxConns, MaxConnsPerSource, MaxSessions int
	// AuthTimeout is how long a new connection has to send an authenticated request (default 10 s).
	AuthTimeout time.Duration
	// ReadTimeout, WriteTimeout and IdleTimeout are gortsplib's (defaults 10 s, 10 s, 60 s).
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// WriteQueue is each reader's packet queue (a power of two, default 4096: a recorded fragment of about
	// one second goes out as a burst). A reader whose queue overflows too often is disconnected.
	WriteQueue int
	// NonceTTL is how long a digest nonce stays valid (default 1 h).
	NonceTTL time.Duration
	// LiveWait is how long a DESCRIBE waits for a camera's first fragment (default 5 s); LiveIdle how long a
	// live stream nobody reads is kept (default 10 s).
	LiveWait, LiveIdle time.Duration

	// Now is the clock (nil: time.Now); Rand the randomness (nil: crypto/rand).
	Now  func() time.Time
	Rand io.Reader

	// Ready, if set, is called with the bound listener addresses (nil for a disabled one).
	Ready func(rtsp, rtsps net.Addr)
}

// Bridge is the RTSP(S) server for external systems.
type Bridge struct {
	cfg  Config
	log  *slog.Logger
	auth *authenticator
	live *liveHub

	mu      sync.Mutex
	servers []*server
	nsess   atomic.Int64
}

// server is one listener (plain or TLS) with its gortsplib server.
type server struct {
	b      *Bridge
	secure bool
	srv    *gortsplib.Server
	ln     *limitListener
}

// New checks the configuration. Nothing listens until Run.
func New(cfg Config, log *slog.Logger) (*Bridge, error) {
	if cfg.Authz == nil || cfg.Credentials == nil {
		return nil, errors.New("bridge: Authz and Credentials are required")
	}
	if cfg.RTSPAddr == "" && cfg.RTSPSAddr == "" {
		return nil, errors.New("bridge: no listener configured")
	}
	if cfg.RTSPSAddr != "" && cfg.TLS == nil {
		return nil, errors.New("bridge: RTSPS needs a TLS configuration")
	}
	if cfg.Realm == "" {
		cfg.Realm = "Edge NVR bridge"
	}
	if strings.ContainsAny(cfg.Realm, "\"\r\n") {
		return nil, errors.New("bridge: realm holds a quote or a line break")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxConns, 64)
	def(&cfg.MaxConnsPerSource, 16)
	def(&cfg.MaxSessions, 64)
	def(&cfg.WriteQueue, 4096)
	if cfg.WriteQueue&(cfg.WriteQueue-1) != 0 {
		return nil, fmt.Errorf("bridge: WriteQueue %d is not a power of two", cfg.WriteQueue)
	}
	defD(&cfg.AuthTimeout, 10*time.Second)
	defD(&cfg.ReadTimeout, 10*time.Second)
	defD(&cfg.WriteTimeout, 10*time.Second)
	defD(&cfg.IdleTimeout, 60*time.Second)
	defD(&cfg.NonceTTL, time.Hour)
	defD(&cfg.LiveWait, 5*time.Second)
	defD(&cfg.LiveIdle, 10*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	b := &Bridge{cfg: cfg, log: log}
	b.auth = &authenticator{az: cfg.Authz, creds: cfg.Credentials, realm: cfg.Realm, now: cfg.Now, rnd: cfg.Rand,
		nonceTTL: cfg.NonceTTL, fails: newFailures(4096)}
	b.live = &liveHub{b: b, m: map[liveKey]*liveStream{}}
	return b, nil
}

// Run listens and serves until ctx ends, then closes every session and listener.
func (b *Bridge) Run(ctx context.Context) error {
	var servers []*server
	defer func() {
		for _, s := range servers {
			s.srv.Close()
		}
		b.live.closeAll()
	}()
	var addrs [2]net.Addr
	for i, addr := range []string{b.cfg.RTSPAddr, b.cfg.RTSPSAddr} {
		if addr == "" {
			continue
		}
		s := &server{b: b, secure: i == 1}
		s.srv = &gortsplib.Server{
			Handler:        &handler{s: s},
			RTSPAddress:    addr,
			ReadTimeout:    b.cfg.ReadTimeout,
			WriteTimeout:   b.cfg.WriteTimeout,
			IdleTimeout:    b.cfg.IdleTimeout,
			WriteQueueSize: b.cfg.WriteQueue,
			Listen: func(network, address string) (net.Listener, error) {
				ln, err := net.Listen(network, address)
				if err != nil {
					return nil, err
				}
				s.ln = newLimitListener(ln, b.cfg.MaxConns, b.cfg.MaxConnsPerSource, b.cfg.AuthTimeout, b.cfg.Now)
				return s.ln, nil
			},
		}
		if s.secure {
			s.srv.TLSConfig = b.cfg.TLS
			s.srv.TLSListen = func(network, address string, conf *tls.Config) (net.Listener, error) {
				ln, err := net.Listen(network, address)
				if err != nil {
					return nil, err
				}
				s.ln = newLimitListener(ln, b.cfg.MaxConns, b.cfg.MaxConnsPerSource, b.cfg.AuthTimeout, b.cfg.Now)
				return tls.NewListener(s.ln, conf), nil
			}
		}
		if err := s.srv.Start(); err != nil {
			return fmt.Errorf("bridge: listen on %s: %w", addr, err)
		}
		servers = append(servers, s)
		addrs[i] = s.srv.NetListener().Addr()
	}
	b.mu.Lock()
	b.servers = servers
	b.mu.Unlock()
	b.log.Info("bridge listening", "rtsp", addrString(addrs[0]), "rtsps", addrString(addrs[1]))
	if b.cfg.Ready != nil {
		b.cfg.Ready(addrs[0], addrs[1])
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.srv.Wait() }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return fmt.Errorf("bridge: server stopped: %w", err)
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Stats is what the bridge serves now.
type Stats struct {
	Conns, Sessions, LiveStreams int
}

// Stats returns the current counts.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	servers := b.servers
	b.mu.Unlock()
	var st Stats
	for _, s := range servers {
		if s.ln != nil {
			st.Conns += s.ln.open()
		}
	}
	st.Sessions = int(b.nsess.Load())
	st.LiveStreams = b.live.count()
	return st
}

// IssueCredential creates or rotates the bridge credential of service account user and returns it, shown
// once. by must be allowed to manage users, and user to use the bridge (both decided and audited here).
func (b *Bridge) IssueCredential(by authz.Subject, user, source string) (string, error) {
	if d := b.cfg.Authz.Decide(authz.Request{Subject: by, Action: authz.ManageUsers, Source: source}); !d.Allow {
		return "", fmt.Errorf("%w: %s", authz.ErrDenied, d.Reason)
	}
	u, err := b.cfg.Authz.User(user)
	if err != nil {
		return "", fmt.Errorf("bridge credential for %s: %w", user, err)
	}
	if !u.Service {
		return "", fmt.Errorf("bridge credential for %s: not a service account (interactive logins need a second factor)", user)
	}
	if d := b.cfg.Authz.Decide(authz.Request{Subject: authz.Subject{User: u.Name, Via: Door(u)}, Action: authz.UseBridge, Source: source}); !d.Allow {
		return "", fmt.Errorf("%w: %s may not take video out over the bridge: %s", authz.ErrDenied, user, d.Reason)
	}
	secret, info, err := b.cfg.Credentials.issue(user, u.Created)
	if err != nil {
		return "", err
	}
	b.cfg.Authz.Event(by, "bridge.credential.issue", "user/"+user, "ok", "serial "+itoa(info.Serial), source)
	return secret, nil
}

// RevokeCredential deletes the bridge credential of user. by must be allowed to manage users.
func (b *Bridge) RevokeCredential(by authz.Subject, user, source string) error {
	if d := b.cfg.Authz.Decide(authz.Request{Subject: by, Action: authz.ManageUsers, Source: source}); !d.Allow {
		return fmt.Errorf("%w: %s", authz.ErrDenied, d.Reason)
	}
	if err := b.cfg.Credentials.revoke(user); err != nil {
		return err
	}
	b.cfg.Authz.Event(by, "bridge.credential.revoke", "user/"+user, "ok", "", source)
	return nil
}

// target is what a request path names: a camera, live or replay.
type target struct {
	camera string
	replay bool
}

// parsePath reads "/CAMERA", "/CAMERA/live" or "/CAMERA/replay" (gortsplib strips the query and the
// track suffix of SETUP).
func parsePath(p string) (target, bool) {
	p = strings.Trim(p, "/")
	if len(p) > 128 {
		return target{}, false
	}
	cam, kind, _ := strings.Cut(p, "/")
	if !record.ValidCameraName(cam) {
		return target{}, false
	}
	switch kind {
	case "", "live":
		return target{camera: cam}, true
	case "replay":
		return target{camera: cam, replay: true}, true
	}
	return target{}, false
}

// sessionState is what the bridge keeps per RTSP session.
type sessionState struct {
	sub    authz.Subject
	target target
	live   *liveStream
	replay *replay
	drops  atomic.Int64
}

// connState is what the bridge keeps per connection: a replay stream made at DESCRIBE, until a SETUP on
// the same connection takes it.
type connState struct {
	mu      sync.Mutex
	pending *replay
}

func sourceOf(sc *gortsplib.ServerConn) string { return hostOf(sc.NetConn().RemoteAddr()) }

func status(code base.StatusCode) *base.Response { return &base.Response{StatusCode: code} }

// errRefused ends a connection after a refusal (wrong credentials); gortsplib closes it once the answer
// is written.
var errRefused = errors.New("bridge: request refused")
