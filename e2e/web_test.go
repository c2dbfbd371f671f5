package e2e

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDaemonServesSetupPage: nvrd serves its HTTPS pages with the TPM-held key, sends a fresh appliance to
// the setup page, and shows the one-time setup code on the local display (the console here) but never in a
// log record or a page.
func TestDaemonServesSetupPage(t *testing.T) {
	cs := startCamsim(t, 1)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1"}, cs.Password, "-display", "console")
	nvrd := a.start()
	url := a.webURL(t)
	setup := setupCode(t, nvrd)

	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // the appliance's own certificate
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(resp.Header.Get("Location"), "/setup") {
		t.Fatalf("GET /: %s → %q, want a redirect to /setup", resp.Status, resp.Header.Get("Location"))
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatal("not TLS 1.2 or newer")
	}
	if h := resp.Header.Get("Strict-Transport-Security"); h == "" {
		t.Error("no HSTS header")
	}
	page, err := client.Get(url + "setup")
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 1<<20)
	n, _ := page.Body.Read(body)
	page.Body.Close()
	if strings.Contains(string(body[:n]), setup) {
		t.Fatal("the setup page shows the setup code")
	}
	nvrd.stop(t, 30*time.Second)
	for _, line := range strings.Split(a.allLogs(), "\n") {
		if strings.HasPrefix(line, "{") && strings.Contains(line, setup) {
			t.Fatalf("the setup code is in a log record: %s", line)
		}
	}
}

// TestDaemonStopsWhenWebCannotStart: an HTTPS address that is taken is a configuration error the daemon
// reports by stopping (it never claims to be ready without its pages).
func TestDaemonStopsWhenWebCannotStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := newAppliance(t, "", nil, "")
	args := append(append([]string(nil), a.args...), "-listen", l.Addr().String())
	p := start(t, command(t, "nvrd"), args...)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("nvrd still running with its web address taken:\n%s", tail(p.output(), 3000))
	}
	if p.err == nil || !strings.Contains(p.output(), "web server could not start") {
		t.Fatalf("nvrd exit %v, want a failure naming the web server:\n%s", p.err, tail(p.output(), 3000))
	}
}
