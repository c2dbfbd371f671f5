package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testCA makes a CA and a server certificate for 127.0.0.1, written as PEM files into dir.
func testCA(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test SIEM CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	writePEM(t, filepath.Join(dir, "cert.pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, "key.pem"), "PRIVATE KEY", kder)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSyslogToRsyslog forwards audit entries over TLS to rsyslog (imtcp with GnuTLS), a SIEM-side peer
// nobody here wrote, and reads what it stored.
func TestSyslogToRsyslog(t *testing.T) {
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		t.Fatalf("rsyslogd not found: make test installs rsyslog and rsyslog-gnutls (scripts/deps.sh): %v", err)
	}
	dir := t.TempDir()
	pool := testCA(t, dir)
	port := freePort(t)
	out := filepath.Join(dir, "out.log")
	conf := fmt.Sprintf(`global(workDirectory=%q defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="%d" address="127.0.0.1")
action(type="omfile" file=%q template="RSYSLOG_SyslogProtocol23Format")
`, dir, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), port, out)
	cf := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, "rsyslog.pid"))
	var outb lockedBuf
	cmd.Stdout, cmd.Stderr = &outb, &outb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	waitUntil(t, 15*time.Second, "rsyslog to listen", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	fwd, err := NewForwarder(SyslogConfig{Addr: fmt.Sprintf("127.0.0.1:%d", port), TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		Hostname: "nvr-test", Queue: 100}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := New(Config{DataDir: t.TempDir(), Signer: key, Argon2: testArgon2, Forward: fwd.Send}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder: %v", err)
		}
	}()
	s.Decide(Request{Subject: Subject{User: "mallory"}, Action: Export, Camera: "cam1", From: time.Now(), Source: "192.0.2.7"})
	s.Event(Subject{User: "admin"}, "user.create", "account/x", "ok", `quote " bracket ] backslash \`, "10.0.0.1")
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	var got string
	waitUntil(t, 20*time.Second, "three messages in rsyslog's file", func() bool {
		b, _ := os.ReadFile(out)
		got = string(b)
		return strings.Count(got, "\n") >= 3
	})
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if !strings.HasPrefix(lines[0], "<85>1 ") || !strings.Contains(lines[0], " nvr-test nvr - decision [nvraudit@32473 seq=\"1\" subject=\"mallory\" action=\"camera.export\"") ||
		!strings.Contains(lines[0], `result="deny" reason="no such account" source="192.0.2.7"`) {
		t.Errorf("decision as stored by rsyslog: %s", lines[0])
	}
	if !strings.HasPrefix(lines[1], "<86>1 ") || !strings.Contains(lines[1], `reason="quote \" bracket \] backslash \\"`) {
		t.Errorf("event as stored by rsyslog: %s", lines[1])
	}
	if !strings.Contains(lines[2], " checkpoint ") {
		t.Errorf("checkpoint as stored by rsyslog: %s", lines[2])
	}
	if sent, dropped := fwd.Stats(); sent != 3 || dropped != 0 {
		t.Errorf("sent %d dropped %d", sent, dropped)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedBuf struct {
	mu  sync.Mutex
	buf []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	return len(p), nil
}

func TestFormatRFC5424(t *testing.T) {
	e := Entry{Seq: 7, Time: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), Kind: "decision", Subject: "a b", Action: "camera.live",
		Object: "camera/cam1", Result: "allow", Reason: "granted", Source: "10.0.0.1", Prev: "ab"}
	got := string(FormatRFC5424(e, "host name", ""))
	want := "<86>1 2026-11-23T10:00:00.000000Z hostname - - decision [nvraudit@32473 seq=\"7\" subject=\"a b\" action=\"camera.live\" object=\"camera/cam1\" result=\"allow\" reason=\"granted\" source=\"10.0.0.1\" prev=\"ab\"] \ufeffa b camera.live camera/cam1: allow (granted)"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if f := string(Frame([]byte("hello"))); f != "5 hello" {
		t.Errorf("frame %q", f)
	}
}
