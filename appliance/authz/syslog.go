package authz

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// SyslogConfig configures forwarding of the audit log to a SIEM: syslog messages in the RFC 5424 format,
// over TLS with RFC 5425 octet-counted framing.
type SyslogConfig struct {
	// Addr is the collector's host:port (RFC 5425 assigns 6514).
	Addr string
	// TLS must name the collector (ServerName) and its CA (RootCAs); a client certificate may be added.
	TLS *tls.Config
	// Hostname and AppName fill the header (defaults: the host name and "nvr").
	Hostname, AppName string
	// Queue bounds the entries waiting while the collector is unreachable (default 10000); beyond it the
	// oldest are dropped and counted, and the audit log itself keeps everything.
	Queue int
	// DialTimeout and WriteTimeout bound each connection attempt and each write (defaults 10 s).
	DialTimeout, WriteTimeout time.Duration
}

// Forwarder sends audit entries to a syslog collector. Send never blocks the audit log.
type Forwarder struct {
	cfg SyslogConfig
	log *slog.Logger
	q   chan Entry

	sent, dropped atomic.Uint64
}

// NewForwarder checks the configuration.
func NewForwarder(cfg SyslogConfig, log *slog.Logger) (*Forwarder, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" || cfg.TLS == nil {
		return nil, errors.New("syslog: Addr and TLS are required (RFC 5425 is syslog over TLS only)")
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.AppName == "" {
		cfg.AppName = "nvr"
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 10000
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	tc := cfg.TLS.Clone()
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	cfg.TLS = tc
	return &Forwarder{cfg: cfg, log: log, q: make(chan Entry, cfg.Queue)}, nil
}

// Send queues an entry; it is the [Config.Forward] hook. When the queue is full the oldest entry is dropped.
func (f *Forwarder) Send(e Entry) {
	for {
		select {
		case f.q <- e:
			return
		default:
		}
		select {
		case <-f.q:
			f.dropped.Add(1)
		default:
		}
	}
}

// Stats returns how many entries were sent and dropped.
func (f *Forwarder) Stats() (sent, dropped uint64) { return f.sent.Load(), f.dropped.Load() }

// Run connects to the collector and sends queued entries until ctx ends, reconnecting with a growing
// pause (up to a minute) after failures. An entry whose write failed is sent again on the next connection.
func (f *Forwarder) Run(ctx context.Context) error {
	pause := time.Second
	var pending *Entry
	for {
		conn, err := f.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			f.log.Warn("syslog: collector unreachable", "addr", f.cfg.Addr, "err", err, "retry_in", pause)
			if sleepCtx(ctx, pause) != nil {
				return nil
			}
			pause = min(2*pause, time.Minute)
			continue
		}
		pause = time.Second
		f.log.Info("syslog: connected", "addr", f.cfg.Addr)
		pending, err = f.pump(ctx, conn, pending)
		cerr := conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		f.log.Warn("syslog: connection lost", "addr", f.cfg.Addr, "err", errors.Join(err, cerr))
	}
}

func (f *Forwarder) dial(ctx context.Context) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: f.cfg.DialTimeout}, Config: f.cfg.TLS}
	dctx, cancel := context.WithTimeout(ctx, f.cfg.DialTimeout)
	defer cancel()
	return d.DialContext(dctx, "tcp", f.cfg.Addr)
}

func (f *Forwarder) pump(ctx context.Context, conn net.Conn, pending *Entry) (*Entry, error) {
	for {
		var e Entry
		if pending != nil {
			e, pending = *pending, nil
		} else {
			select {
			case <-ctx.Done():
				return nil, nil
			case e = <-f.q:
			}
		}
		if err := conn.SetWriteDeadline(time.Now().Add(f.cfg.WriteTimeout)); err != nil {
			return &e, err
		}
		if _, err := conn.Write(Frame(FormatRFC5424(e, f.cfg.Hostname, f.cfg.AppName))); err != nil {
			return &e, fmt.Errorf("write: %w", err)
		}
		f.sent.Add(1)
	}
}

// Frame applies RFC 5425 (RFC 6587 octet-counting) framing: "LEN SP MSG".
func Frame(msg []byte) []byte {
	return append([]byte(strconv.Itoa(len(msg))+" "), msg...)
}

// sdID is the structured-data id of audit entries; 32473 is the private enterprise number RFC 5612
// reserves for documentation, to be replaced by the project's own.
const sdID = "nvraudit@32473"

// FormatRFC5424 renders an audit entry as an RFC 5424 syslog message: facility 10 (security/authorization),
// severity notice for denials and failures and informational otherwise, MSGID the entry kind, the fields
// as structured data, and a readable text.
func FormatRFC5424(e Entry, hostname, app string) []byte {
	sev := 6
	if e.Result == "deny" || e.Result == "fail" || e.Result == "refused" {
		sev = 5
	}
	pri := 10*8 + sev
	var b strings.Builder
	fmt.Fprintf(&b, "<%d>1 %s %s %s - %s [%s", pri, e.Time.UTC().Format("2006-01-02T15:04:05.000000Z"),
		headerField(hostname, 255), headerField(app, 48), headerField(e.Kind, 32), sdID)
	for _, kv := range [][2]string{{"seq", strconv.FormatUint(e.Seq, 10)}, {"subject", e.Subject}, {"action", e.Action},
		{"object", e.Object}, {"result", e.Result}, {"reason", e.Reason}, {"source", e.Source}, {"prev", e.Prev}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, ` %s="%s"`, kv[0], sdEscape(kv[1]))
		}
	}
	b.WriteString("] \xef\xbb\xbf")
	text := fmt.Sprintf("%s %s %s: %s", e.Subject, e.Action, e.Object, e.Result)
	if e.Reason != "" {
		text += " (" + e.Reason + ")"
	}
	if e.Checkpoint != nil {
		text = fmt.Sprintf("checkpoint size %d head %s", e.Checkpoint.Size, e.Checkpoint.Head)
	}
	b.WriteString(strings.ToValidUTF8(text, "?"))
	return []byte(b.String())
}

// headerField makes a header field: printable US-ASCII without spaces, "-" when empty.
func headerField(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r > 32 && r < 127 && b.Len() < max {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// sdEscape escapes a structured-data parameter value (RFC 5424 section 6.3.3).
func sdEscape(s string) string {
	s = strings.ToValidUTF8(s, "?")
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '"', '\\', ']':
			b.WriteByte('\\')
		}
		if r == utf8.RuneError || r < 32 {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
