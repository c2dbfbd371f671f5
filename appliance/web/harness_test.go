package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

// clock follows real time plus an offset that tests move forward; Sleep moves it instead of waiting, so
// progressive delays are measured without being waited for.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Offset returns how far the clock was moved (by Advance and Sleep).
func (c *clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

func (c *clock) Sleep(_ context.Context, d time.Duration) error {
	c.Advance(d)
	return nil
}

// lockedBuffer collects log output from several goroutines.
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

// fakeAppliance stands in for the appliance's status, index and exporter in these web tests; the
// integrator wires the real ones (see docs/README-access.md).
type fakeAppliance struct {
	mu      sync.Mutex
	exports []ExportRequest
	deletes []DeleteRequest
}

func (f *fakeAppliance) Delete(_ context.Context, req DeleteRequest) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, req)
	return 3, nil
}

func (f *fakeAppliance) Deletes() []DeleteRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]DeleteRequest(nil), f.deletes...)
}

func (f *fakeAppliance) Config() []ConfigItem {
	return []ConfigItem{{Section: "recording", Name: "segment", Value: "60s"}, {Section: "web", Name: "listen", Value: "127.0.0.1:8443"}}
}

func (f *fakeAppliance) Dashboard() Dashboard {
	now := time.Now()
	return Dashboard{
		Cameras: []CameraStatus{
			{Name: "cam1", Recording: true, State: "recording", LastWrite: now.Add(-400 * time.Millisecond), Bytes: 734003200},
			{Name: "cam2", Recording: true, State: "recording", LastWrite: now.Add(-700 * time.Millisecond), Bytes: 512000000},
			{Name: "gate", Recording: false, State: "video loss", LastWrite: now.Add(-42 * time.Second), Bytes: 91000000},
		},
		Disk:   DiskStatus{Path: "/var/lib/nvr", UsedBytes: 412 << 30, TotalBytes: 1800 << 30},
		Alarms: []Alarm{{Time: now.Add(-42 * time.Second), Camera: "gate", Kind: "video loss", Text: "no frame for 5 s"}},
	}
}

func (f *fakeAppliance) Segments(camera string, from, to time.Time) ([]Segment, error) {
	var out []Segment
	for t := from.Truncate(time.Minute); t.Before(to) && len(out) < 5; t = t.Add(time.Minute) {
		out = append(out, Segment{Start: t, End: t.Add(time.Minute), Bytes: 3 << 20})
	}
	return out, nil
}

func (f *fakeAppliance) Export(_ context.Context, req ExportRequest, w io.Writer) error {
	f.mu.Lock()
	f.exports = append(f.exports, req)
	f.mu.Unlock()
	_, err := fmt.Fprintf(w, "export of %s from %s to %s\n", req.Camera, req.From.Format(time.RFC3339), req.To.Format(time.RFC3339))
	return err
}

func (f *fakeAppliance) Exports() []ExportRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ExportRequest(nil), f.exports...)
}

// env is a running web server with its authz service, on a real swtpm TLS key and a temp data dir.
type env struct {
	t       testing.TB
	srv     *Server
	az      *authz.Service
	clk     *clock
	app     *fakeAppliance
	logs    *lockedBuffer
	console *lockedBuffer
	addr    string // host:port
	origin  string // https://localhost:port
	pool    *x509.CertPool
	tlsKey  *tpm.TLSKey
	cancel  context.CancelFunc
}

var testArgon2 = authz.Argon2Params{Time: 1, Memory: 256, Threads: 1}

// startEnv starts the server; opts adjust its Config (tests of optional parts).
func startEnv(t testing.TB, opts ...func(*Config)) *env {
	t.Helper()
	dev := swtpmtest.Start(t)
	logs, console := &lockedBuffer{}, &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tp, err := tpm.Open(dev, log.With("part", "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := tp.TLSKey()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	origin := fmt.Sprintf("https://localhost:%d", port)
	clk := &clock{}
	az, err := authz.New(authz.Config{DataDir: t.TempDir(), Signer: key, Sealer: tp, Now: clk.Now, Sleep: clk.Sleep, Argon2: testArgon2,
		RPID: "localhost", RPOrigins: []string{origin}}, log.With("part", "authz"))
	if err != nil {
		t.Fatal(err)
	}
	app := &fakeAppliance{}
	cfg := Config{Listener: ln, Authz: az, Key: key, Status: app, Recordings: app, Exporter: app, Deleter: app, Settings: app, Now: clk.Now,
		Display: func(code string, exp time.Time) {
			fmt.Fprintf(console, "SETUP CODE %s (valid until %s)\n", code, exp.Format(time.RFC3339))
		}}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg, log.With("part", "web"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- srv.Run(ctx) }()
	go func() { done <- az.Run(ctx) }()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	e := &env{t: t, srv: srv, az: az, clk: clk, app: app, logs: logs, console: console, addr: ln.Addr().String(),
		origin: origin, pool: pool, tlsKey: key, cancel: cancel}
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
		if err := az.Close(); err != nil {
			t.Errorf("authz close: %v", err)
		}
		if err := key.Close(); err != nil {
			t.Errorf("tls key close: %v", err)
		}
		if err := tp.Close(); err != nil {
			t.Errorf("tpm close: %v", err)
		}
	})
	e.waitFor(10*time.Second, "the server to answer", func() bool {
		c := e.client("")
		resp, err := c.Get(e.origin + "/login")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return e
}

// waitFor polls cond until it holds or the deadline passes.
func (e *env) waitFor(d time.Duration, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var setupCodeRE = regexp.MustCompile(`SETUP CODE ([A-Z0-9-]{14})`)

// setupCode reads the setup code from the console, as a person reads the LCD.
func (e *env) setupCode() string {
	e.t.Helper()
	var code string
	e.waitFor(10*time.Second, "the setup code on the console", func() bool {
		m := setupCodeRE.FindAllStringSubmatch(e.console.String(), -1)
		if len(m) == 0 {
			return false
		}
		code = m[len(m)-1][1]
		return true
	})
	return code
}

// client returns an HTTPS client pinned to the server's certificate, with a cookie jar, dialing from
// the local address laddr ("" for any): the loopback network lets tests come from 127.0.0.x.
func (e *env) client(laddr string) *http.Client {
	jar, _ := cookiejar.New(nil)
	d := &net.Dialer{Timeout: 5 * time.Second}
	if laddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(laddr)}
	}
	return &http.Client{
		Jar:     jar,
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: e.pool, ServerName: "localhost"},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, e.addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// get fetches a page and returns its body and the CSRF token it carries.
func (e *env) get(c *http.Client, path string) (int, string, string) {
	e.t.Helper()
	resp, err := c.Get(e.origin + path)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	tok := ""
	if m := csrfRE.FindStringSubmatch(string(b)); m != nil {
		tok = m[1]
	}
	return resp.StatusCode, string(b), tok
}

func (e *env) post(c *http.Client, path string, f url.Values) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.origin+path, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.origin)
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// login signs a user in over HTTP (password then TOTP) and returns the session token.
func (e *env) login(c *http.Client, name, password, secret string) string {
	e.t.Helper()
	_, _, tok := e.get(c, "/login")
	resp := e.post(c, "/login", url.Values{"csrf": {tok}, "name": {name}, "password": {password}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("login %s: status %d", name, resp.StatusCode)
	}
	e.clk.Advance(31 * time.Second) // a fresh TOTP step: codes are single-use
	code, _ := authz.TOTPCode(secret, e.clk.Now())
	resp = e.post(c, "/login/code", url.Values{"csrf": {tok}, "code": {code}})
	resp.Body.Close()
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie && ck.Value != "" {
			return ck.Value
		}
	}
	e.t.Fatalf("login %s: no session (status %d)", name, resp.StatusCode)
	return ""
}

// adminSetup runs first-boot setup over HTTP and returns the admin's TOTP secret.
func (e *env) adminSetup(c *http.Client, name, password string) string {
	e.t.Helper()
	_, _, tok := e.get(c, "/setup")
	resp := e.post(c, "/setup", url.Values{"csrf": {tok}, "code": {e.setupCode()}, "name": {name}, "password": {password}, "password2": {password}})
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="enrol" value="([^"]+)"`).FindStringSubmatch(string(b))
	s := regexp.MustCompile(`id="secret">([A-Z2-7]+)<`).FindStringSubmatch(string(b))
	if m == nil || s == nil {
		e.t.Fatalf("setup: no enrolment in page (status %d)", resp.StatusCode)
	}
	code, _ := authz.TOTPCode(s[1], e.clk.Now())
	resp = e.post(c, "/setup/confirm", url.Values{"csrf": {tok}, "enrol": {m[1]}, "totp": {code}})
	resp.Body.Close()
	if resp.StatusCode != 200 || e.az.NeedsSetup() {
		e.t.Fatalf("setup confirm: status %d", resp.StatusCode)
	}
	return s[1]
}

// newGet makes a GET request carrying a session cookie, as a script calling the API directly would.
func newGet(u, session string) (*http.Request, error) {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return nil, err
	}
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: session})
	return req, nil
}

// enrolLogin signs a new user in over HTTP, enrolling TOTP on the way; it returns the TOTP secret.
func (e *env) enrolLogin(c *http.Client, name, password string) string {
	e.t.Helper()
	_, _, tok := e.get(c, "/login")
	resp := e.post(c, "/login", url.Values{"csrf": {tok}, "name": {name}, "password": {password}})
	resp.Body.Close()
	_, body, _ := e.get(c, "/login/step")
	m := regexp.MustCompile(`id="secret">([A-Z2-7]+)<`).FindStringSubmatch(body)
	if m == nil {
		e.t.Fatalf("enrol %s: no secret on the page", name)
	}
	code, _ := authz.TOTPCode(m[1], e.clk.Now())
	resp = e.post(c, "/login/code", url.Values{"csrf": {tok}, "code": {code}})
	resp.Body.Close()
	if resp.StatusCode != 200 { // the recovery codes page
		e.t.Fatalf("enrol %s: status %d", name, resp.StatusCode)
	}
	return m[1]
}
