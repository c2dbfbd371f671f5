// Package ingest pulls video from one camera over RTSP or RTSPS and hands on whole access units in decode
// order, with parameter sets, timestamps and the camera's stream state (connected, lost, restored).
//
// It owns the camera connection: reconnecting with capped exponential backoff and jitter, checking every
// RTP packet (payload type, sizes, timestamps) and turning a hostile or broken stream into counted, logged
// drops, never a crash. It must never block on anything but the camera and its own consumer, never decode
// or transcode pictures, and never log or return the camera's password. It imports no other package of the
// project.
package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Config describes one camera stream.
type Config struct {
	// Name identifies the camera in events and logs.
	Name string
	// URL is the stream address, rtsp:// or rtsps://, without credentials.
	URL string
	// Username and Password authenticate to the camera (digest or basic, as the camera asks). The password
	// never appears in logs or errors.
	Username, Password string
	// Transport is "tcp", "udp" or "" (try UDP, fall back to TCP).
	Transport string
	// TLS configures RTSPS. Nil means the system roots and the URL's host name, unless PinnedCert is set.
	TLS *tls.Config
	// PinnedCert, if set, is the DER certificate the camera must present over RTSPS, byte for byte: the
	// certificate pinned when the camera was adopted (cameras mostly have self-signed certificates, which no
	// root vouches for). A camera presenting any other certificate is refused.
	PinnedCert []byte
	// VideoLossAfter is the silence after which a video-loss event is raised. Default 5 s.
	VideoLossAfter time.Duration
	// ReadTimeout ends a session that receives nothing for that long. Default 10 s.
	ReadTimeout time.Duration
	// BackoffMin and BackoffMax bound the pause between reconnection attempts. Defaults 500 ms and 30 s.
	BackoffMin, BackoffMax time.Duration
	// MaxUnitSize bounds one access unit in bytes. Default 16 MiB.
	MaxUnitSize int
	// MaxTimestampJump is how far a packet's timestamp may stray from the wall clock before it is dropped as
	// bad. Default 10 s.
	MaxTimestampJump time.Duration
	// Queue is how many units may wait for the consumer; when it is full, units are dropped up to the next
	// random access point. Default 256.
	Queue int
	// Clock returns the time; nil means time.Now.
	Clock func() time.Time
}

func (c *Config) setDefaults() {
	if c.VideoLossAfter <= 0 {
		c.VideoLossAfter = 5 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 500 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.MaxUnitSize <= 0 {
		c.MaxUnitSize = 16 << 20
	}
	if c.MaxTimestampJump <= 0 {
		c.MaxTimestampJump = 10 * time.Second
	}
	if c.Queue <= 0 {
		c.Queue = 256
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
}

// Handler receives what a camera sends. Its methods are called from one goroutine, in order.
type Handler interface {
	// Unit is called for every access unit. The unit and its NAL units belong to the handler.
	Unit(u *Unit)
	// Event is called when the stream's state changes.
	Event(e Event)
}

// Stats are running counters of one camera stream.
type Stats struct {
	Sessions   uint64
	Units      uint64
	Bytes      uint64
	BadPackets uint64
	Dropped    uint64 // units dropped because the consumer fell behind
	LostVideo  bool
}

// Camera is the ingest of one camera stream.
type Camera struct {
	cfg  Config
	log  *slog.Logger
	url  *url.URL
	rand *rand.Rand

	mu    sync.Mutex
	stats Stats
}

// New checks cfg and returns the camera's ingest. It does not connect: Run does.
func New(cfg Config, log *slog.Logger) (*Camera, error) {
	cfg.setDefaults()
	if cfg.Name == "" {
		return nil, errors.New("ingest: camera without a name")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("ingest: camera %s: bad URL: %w", cfg.Name, err)
	}
	if u.Scheme != "rtsp" && u.Scheme != "rtsps" {
		return nil, fmt.Errorf("ingest: camera %s: scheme %q is not rtsp or rtsps", cfg.Name, u.Scheme)
	}
	if u.User != nil {
		return nil, fmt.Errorf("ingest: camera %s: credentials belong in the credentials file, not the URL", cfg.Name)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("ingest: camera %s: URL has no host", cfg.Name)
	}
	switch cfg.Transport {
	case "", "tcp", "udp":
	default:
		return nil, fmt.Errorf("ingest: camera %s: transport %q is not tcp or udp", cfg.Name, cfg.Transport)
	}
	if len(cfg.PinnedCert) > 0 {
		if u.Scheme != "rtsps" {
			return nil, fmt.Errorf("ingest: camera %s: a pinned certificate needs an rtsps:// URL", cfg.Name)
		}
		cfg.TLS = pinnedTLS(cfg.PinnedCert)
	}
	return &Camera{
		cfg:  cfg,
		log:  log.With("camera", cfg.Name),
		url:  u,
		rand: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x6e7672)),
	}, nil
}

// Name returns the camera's name.
func (c *Camera) Name() string { return c.cfg.Name }

// Stats returns a copy of the running counters.
func (c *Camera) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// item is what travels from the RTSP reader to the handler: a unit or an event.
type item struct {
	unit  *Unit
	event *Event
}

// Run connects, reconnects and delivers units and events to h until ctx ends. It returns nil when ctx
// ends; it never gives up on a camera by itself.
func (c *Camera) Run(ctx context.Context, h Handler) error {
	q := make(chan item, c.cfg.Queue)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the consumer: the only caller of h
		defer wg.Done()
		for {
			select {
			case it := <-q:
				c.deliver(h, it)
			case <-ctx.Done():
				// Hand on what is queued so nothing received is lost at shutdown.
				for {
					select {
					case it := <-q:
						c.deliver(h, it)
					default:
						return
					}
				}
			}
		}
	}()
	w := &watch{cam: c, q: q, last: c.cfg.Clock()}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.run(ctx)
	}()

	backoff := c.cfg.BackoffMin
	var session uint64
	for ctx.Err() == nil {
		session++
		start := c.cfg.Clock()
		delivered, err := c.session(ctx, session, w)
		if ctx.Err() != nil {
			w.event(Event{Kind: EventDisconnected, Err: context.Cause(ctx)})
			break
		}
		w.event(Event{Kind: EventDisconnected, Err: err})
		c.log.Warn("camera session ended", "err", err, "lasted", c.cfg.Clock().Sub(start).Round(time.Millisecond))
		if delivered {
			backoff = c.cfg.BackoffMin
		}
		// Full jitter on top of half the backoff, so a fleet of cameras does not reconnect in step.
		pause := backoff/2 + time.Duration(c.rand.Int64N(int64(backoff/2)+1))
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		backoff = min(backoff*2, c.cfg.BackoffMax)
	}
	cancel()
	wg.Wait()
	return nil
}

func (c *Camera) deliver(h Handler, it item) {
	if it.unit != nil {
		h.Unit(it.unit)
		return
	}
	e := *it.event
	e.Camera = c.cfg.Name
	h.Event(e)
}

// watch raises video-loss events and owns the queue's producer side.
type watch struct {
	cam *Camera

	q chan item

	mu        sync.Mutex
	last      time.Time // wall time of the last unit
	lost      bool
	needKey   bool // a unit was dropped: skip to the next random access point
	dropBurst bool
}

func (w *watch) run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		now := w.cam.cfg.Clock()
		raise := !w.lost && now.Sub(w.last) > w.cam.cfg.VideoLossAfter
		if raise {
			w.lost = true
		}
		since := now.Sub(w.last)
		w.mu.Unlock()
		if raise {
			w.cam.setLost(true)
			w.cam.log.Warn("video loss", "silent_for", since.Round(time.Millisecond))
			w.event(Event{Kind: EventVideoLoss})
		}
	}
}

// event queues e; events are never dropped (they are rare), so this blocks only while the consumer is busy.
func (w *watch) event(e Event) {
	if e.Time.IsZero() {
		e.Time = w.cam.cfg.Clock()
	}
	w.q <- item{event: &e}
}

// unit queues u, dropping it (and every unit up to the next random access point) when the consumer is behind.
func (w *watch) unit(u *Unit) {
	w.mu.Lock()
	w.last = w.cam.cfg.Clock()
	restored := w.lost
	w.lost = false
	if w.needKey && !u.RandomAccess {
		w.mu.Unlock()
		w.cam.count(func(s *Stats) { s.Dropped++ })
		return
	}
	w.needKey = false
	w.mu.Unlock()
	if restored {
		w.cam.setLost(false)
		w.cam.log.Info("video restored")
		w.event(Event{Kind: EventVideoRestored})
	}
	select {
	case w.q <- item{unit: u}:
		w.mu.Lock()
		w.dropBurst = false
		w.mu.Unlock()
	default:
		w.mu.Lock()
		w.needKey = true
		first := !w.dropBurst
		w.dropBurst = true
		w.mu.Unlock()
		w.cam.count(func(s *Stats) { s.Dropped++ })
		if first {
			w.cam.log.Warn("recorder behind: dropping video up to the next key frame")
		}
	}
}

func (c *Camera) count(f func(*Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

func (c *Camera) setLost(v bool) { c.count(func(s *Stats) { s.LostVideo = v }) }

// ErrCertificateMismatch is returned when an RTSPS camera presents a certificate other than the pinned one:
// the camera was swapped, or someone sits between it and the recorder.
var ErrCertificateMismatch = errors.New("camera certificate does not match the pinned certificate")

// pinnedTLS accepts exactly one certificate. Chain and host name checks are replaced by the pin: the
// handshake still proves the camera holds the pinned certificate's private key.
func pinnedTLS(der []byte) *tls.Config {
	pin := bytes.Clone(der)
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate: the pin is stricter than a chain
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], pin) {
				return ErrCertificateMismatch
			}
			return nil
		},
	}
}

// redact removes the camera's password from an error text that a library may have built from a URL or a
// header, so that it can be logged.
func (c *Camera) redact(err error) error {
	if err == nil || c.cfg.Password == "" {
		return err
	}
	msg := err.Error()
	if !strings.Contains(msg, c.cfg.Password) && !strings.Contains(msg, url.QueryEscape(c.cfg.Password)) &&
		!strings.Contains(msg, url.PathEscape(c.cfg.Password)) {
		return err
	}
	msg = strings.ReplaceAll(msg, c.cfg.Password, "xxxxx")
	msg = strings.ReplaceAll(msg, url.QueryEscape(c.cfg.Password), "xxxxx")
	msg = strings.ReplaceAll(msg, url.PathEscape(c.cfg.Password), "xxxxx")
	return errors.New(msg)
}
