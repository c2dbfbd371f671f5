package web

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/storage"
	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/internal/testpeer"
)

// browser starts Debian's headless Chromium, trusting only the server's public key (SPKI pin), and
// returns a context for the browser; it is stopped by PID when the test ends.
func (e *env) browser() context.Context {
	e.t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		e.t.Fatalf("chromium not found: make test installs it (scripts/deps.sh): %v", err)
	}
	spki := sha256.Sum256(e.srv.Certificate().RawSubjectPublicKeyInfo)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(e.t.TempDir()),
		chromedp.WindowSize(1280, 860),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		e.t.Fatalf("start chromium: %v", err)
	}
	proc := chromedp.FromContext(bctx).Browser.Process()
	e.t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		if proc != nil {
			if err := proc.Kill(); err != nil && !strings.Contains(err.Error(), "process already finished") {
				e.t.Logf("kill chromium pid %d: %v", proc.Pid, err)
			}
		}
	})
	return bctx
}

// tab opens a page in a new browser context (its own cookies), like a separate person's browser.
func (e *env) tab(bctx context.Context) context.Context {
	e.t.Helper()
	ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	e.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		e.t.Fatalf("new browser context: %v", err)
	}
	return ctx
}

func (e *env) do(ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	e.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		body, _ := chromedp.Run(dctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
		e.t.Fatalf("%s: %v (at %s: %.400q)", what, err, loc, body)
	}
}

func (e *env) text(ctx context.Context, sel string) string {
	e.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		e.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (e *env) location(ctx context.Context) string {
	e.t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// screenshot saves a PNG of the page for the README (docs/screenshots/) when NVR_SCREENSHOTS is set or
// the file is missing, else into the test's temp dir.
func (e *env) screenshot(ctx context.Context, name string) {
	e.t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		e.t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := filepath.Join(testpeer.Root(e.t), "docs", "screenshots")
	path := filepath.Join(dir, name+".png")
	if _, err := os.Stat(path); err == nil && os.Getenv("NVR_SCREENSHOTS") == "" {
		path = filepath.Join(e.t.TempDir(), name+".png")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) cookies(ctx context.Context) []string {
	e.t.Helper()
	res, err := chromedp.CallBrowser(ctx, storage.GetCookies, storage.GetCookiesParams{BrowserContextID: chromedp.FromContext(ctx).BrowserContextID})
	if err != nil {
		e.t.Fatalf("cookies: %v", err)
	}
	var out []string
	for _, c := range res.Cookies {
		if c.Name == sessionCookie || c.Name == loginCookie {
			out = append(out, c.Value)
		}
	}
	return out
}

// browserLogin signs in through the pages: password, then the code computed from secret.
func (e *env) browserLogin(ctx context.Context, name, password, secret string) {
	e.t.Helper()
	e.do(ctx, "login page "+name,
		chromedp.Navigate(e.origin+"/login"),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("submit")),
		chromedp.WaitVisible(chromedp.ID("code")),
	)
	e.clk.Advance(31 * time.Second)
	code, _ := authz.TOTPCode(secret, e.clk.Now())
	e.do(ctx, "code "+name, chromedp.SendKeys(chromedp.ID("code"), code), chromedp.Click(chromedp.ID("submit")),
		chromedp.WaitVisible(chromedp.ID("cameras")))
}

var secretRE = regexp.MustCompile(`^[A-Z2-7]{16,}$`)

// TestBrowser walks the acceptance flows in Chromium: setup with the code from the console, login with
// password and TOTP, a viewer's denials (camera, schedule, recording age) in the pages and the API, dual
// authorization of a login and of an export in two browser contexts, a security key, and no secret in
// any log.
func TestBrowser(t *testing.T) {
	e := startEnv(t)
	b := e.browser()
	var secrets []string

	// Setup: the code is read from the console, as from the LCD.
	adminCtx := e.tab(b)
	e.do(adminCtx, "setup page", chromedp.Navigate(e.origin+"/"), chromedp.WaitVisible(chromedp.ID("code")))
	if !strings.HasSuffix(e.location(adminCtx), "/setup") {
		t.Fatalf("first visit went to %s, not /setup", e.location(adminCtx))
	}
	code := e.setupCode()
	secrets = append(secrets, code, adminPassword)
	e.do(adminCtx, "fill setup",
		chromedp.SendKeys(chromedp.ID("code"), code),
		chromedp.SendKeys(chromedp.ID("name"), "admin"),
		chromedp.SendKeys(chromedp.ID("password"), adminPassword),
		chromedp.SendKeys(chromedp.ID("password2"), adminPassword),
	)
	e.screenshot(adminCtx, "setup")
	e.do(adminCtx, "submit setup", chromedp.Click(chromedp.ID("submit")), chromedp.WaitVisible(chromedp.ID("secret")))
	adminSecret := e.text(adminCtx, "#secret")
	if !secretRE.MatchString(adminSecret) {
		t.Fatalf("TOTP secret %q", adminSecret)
	}
	secrets = append(secrets, adminSecret)
	totp, _ := authz.TOTPCode(adminSecret, e.clk.Now())
	e.do(adminCtx, "confirm TOTP", chromedp.SendKeys(chromedp.ID("totp"), totp), chromedp.Click(chromedp.ID("submit")),
		chromedp.WaitVisible(chromedp.ID("recovery")))
	secrets = append(secrets, strings.Fields(e.text(adminCtx, "#recovery"))...)

	// Login with password and TOTP.
	e.do(adminCtx, "login page", chromedp.Navigate(e.origin+"/login"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "admin"))
	e.screenshot(adminCtx, "login")
	e.browserLogin(adminCtx, "admin", adminPassword, adminSecret)
	e.do(adminCtx, "dashboard", chromedp.WaitVisible(chromedp.ID("cameras")))
	if got := e.text(adminCtx, "#cameras"); !strings.Contains(got, "cam1") || !strings.Contains(got, "video loss") {
		t.Errorf("dashboard cameras: %q", got)
	}
	e.screenshot(adminCtx, "dashboard")

	// A viewer restricted to cam1, to a schedule window around now, and to recordings of the last 2 hours.
	admin := authz.Subject{User: "admin", Via: "session"}
	now := e.clk.Now().UTC()
	m := now.Hour()*60 + now.Minute()
	win := authz.Window{Day: now.Weekday(), From: max(0, m-60), To: min(24*60, m+10)}
	if m+10 >= 24*60 { // keep the test valid just before midnight
		e.clk.Advance(30 * time.Minute)
		now = e.clk.Now().UTC()
		m = now.Hour()*60 + now.Minute()
		win = authz.Window{Day: now.Weekday(), From: 0, To: m + 10}
	}
	if err := e.az.PutRole(admin, authz.Role{Name: "cam1-viewer", Cameras: map[string][]authz.Action{"cam1": {authz.Live, authz.Playback}},
		System: []authz.Action{authz.ViewStatus}, Schedule: &authz.Schedule{Windows: []authz.Window{win}}, MaxRecordingAge: 2 * time.Hour}, ""); err != nil {
		t.Fatal(err)
	}
	const viewerPassword = "plum orchard 31 sunrise"
	secrets = append(secrets, viewerPassword)
	if err := e.az.CreateUser(admin, authz.NewUser{Name: "viewer1", Password: viewerPassword, Roles: []string{"cam1-viewer"}}, ""); err != nil {
		t.Fatal(err)
	}
	viewerCtx := e.tab(b)
	e.do(viewerCtx, "viewer login", chromedp.Navigate(e.origin+"/login"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "viewer1"), chromedp.SendKeys(chromedp.ID("password"), viewerPassword),
		chromedp.Click(chromedp.ID("submit")), chromedp.WaitVisible(chromedp.ID("secret")))
	viewerSecret := e.text(viewerCtx, "#secret")
	secrets = append(secrets, viewerSecret)
	vc, _ := authz.TOTPCode(viewerSecret, e.clk.Now())
	e.do(viewerCtx, "viewer enrol", chromedp.SendKeys(chromedp.ID("code"), vc), chromedp.Click(chromedp.ID("submit")),
		chromedp.WaitVisible(chromedp.ID("continue")), chromedp.Click(chromedp.ID("continue")), chromedp.WaitVisible(chromedp.ID("cameras")))
	viewerTokens := e.cookies(viewerCtx)
	if len(viewerTokens) != 1 {
		t.Fatalf("viewer cookies: %d", len(viewerTokens))
	}
	secrets = append(secrets, viewerTokens...)
	// Navigation hides what the viewer may not open.
	if html, _ := chromedp.Run(viewerCtx, chromedp.OuterHTML(chromedp.CSS("header"))); strings.Contains(html, "/users") || strings.Contains(html, "/audit") {
		t.Error("viewer sees admin navigation")
	}
	oldFrom := now.Add(-5 * time.Hour).Format("2006-01-02T15:04")
	for _, tc := range []struct{ path, want string }{
		{"/cameras/cam1", ""},
		{"/cameras/cam2", "denied: no role grants camera.playback on camera cam2"},
		{"/cameras/cam1?from=" + oldFrom, "denied: recording older than the 2h0m0s limit of role cam1-viewer"},
		{"/users", "denied: no role grants system.users"},
		{"/audit", "denied: no role grants system.audit"},
	} {
		e.do(viewerCtx, "viewer "+tc.path, chromedp.Navigate(e.origin+tc.path), chromedp.WaitVisible(chromedp.CSS("main")))
		body := e.text(viewerCtx, "main")
		if tc.want == "" && strings.Contains(body, "denied") || tc.want != "" && !strings.Contains(body, tc.want) {
			t.Errorf("viewer %s: page says %q, want %q", tc.path, body, tc.want)
		}
	}
	// The same denials when the API is called directly with the viewer's session.
	c := e.client("")
	apiGet := func(path string) (int, string) {
		req, _ := newGet(e.origin+path, viewerTokens[0])
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		return resp.StatusCode, string(buf[:n])
	}
	oldRFC := now.Add(-5 * time.Hour).Format(time.RFC3339)
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/api/v1/cameras/cam1/live", 200, ""},
		{"/api/v1/cameras/cam2/live", 403, "no role grants camera.live on camera cam2"},
		{"/api/v1/cameras/cam1/recordings?from=" + oldRFC, 403, "older than"},
	} {
		if code, body := apiGet(tc.path); code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("API %s: %d %s", tc.path, code, body)
		}
	}
	// Outside the schedule: 11 minutes later the window is over (the session is not yet idle).
	e.clk.Advance(11 * time.Minute)
	e.do(viewerCtx, "viewer out of schedule", chromedp.Navigate(e.origin+"/cameras/cam1"), chromedp.WaitVisible(chromedp.CSS("main")))
	if body := e.text(viewerCtx, "main"); !strings.Contains(body, "outside the schedule of role cam1-viewer") {
		t.Errorf("outside schedule page: %q", body)
	}
	if code, body := apiGet("/api/v1/cameras/cam1/live"); code != 403 || !strings.Contains(body, "outside the schedule") {
		t.Errorf("outside schedule API: %d %s", code, body)
	}
	for _, want := range []string{"on camera cam2", "older than the 2h0m0s limit", "outside the schedule of role cam1-viewer"} {
		found := false
		es, _ := e.az.AuditEntries(authz.AuditFilter{Subject: "viewer1", Result: "deny", Limit: 100})
		for _, en := range es {
			if strings.Contains(en.Reason, want) && en.Source != "" && strings.HasPrefix(en.Subject, "viewer1") {
				found = true
			}
		}
		if !found {
			t.Errorf("no audited denial %q", want)
		}
	}

	// Dual authorization of a login: op's screen, the admin types their own credentials into it.
	const opPassword = "granite falcon 64 meadow"
	secrets = append(secrets, opPassword)
	if err := e.az.CreateUser(admin, authz.NewUser{Name: "op", Password: opPassword, Roles: []string{"operator"}, DualAuth: true}, ""); err != nil {
		t.Fatal(err)
	}
	opCtx := e.tab(b)
	e.do(opCtx, "op login", chromedp.Navigate(e.origin+"/login"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "op"), chromedp.SendKeys(chromedp.ID("password"), opPassword),
		chromedp.Click(chromedp.ID("submit")), chromedp.WaitVisible(chromedp.ID("secret")))
	opSecret := e.text(opCtx, "#secret")
	secrets = append(secrets, opSecret)
	oc, _ := authz.TOTPCode(opSecret, e.clk.Now())
	e.do(opCtx, "op enrol", chromedp.SendKeys(chromedp.ID("code"), oc), chromedp.Click(chromedp.ID("submit")),
		chromedp.WaitVisible(chromedp.ID("approval-needed")))
	if toks := e.cookies(opCtx); len(toks) != 1 || len(e.sessionsOf("op")) != 0 {
		t.Fatalf("op has a session before approval")
	}
	e.clk.Advance(31 * time.Second)
	ac, _ := authz.TOTPCode(adminSecret, e.clk.Now())
	e.do(opCtx, "approve op login", chromedp.SendKeys(chromedp.ID("approver"), "admin"),
		chromedp.SendKeys(chromedp.ID("approver_password"), adminPassword), chromedp.SendKeys(chromedp.ID("approver_code"), ac),
		chromedp.Click(chromedp.ID("approve")), chromedp.WaitVisible(chromedp.ID("cameras")))
	if len(e.sessionsOf("op")) != 1 {
		t.Fatal("op has no session after approval")
	}
	secrets = append(secrets, e.cookies(opCtx)...)

	// Dual authorization of an export: op asks, the admin approves on op's screen, op downloads.
	e.do(opCtx, "op export", chromedp.Navigate(e.origin+"/cameras/cam1"), chromedp.WaitVisible(chromedp.ID("reason")),
		chromedp.SendKeys(chromedp.ID("reason"), "incident 2026-117"), chromedp.Click(chromedp.ID("export")),
		chromedp.WaitVisible(chromedp.ID("approver")))
	if !strings.Contains(e.text(opCtx, "#approval-request"), "incident 2026-117") {
		t.Error("approval page lacks the reason")
	}
	// Op cannot approve their own export.
	e.clk.Advance(31 * time.Second)
	oc, _ = authz.TOTPCode(opSecret, e.clk.Now())
	e.do(opCtx, "self approval", chromedp.SendKeys(chromedp.ID("approver"), "op"),
		chromedp.SendKeys(chromedp.ID("approver_password"), opPassword), chromedp.SendKeys(chromedp.ID("approver_code"), oc),
		chromedp.Click(chromedp.ID("approve")), chromedp.WaitVisible(chromedp.ID("error")))
	if len(e.app.Exports()) != 0 {
		t.Fatal("exported before approval")
	}
	ac, _ = authz.TOTPCode(adminSecret, e.clk.Now())
	e.do(opCtx, "approve export", chromedp.SendKeys(chromedp.ID("approver"), "admin"),
		chromedp.SendKeys(chromedp.ID("approver_password"), adminPassword), chromedp.SendKeys(chromedp.ID("approver_code"), ac),
		chromedp.Click(chromedp.ID("approve")), chromedp.WaitVisible(chromedp.ID("download")), chromedp.Click(chromedp.ID("download")))
	e.waitFor(15*time.Second, "the export", func() bool { return len(e.app.Exports()) == 1 })
	if x := e.app.Exports()[0]; x.User != "op" || x.ApprovedBy != "admin" || x.Reason != "incident 2026-117" || x.Camera != "cam1" {
		t.Errorf("export request: %+v", x)
	}

	// The admin, in their own browser, sees both approvals in the audit log.
	e.browserLogin(adminCtx, "admin", adminPassword, adminSecret)
	e.do(adminCtx, "audit page", chromedp.Navigate(e.origin+"/audit?action=approve"), chromedp.WaitVisible(chromedp.ID("audit")))
	audit := e.text(adminCtx, "#audit")
	if !strings.Contains(audit, "dual authorization of a login") || !strings.Contains(audit, "dual authorization of camera.export requested by op") {
		t.Errorf("audit page lacks the approvals: %q", audit)
	}
	secrets = append(secrets, e.cookies(adminCtx)...)

	// A security key (Chromium's virtual authenticator) enrolled by the admin, then used to sign in.
	e.securityKey(b, adminPassword, adminSecret)

	// No secret in any log line of all of the above.
	logs := e.logs.String()
	if !strings.Contains(logs, "web: request") {
		t.Fatal("no request was logged: the check below would prove nothing")
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("a secret (%d characters) is in the log", len(s))
		}
	}
	if strings.Contains(logs, code) || strings.Contains(logs, strings.ReplaceAll(code, "-", "")) {
		t.Error("the setup code is in the log")
	}
}

func (e *env) sessionsOf(user string) []authz.Session {
	var out []authz.Session
	for _, s := range e.az.Sessions() {
		if s.User == user {
			out = append(out, s)
		}
	}
	return out
}

// securityKey enrols a WebAuthn key in a fresh context with a virtual authenticator and signs in with it.
func (e *env) securityKey(b context.Context, password, secret string) {
	e.t.Helper()
	ctx := e.tab(b)
	if _, err := chromedp.Call(ctx, cdpwebauthn.Enable, cdpwebauthn.EnableParams{}); err != nil {
		e.t.Fatalf("webauthn enable: %v", err)
	}
	if _, err := chromedp.Call(ctx, cdpwebauthn.AddVirtualAuthenticator, cdpwebauthn.AddVirtualAuthenticatorParams{
		Options: &cdpwebauthn.VirtualAuthenticatorOptions{Protocol: cdpwebauthn.AuthenticatorProtocolCtap2,
			Transport: cdpwebauthn.AuthenticatorTransportUsb, HasUserVerification: true, IsUserVerified: true,
			AutomaticPresenceSimulation: true}}); err != nil {
		e.t.Fatalf("virtual authenticator: %v", err)
	}
	e.browserLogin(ctx, "admin", password, secret)
	e.do(ctx, "register key", chromedp.WaitVisible(chromedp.ID("cameras")), chromedp.Navigate(e.origin+"/account"),
		chromedp.WaitVisible(chromedp.ID("webauthn-register")), chromedp.Click(chromedp.ID("webauthn-register")))
	e.waitFor(15*time.Second, "the security key", func() bool {
		u, err := e.az.User("admin")
		return err == nil && u.HasWebAuthn()
	})
	e.do(ctx, "sign out", chromedp.WaitVisible(chromedp.ID("logout")), chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("name")))
	e.do(ctx, "key login", chromedp.SendKeys(chromedp.ID("name"), "admin"), chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("submit")), chromedp.WaitVisible(chromedp.ID("webauthn-login")),
		chromedp.Click(chromedp.ID("webauthn-login")), chromedp.WaitVisible(chromedp.ID("cameras")))
	es, _ := e.az.AuditEntries(authz.AuditFilter{Action: "login.second-factor", Limit: 5})
	if len(es) == 0 || es[0].Reason != "security key" {
		e.t.Errorf("security key login not audited: %+v", es)
	}
}
