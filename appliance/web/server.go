package web

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures a [Server].
type Config struct {
	// Listen is the address to serve HTTPS on, such as 127.0.0.1:8443 (":0" picks a port).
	Listen string
	// Listener, if set, is used instead of listening on Listen (tests bind first to learn the port).
	Listener net.Listener
	// Authz is the access-control service; required.
	Authz *authz.Service
	// Key is the TLS private key, held by the TPM in production; required.
	Key crypto.Signer
	// Hosts are the DNS names and IP addresses the certificate names (default 127.0.0.1 and localhost).
	Hosts []string
	// Status, Recordings, Exporter, Deleter and Settings connect the pages to the appliance; nil shows
	// nothing or answers that the function is not available.
	Status     StatusSource
	Recordings Recordings
	Exporter   Exporter
	Deleter    Deleter
	Settings   ConfigSource
	// Cameras connects the camera management pages and API to the ONVIF camera manager; nil answers
	// that camera management is not available.
	Cameras *Cameras
	// Directory, if set, is the directory login configuration (LDAP/AD, Kerberos) shown and edited at
	// /config/directory.
	Directory DirectoryAdmin
	// Live, Playback and Metrics feed live view, playback and the metrics endpoint; nil answers that the
	// function is not available (the metrics endpoint then shows the web server's own figures).
	Live     LiveSource
	Playback PlaybackSource
	Metrics  MetricsSource
	// Bridge connects the bridge credential page (/bridge) and API (/api/v1/bridge) to the RTSP(S) bridge;
	// nil answers that the bridge is off.
	Bridge BridgeCredentials
	// Display shows the first-boot setup code on the local display (LCD; console or journal under make
	// run). It is never logged by this package. Required while no account exists.
	Display func(code string, expires time.Time)
	// Now is the clock (default time.Now); the authz service has its own.
	Now func() time.Time
	// Ready, if set, is called with the bound address once the server accepts connections.
	Ready func(net.Addr)
}

// Server is the HTTPS server.
type Server struct {
	cfg  Config
	log  *slog.Logger
	az   *authz.Service
	tmpl *template.Template
	cert tls.Certificate
	mux  *http.ServeMux
	// Fingerprint is the SHA-256 of the certificate's public key (SPKI), for pinning.
	fingerprint string
	stats       mediaStats
}

// New checks the configuration, makes the self-signed certificate with the TPM key and parses the pages.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Authz == nil || cfg.Key == nil {
		return nil, errors.New("web: Authz and Key are required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8443"
	}
	if len(cfg.Hosts) == 0 {
		cfg.Hosts = []string{"127.0.0.1", "localhost"}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Display == nil {
		cfg.Display = func(string, time.Time) {}
	}
	s := &Server{cfg: cfg, log: log, az: cfg.Authz}
	cert, fp, err := selfSigned(cfg.Key, cfg.Hosts, cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("web: certificate: %w", err)
	}
	s.cert, s.fingerprint = cert, fp
	t, err := template.New("").Funcs(funcs).Funcs(template.FuncMap{"roleForm": roleForm, "hasRole": hasRole}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("web: templates: %w", err)
	}
	s.tmpl = t
	s.routes()
	return s, nil
}

// selfSigned makes a certificate for hosts signed by key itself.
func selfSigned(key crypto.Signer, hosts []string, now time.Time) (tls.Certificate, string, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Edge NVR appliance", Organization: []string{"edgenvr"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, hex.EncodeToString(sum[:]), nil
}

// Certificate returns the server's certificate, for clients to pin.
func (s *Server) Certificate() *x509.Certificate { return s.cert.Leaf }

// TLSConfig is the server's TLS configuration: TLS 1.3, and TLS 1.2 with ECDHE and AEAD suites only.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{s.cert},
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384},
		NextProtos:       []string{"h2", "http/1.1"},
	}
}

// Limits of a request.
const (
	maxBody         = 64 << 10
	maxHeader       = 16 << 10
	readHeaderLimit = 5 * time.Second
	readLimit       = 30 * time.Second
	writeLimit      = 60 * time.Second
	idleLimit       = 120 * time.Second
)

// Run serves HTTPS until ctx ends, shows the setup code on the display while no account exists, and
// shuts down gracefully (waiting up to 5 s for requests in flight).
func (s *Server) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Listen); err != nil {
			return fmt.Errorf("web: listen %s: %w", s.cfg.Listen, err)
		}
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: readHeaderLimit,
		ReadTimeout:       readLimit,
		WriteTimeout:      writeLimit,
		IdleTimeout:       idleLimit,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          log.New(&errorLogWriter{log: s.log}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.log.Info("web: serving HTTPS", "addr", ln.Addr().String(), "spki_sha256", s.fingerprint)
	if s.cfg.Ready != nil {
		s.cfg.Ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	s.showSetupCode()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("web: serve: %w", err)
		case <-tick.C:
			s.showSetupCode()
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := srv.Shutdown(sctx)
			<-errc
			if err != nil {
				return fmt.Errorf("web: shutdown: %w", err)
			}
			return nil
		}
	}
}

// showSetupCode hands a new setup code to the display when one is needed.
func (s *Server) showSetupCode() {
	code, exp, fresh, err := s.az.SetupCode()
	if err != nil {
		s.log.Error("web: setup code", "err", err)
		return
	}
	if fresh {
		s.log.Info("web: no account exists: a one-time setup code is shown on the local display", "expires", exp.Format(time.RFC3339))
		s.cfg.Display(code, exp)
	}
}

// errorLogWriter sends net/http's own messages (TLS handshake errors) to the logger at debug level.
type errorLogWriter struct{ log *slog.Logger }

func (w *errorLogWriter) Write(p []byte) (int, error) {
	w.log.Debug("web: http server", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

// csp is the Content-Security-Policy of every response: no inline script or style, nothing from elsewhere.
// Video plays from blob: URLs only: the MediaSource the page's own script feeds (live view, playback).
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src blob:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Handler returns the server's handler with its security headers and limits.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin") // "no-referrer" would make browsers send "Origin: null" on our own forms
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=()")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		r.Body = http.MaxBytesReader(w, r.Body, bodyLimit(r, s.cfg.Cameras))
		rw := &statusWriter{ResponseWriter: w, code: 200}
		start := time.Now()
		s.mux.ServeHTTP(rw, r)
		// The path only: queries never carry secrets, but they are not needed here either.
		s.log.Debug("web: request", "method", r.Method, "path", r.URL.Path, "status", rw.code,
			"source", source(r), "took", time.Since(start).Round(time.Microsecond))
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func staticHandler() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.StripPrefix("/static/", http.FileServerFS(sub))
}

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"bytes": func(n any) string {
		var f float64
		switch v := n.(type) {
		case int64:
			f = float64(v)
		case uint64:
			f = float64(v)
		case int:
			f = float64(v)
		}
		units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
		i := 0
		for f >= 1024 && i < len(units)-1 {
			f /= 1024
			i++
		}
		return fmt.Sprintf("%.1f %s", f, units[i])
	},
	"join": strings.Join,
	"pct":  func(d DiskStatus) string { return fmt.Sprintf("%.0f%%", d.Percent()) },
}
