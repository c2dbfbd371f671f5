package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

const adminPassword = "amber lighthouse 7 quartz"

func TestHeadersCookiesCSRFAndSetup(t *testing.T) {
	e := startEnv(t)
	c := e.client("")
	code, body, tok := e.get(c, "/setup")
	if code != 200 || tok == "" {
		t.Fatalf("setup page: %d", code)
	}
	setup := e.setupCode()
	if strings.Contains(body, setup) {
		t.Fatal("the setup code is in the page")
	}
	resp, err := c.Get(e.origin + "/setup")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	for k, want := range map[string]string{
		"Strict-Transport-Security": "max-age=63072000",
		"Content-Security-Policy":   "script-src 'self'",
		"X-Content-Type-Options":    "nosniff",
		"X-Frame-Options":           "DENY",
		"Cache-Control":             "no-store",
	} {
		if !strings.Contains(h.Get(k), want) {
			t.Errorf("%s = %q, want %q", k, h.Get(k), want)
		}
	}
	if strings.Contains(h.Get("Content-Security-Policy"), "unsafe-inline") {
		t.Error("CSP allows inline script")
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " on") && strings.Contains(body, "onclick") {
		t.Error("inline script in page")
	}
	// A form without the CSRF token, or from another origin, is refused.
	resp = e.post(c, "/setup", url.Values{"code": {setup}, "name": {"admin"}, "password": {adminPassword}, "password2": {adminPassword}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("setup without CSRF: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", e.origin+"/setup", strings.NewReader(url.Values{"csrf": {tok}, "code": {setup}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin setup: %d", resp.StatusCode)
	}
	// Request size limit.
	big := strings.Repeat("a", 100<<10)
	resp = e.post(c, "/setup", url.Values{"csrf": {tok}, "code": {big}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("oversized form: %d", resp.StatusCode)
	}
	// A short or common password is refused.
	for _, pw := range []string{"short", "password1234"} {
		resp = e.post(c, "/setup", url.Values{"csrf": {tok}, "code": {setup}, "name": {"admin"}, "password": {pw}, "password2": {pw}})
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "password refused") {
			t.Errorf("password %q: %d", pw, resp.StatusCode)
		}
	}
	secret := e.adminSetup(c, "admin", adminPassword)
	// The code expired with the setup.
	_, _, tok = e.get(c, "/login")
	resp = e.post(c, "/setup", url.Values{"csrf": {tok}, "code": {setup}, "name": {"evil"}, "password": {adminPassword}, "password2": {adminPassword}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(mustUsers(t, e)) != 1 {
		t.Errorf("setup code reusable: %d", resp.StatusCode)
	}
	sess := e.login(c, "admin", adminPassword, secret)
	u, _ := url.Parse(e.origin)
	var got *http.Cookie
	resp, _ = c.Get(e.origin + "/dashboard")
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("dashboard: %d", resp.StatusCode)
	}
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == sessionCookie {
			got = ck
		}
	}
	if got == nil || got.Value != sess {
		t.Fatal("session cookie not kept")
	}
	// Set-Cookie attributes, seen on a fresh login.
	c2 := e.client("")
	_, _, tok2 := e.get(c2, "/login")
	resp = e.post(c2, "/login", url.Values{"csrf": {tok2}, "name": {"admin"}, "password": {adminPassword}})
	resp.Body.Close()
	e.clk.Advance(31 * time.Second)
	cd, _ := authz.TOTPCode(secret, e.clk.Now())
	resp = e.post(c2, "/login/code", url.Values{"csrf": {tok2}, "code": {cd}})
	resp.Body.Close()
	sc := strings.Join(resp.Header.Values("Set-Cookie"), "\n")
	for _, want := range []string{sessionCookie + "=", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie lacks %s: %s", want, sc)
		}
	}
	var pendingTok string
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			pendingTok = ck.Value
		}
	}
	if pendingTok == "" || pendingTok == sess {
		t.Error("the session token was not rotated at login")
	}
	// A state change with the session but without its CSRF token is refused.
	resp = e.post(c, "/users", url.Values{"op": {"delete"}, "name": {"admin"}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("users change without CSRF: %d", resp.StatusCode)
	}
	// Logout ends the session server-side.
	_, _, stok := e.get(c, "/dashboard")
	resp = e.post(c, "/logout", url.Values{"csrf": {stok}})
	resp.Body.Close()
	if _, err := e.az.Authenticate(sess); err == nil {
		t.Error("session alive after logout")
	}
}

func mustUsers(t *testing.T, e *env) []authz.User {
	us, err := e.az.Users()
	if err != nil {
		t.Fatal(err)
	}
	return us
}

// TestGuessing: 1,000 wrong passwords get ever slower answers and never a session; the real user then
// signs in from another address.
func TestGuessing(t *testing.T) {
	e := startEnv(t)
	admin := e.client("127.0.0.1")
	secret := e.adminSetup(admin, "admin", adminPassword)
	attacker := e.client("127.0.0.1")
	_, _, tok := e.get(attacker, "/login")
	var last time.Duration
	checked, refused := 0, 0
	for i := range 1000 {
		before := e.clk.Offset()
		resp := e.post(attacker, "/login", url.Values{"csrf": {tok}, "name": {"admin"}, "password": {"guess number " + strconv.Itoa(i) + " xyz"}})
		resp.Body.Close()
		took := e.clk.Offset() - before // the server's imposed delay, in the test's clock
		for _, ck := range resp.Cookies() {
			if ck.Name == sessionCookie || ck.Name == loginCookie {
				t.Fatalf("attempt %d got a %s cookie", i, ck.Name)
			}
		}
		switch resp.StatusCode {
		case http.StatusTooManyRequests:
			refused++
			ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || ra <= 0 {
				t.Fatalf("attempt %d: 429 without Retry-After", i)
			}
			e.clk.Advance(time.Duration(ra) * time.Second) // a patient attacker waits as told
		case http.StatusUnauthorized:
			checked++
			if took < last {
				t.Fatalf("attempt %d answered after %v, faster than %v before", i, took, last)
			}
			last = took
		default:
			t.Fatalf("attempt %d: status %d", i, resp.StatusCode)
		}
	}
	t.Logf("1000 attempts: %d checked, %d refused; last delay %v", checked, refused, last)
	if refused == 0 || last < time.Second {
		t.Errorf("no slowing down: %d refused, last delay %v", refused, last)
	}
	if n := len(e.az.Sessions()); n != 0 {
		t.Fatalf("%d sessions after guessing", n)
	}
	real := e.client("127.0.0.2")
	before := e.clk.Offset()
	e.login(real, "admin", adminPassword, secret)
	if d := e.clk.Offset() - before - 31*time.Second; d > 2*time.Second {
		t.Errorf("the real admin was delayed %v", d)
	}
	es, err := e.az.AuditEntries(authz.AuditFilter{Action: "login", Result: "fail", Limit: 2000})
	if err != nil || len(es) != checked {
		t.Errorf("audited failures: %d, want %d (%v)", len(es), checked, err)
	}
}

// TestAPIDenials drives the JSON API with a service account's token.
func TestAPIDenials(t *testing.T) {
	e := startEnv(t)
	c := e.client("")
	e.adminSetup(c, "admin", adminPassword)
	admin := authz.Subject{User: "admin", Via: "session"}
	now := e.clk.Now()
	sched := &authz.Schedule{Windows: []authz.Window{{Day: now.UTC().Weekday(), From: 0, To: 24 * 60}}}
	if err := e.az.PutRole(admin, authz.Role{Name: "vms", Cameras: map[string][]authz.Action{"cam1": {authz.Live, authz.Playback}},
		System: []authz.Action{authz.ViewStatus}, Schedule: sched, MaxRecordingAge: 2 * time.Hour}, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.az.CreateUser(admin, authz.NewUser{Name: "vms1", Roles: []string{"vms"}, Service: true}, ""); err != nil {
		t.Fatal(err)
	}
	tok, err := e.az.IssueToken(admin, "vms1", "test", "")
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path string, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, e.origin+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := e.client("").Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	old := url.QueryEscape(now.Add(-5 * time.Hour).UTC().Format(time.RFC3339))
	recent := url.QueryEscape(now.Add(-time.Hour).UTC().Format(time.RFC3339))
	for _, tc := range []struct {
		method, path, body string
		code               int
		reason             string
	}{
		{"GET", "/api/v1/status", "", 200, ""},
		{"GET", "/api/v1/cameras/cam1/live", "", 200, ""},
		{"GET", "/api/v1/cameras/cam2/live", "", 403, "no role grants camera.live on camera cam2"},
		{"GET", "/api/v1/cameras/cam1/recordings?from=" + recent, "", 200, ""},
		{"GET", "/api/v1/cameras/cam1/recordings?from=" + old, "", 403, "older than"},
		{"POST", "/api/v1/cameras/cam1/export", `{"from":"` + now.Add(-time.Hour).UTC().Format(time.RFC3339) + `","to":"` + now.UTC().Format(time.RFC3339) + `"}`, 403, "no role grants camera.export"},
		{"GET", "/api/v1/audit", "", 403, "no role grants system.audit"},
		{"GET", "/users", "", 403, "API tokens are for /api/ only"},
	} {
		code, out := call(tc.method, tc.path, tc.body)
		if code != tc.code || tc.reason != "" && !strings.Contains(out["error"].(string), tc.reason) {
			t.Errorf("%s %s: %d %v, want %d %q", tc.method, tc.path, code, out, tc.code, tc.reason)
		}
	}
	// Outside the schedule (tomorrow is not in it), the same call is denied.
	e.clk.Advance(24 * time.Hour)
	if code, out := call("GET", "/api/v1/cameras/cam1/live", ""); code != 403 || !strings.Contains(out["error"].(string), "schedule") {
		t.Errorf("outside schedule: %d %v", code, out)
	}
	req, _ := http.NewRequest("GET", e.origin+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+tok+"x")
	resp, err := e.client("").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("bad token: %d", resp.StatusCode)
	}
	es, _ := e.az.AuditEntries(authz.AuditFilter{Subject: "vms1", Result: "deny"})
	if len(es) != 5 {
		t.Errorf("%d denials audited for vms1, want 5", len(es))
	}
	if strings.Contains(e.logs.String(), tok) {
		t.Error("the API token is in the log")
	}
}

// TestDeletionUnderDualAuthorization: a role whose policy puts deletions under dual authorization gets
// them carried out only after another person approves; the configuration page needs its own right.
func TestDeletionUnderDualAuthorization(t *testing.T) {
	e := startEnv(t)
	ac := e.client("")
	adminSecret := e.adminSetup(ac, "admin", adminPassword)
	admin := authz.Subject{User: "admin", Via: "session"}
	if err := e.az.PutRole(admin, authz.Role{Name: "archivist", Cameras: map[string][]authz.Action{"cam1": {authz.Playback, authz.Delete}},
		System: []authz.Action{authz.ViewStatus}, DualDelete: true}, ""); err != nil {
		t.Fatal(err)
	}
	const pw = "walnut harbour 58 crane"
	if err := e.az.CreateUser(admin, authz.NewUser{Name: "arch", Password: pw, Roles: []string{"archivist"}}, ""); err != nil {
		t.Fatal(err)
	}
	c := e.client("")
	e.enrolLogin(c, "arch", pw)
	_, _, csrf := e.get(c, "/cameras/cam1")
	from := e.clk.Now().Add(-3 * time.Hour).UTC().Format(time.RFC3339)
	to := e.clk.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)
	resp := e.post(c, "/cameras/cam1/delete", url.Values{"csrf": {csrf}, "from": {from}, "to": {to}, "reason": {"retention request 9"}})
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/approvals/") {
		t.Fatalf("delete: %d %q", resp.StatusCode, loc)
	}
	resp = e.post(c, loc+"/download", url.Values{"csrf": {csrf}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(e.app.Deletes()) != 0 {
		t.Fatalf("deletion without approval: %d", resp.StatusCode)
	}
	e.clk.Advance(31 * time.Second)
	code, _ := authz.TOTPCode(adminSecret, e.clk.Now())
	resp = e.post(c, loc, url.Values{"csrf": {csrf}, "approver": {"admin"}, "approver_password": {adminPassword}, "approver_code": {code}})
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "approved by admin") {
		t.Fatalf("approval: %d", resp.StatusCode)
	}
	resp = e.post(c, loc+"/download", url.Values{"csrf": {csrf}})
	resp.Body.Close()
	if d := e.app.Deletes(); resp.StatusCode != 200 || len(d) != 1 || d[0].ApprovedBy != "admin" || d[0].User != "arch" {
		t.Fatalf("deletion: %d %+v", resp.StatusCode, d)
	}
	// Configuration: the archivist may not see it, the administrator may.
	if code, _, _ := e.get(c, "/config"); code != http.StatusForbidden {
		t.Errorf("archivist /config: %d", code)
	}
	e.login(ac, "admin", adminPassword, adminSecret)
	if code, body, _ := e.get(ac, "/config"); code != 200 || !strings.Contains(body, "127.0.0.1:8443") {
		t.Errorf("admin /config: %d", code)
	}
	// The users and roles page: every form renders, and a role and an account are made through it.
	st, body, utok := e.get(ac, "/users")
	if st != 200 || !strings.Contains(body, "archivist") || !strings.Contains(body, `name="sys_system.approve"`) {
		t.Fatalf("users page: %d", st)
	}
	resp = e.post(ac, "/roles", url.Values{"csrf": {utok}, "op": {"put"}, "name": {"night-guard"}, "cameras": {"cam1 gate"},
		"cam_camera.live": {"on"}, "sys_system.status": {"on"}, "schedule": {"Mon-Sun 20:00-24:00; Mon-Sun 00:00-06:00"}, "max_age_hours": {"12"}})
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "role night-guard saved") {
		t.Fatalf("role form: %d", resp.StatusCode)
	}
	roles, _ := e.az.Roles()
	var ng *authz.Role
	for i := range roles {
		if roles[i].Name == "night-guard" {
			ng = &roles[i]
		}
	}
	if ng == nil || ng.MaxRecordingAge != 12*time.Hour || len(ng.Schedule.Windows) != 14 || len(ng.Cameras["gate"]) != 1 {
		t.Fatalf("role from form: %+v", ng)
	}
	resp = e.post(ac, "/users", url.Values{"csrf": {utok}, "op": {"create"}, "name": {"guard1"}, "password": {"password1234"}, "roles": {"night-guard"}})
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "common passwords") {
		t.Errorf("common password through the users page: %d", resp.StatusCode)
	}
	resp = e.post(ac, "/users", url.Values{"csrf": {utok}, "op": {"create"}, "name": {"guard1"}, "password": {"lantern frost 77 pine"}, "roles": {"night-guard"}, "dual": {"on"}})
	resp.Body.Close()
	if u, err := e.az.User("guard1"); err != nil || !u.DualAuth || u.Roles[0] != "night-guard" {
		t.Errorf("account from form: %v %+v", err, u)
	}
	for _, p := range []string{"/audit", "/account", "/dashboard", "/cameras/cam1"} {
		if code, _, _ := e.get(ac, p); code != 200 {
			t.Errorf("admin %s: %d", p, code)
		}
	}
}
