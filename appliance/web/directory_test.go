package web

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/authz/directory"
	"github.com/edgenvr/nvr/appliance/authz/directory/dirtest"
	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/spnego"
)

// TestDirectoryLogin is issue 10's acceptance over HTTPS: an administrator configures directory login on
// the page; a directory user signs in with the LDAPS password and TOTP and gets the operator role; curl
// --negotiate with a kinit ticket is let in (then TOTP); a ticket for another service and NTLM are
// refused; with the directory down, directory users get a clear message and the local admin still signs in.
func TestDirectoryLogin(t *testing.T) {
	dirtest.Need(t, "curl")
	slapd := dirtest.StartSlapd(t)
	kdc := dirtest.StartKDC(t, "localhost")
	var m *directory.Manager
	e := startEnv(t, func(c *Config) {
		var err error
		m, err = directory.NewManager(directory.ManagerConfig{Path: filepath.Join(t.TempDir(), "directory.json")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Directory = m
		c.Authz.SetDirectory(m)
	})
	admin := e.client("")
	adminSecret := e.adminSetup(admin, "admin", "Break-Glass-Pass-7")
	e.login(admin, "admin", "Break-Glass-Pass-7", adminSecret)

	// The administrator configures the directory on the page.
	_, body, tok := e.get(admin, "/config/directory")
	if !strings.Contains(body, `id="directory-form"`) {
		t.Fatalf("directory page: %s", body)
	}
	form := url.Values{"csrf": {tok}, "enabled": {"on"}, "kind": {"ldap"}, "url": {slapd.URL}, "ca_cert_pem": {string(slapd.CA.CertPEM)},
		"bind_dn": {dirtest.ServiceDN}, "bind_password": {dirtest.ServicePW}, "base_dn": {"ou=people," + dirtest.Suffix},
		"group_base_dn": {"ou=groups," + dirtest.Suffix}, "nested": {"on"}, "disabled_filter": {"(employeeType=disabled)"},
		"mappings":     {dirtest.Operators + " = operator\n" + dirtest.Viewers + " = viewer\n" + dirtest.Admins + " = administrator"},
		"password_via": {"ldap"}, "realm": {kdc.Realm}, "kdcs": {kdc.Addr}, "service_principal": {kdc.SPN},
		"keytab_b64": {base64.StdEncoding.EncodeToString(kdc.Keytab)}, "spnego": {"on"}, "timeout": {"3s"}}
	resp := e.post(admin, "/config/directory", form)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "saved:") {
		t.Fatalf("save: %d %s", resp.StatusCode, b)
	}
	_, body, tok = e.get(admin, "/config/directory")
	if strings.Contains(body, dirtest.ServicePW) || strings.Contains(body, base64.StdEncoding.EncodeToString(kdc.Keytab)[:16]) {
		t.Fatal("the page shows a secret")
	}
	resp = e.post(admin, "/config/directory/test", url.Values{"csrf": {tok}, "name": {"dave"}})
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`id="test-result">dave .*give roles <strong>administrator</strong>`).Match(b) {
		t.Fatalf("test lookup of dave: %s", b)
	}

	// alice signs in with her directory password (LDAPS bind) and enrols TOTP: operator rights.
	alice := e.client("127.0.0.2")
	e.enrolLogin(alice, "alice", dirtest.UserPW)
	if code, _, _ := e.get(alice, "/dashboard"); code != 200 {
		t.Fatalf("alice dashboard: %d", code)
	}
	if code, _, _ := e.get(alice, "/users"); code != http.StatusForbidden {
		t.Fatalf("alice (operator) on /users: %d", code)
	}

	if _, body, _ := e.get(admin, "/users"); !strings.Contains(body, "directory account") {
		t.Fatal("the users page does not mark alice as a directory account")
	}

	// The login page offers single sign-on.
	if _, body, _ := e.get(e.client(""), "/login"); !strings.Contains(body, `href="/login/negotiate"`) {
		t.Fatal("no single sign-on link")
	}

	// kinit + curl --negotiate: let in to the second step; then bob enrols TOTP and has a session.
	cc := kdc.Kinit(t, "bob", dirtest.UserPW)
	dir := t.TempDir()
	caFile, jarFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "cookies")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", "-sS", "--negotiate", "-u", ":", "--cacert", caFile, "-c", jarFile,
		"-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", e.origin+"/login/negotiate")
	cmd.Env = append(kdc.Env(), "KRB5CCNAME=FILE:"+cc)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "303 ") || !strings.HasSuffix(string(out), "/login/step") {
		t.Fatalf("curl --negotiate: %v %s", err, out)
	}
	bob := e.client("127.0.0.3")
	u, _ := url.Parse(e.origin)
	bob.Jar.SetCookies(u, []*http.Cookie{{Name: loginCookie, Value: jarCookie(t, jarFile, loginCookie)}})
	_, body, tok = e.get(bob, "/login/step")
	sec := regexp.MustCompile(`id="secret">([A-Z2-7]+)<`).FindStringSubmatch(body)
	if sec == nil {
		t.Fatalf("bob after SPNEGO: no enrolment step: %s", body)
	}
	code, _ := authz.TOTPCode(sec[1], e.clk.Now())
	resp = e.post(bob, "/login/code", url.Values{"csrf": {tok}, "code": {code}})
	resp.Body.Close()
	if code, _, _ := e.get(bob, "/dashboard"); code != 200 {
		t.Fatalf("bob (viewer) dashboard after single sign-on: %d", code)
	}

	// A ticket for another service of the realm is refused; NTLM is never offered or accepted.
	cl := krbClient(t, kdc, cc)
	req, _ := http.NewRequest("GET", e.origin+"/login/negotiate", nil)
	if err := spnego.SetSPNEGOHeader(cl, req, kdc.Other); err != nil {
		t.Fatal(err)
	}
	resp, err = e.client("").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "Kerberos ticket was not accepted") || hasLoginCookie(resp) {
		t.Fatalf("wrong service ticket: %d %s", resp.StatusCode, b)
	}
	req, _ = http.NewRequest("GET", e.origin+"/login/negotiate", nil)
	req.Header.Set("Authorization", "NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAF1YAAAADw==")
	resp, err = e.client("").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "NTLM is not accepted") || hasLoginCookie(resp) {
		t.Fatalf("NTLM: %d %s", resp.StatusCode, b)
	}
	resp, err = e.client("").Get(e.origin + "/login/negotiate")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ch := resp.Header.Values("WWW-Authenticate"); len(ch) != 1 || ch[0] != "Negotiate" {
		t.Fatalf("challenge: %q", ch)
	}

	// The directory down: directory users are refused with a clear message; the local admin signs in.
	slapd.Stop()
	c := e.client("127.0.0.4")
	_, _, tok = e.get(c, "/login")
	resp = e.post(c, "/login", url.Values{"csrf": {tok}, "name": {"alice"}, "password": {dirtest.UserPW}})
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "directory cannot be reached") {
		t.Fatalf("directory down: %d %s", resp.StatusCode, b)
	}
	e.login(e.client("127.0.0.5"), "admin", "Break-Glass-Pass-7", adminSecret)
}

func hasLoginCookie(resp *http.Response) bool {
	for _, c := range resp.Cookies() {
		if c.Name == loginCookie && c.Value != "" {
			return true
		}
	}
	return false
}

// jarCookie reads a cookie from curl's Netscape-format cookie jar.
func jarCookie(t *testing.T, path, name string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) == 7 && fs[5] == name {
			return fs[6]
		}
	}
	t.Fatalf("no %s cookie in curl's jar", name)
	return ""
}

func krbClient(t *testing.T, k *dirtest.KDC, cc string) *client.Client {
	t.Helper()
	ccache, err := credentials.LoadCCache(cc)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := config.Load(k.Conf)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.NewFromCCache(ccache, conf, client.DisablePAFXFAST(true))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
