package web

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/camera"
)

// TestCameraAccountsPage: a camera with a deletable factory account and a built-in one, adopted through
// the API: the inventory page shows the first deleted and the second secured; an exemption made
// through the API carries the administrator's name and is audited; a viewer is refused it.
func TestCameraAccountsPage(t *testing.T) {
	dir := t.TempDir()
	var args []string
	for _, a := range []string{"service:Operator", "builtin:User", "vms2:User"} {
		name, _, _ := strings.Cut(a, ":")
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(name+"-factory-pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-account", a+":"+f)
	}
	ce := startCameraEnv(t, 1, "", append(args, "-fixed-account", "builtin")...)
	e := ce.env
	c := e.client("")
	adminSecret := e.adminSetup(c, "admin", adminPassword)
	e.login(c, "admin", adminPassword, adminSecret)
	_, _, csrf := e.get(c, "/cameras")
	cam := ce.sim.ONVIF[0]
	adopt, _ := json.Marshal(camera.AdoptRequest{HTTPS: cam.HTTPS, Username: camFactoryUser, Password: camFactoryPass})
	code, b := e.send(c, "POST", "/api/v1/cameras/adopt", "application/json", strings.NewReader(string(adopt)), map[string]string{"X-CSRF-Token": csrf})
	if code != 200 {
		t.Fatalf("API adoption: %d %s", code, b)
	}
	var v camera.CameraView
	if err := json.Unmarshal([]byte(b), &v); err != nil || !strings.HasPrefix(v.Policy, "strict") || len(v.Accounts) != 4 {
		t.Fatalf("adoption answer: %v %.400s", err, b)
	}
	_, body, _ := e.get(c, "/cameras")
	for _, want := range []string{`data-account="service" data-state="deleted"`, `data-account="builtin" data-state="secured"`,
		`data-account="vms2" data-state="deleted"`, `data-account="admin" data-state="appliance"`} {
		if !strings.Contains(body, want) {
			t.Errorf("camera page lacks %s", want)
		}
	}
	if strings.Contains(body, "account-warning") {
		t.Error("the page shows an account warning after a clean adoption")
	}

	// An exemption through the API: the administrator's name recorded, the change audited.
	keep := `{"username":"vms2","reason":"the second VMS re-creates it"}`
	if code, b = e.send(c, "POST", "/api/v1/cameras/"+v.ID+"/accounts/keep", "application/json", strings.NewReader(keep), map[string]string{"X-CSRF-Token": csrf}); code != 200 {
		t.Fatalf("keep: %d %s", code, b)
	}
	got, _ := ce.mgr.Camera(v.ID)
	if len(got.KeepAccounts) != 1 || got.KeepAccounts[0].By != "admin" || got.KeepAccounts[0].Level != camera.LevelUser {
		t.Fatalf("exemption %+v", got.KeepAccounts)
	}
	if !e.auditHas("admin", "camera.account-keep", "ok", "") {
		t.Error("the exemption is not audited")
	}
	admin := camera.KeepRequest{Username: "root", Level: camera.LevelAdministrator, Reason: "x"}
	ab, _ := json.Marshal(admin)
	if code, b = e.send(c, "POST", "/api/v1/cameras/"+v.ID+"/accounts/keep", "application/json", strings.NewReader(string(ab)), map[string]string{"X-CSRF-Token": csrf}); code != 422 {
		t.Errorf("keeping an Administrator account: %d %s", code, b)
	}

	// A viewer without the cameras right is refused.
	sub := authz.Subject{User: "admin", Via: "session"}
	if err := e.az.PutRole(sub, authz.Role{Name: "watch", Cameras: map[string][]authz.Action{authz.AllCameras: {authz.Live}},
		System: []authz.Action{authz.ViewStatus}}, ""); err != nil {
		t.Fatal(err)
	}
	const viewerPassword = "plum orchard 31 sunrise"
	if err := e.az.CreateUser(sub, authz.NewUser{Name: "viewer1", Password: viewerPassword, Roles: []string{"watch"}}, ""); err != nil {
		t.Fatal(err)
	}
	vc := e.client("")
	e.enrolLogin(vc, "viewer1", viewerPassword)
	_, _, vcsrf := e.get(vc, "/dashboard")
	if code, b = e.send(vc, "POST", "/api/v1/cameras/"+v.ID+"/accounts/enforce", "application/json", strings.NewReader(`{"username":"vms2"}`), map[string]string{"X-CSRF-Token": vcsrf}); code != 403 {
		t.Errorf("viewer enforce: %d %s", code, b)
	}
	if got, _ := ce.mgr.Camera(v.ID); len(got.KeepAccounts) != 1 {
		t.Error("the viewer's request changed the exemptions")
	}
	for _, secret := range []string{"service-factory-pw", "builtin-factory-pw", ce.sim.State(t)[cam.Camera].Users[0].Password} {
		if strings.Contains(body, secret) || strings.Contains(e.logs.String(), secret) {
			t.Error("a camera password appears in the page or the log")
		}
	}
}

// TestCameraAccountsBrowser walks the account actions of the camera page in Chromium against camsim:
// the administrator keeps a deleted account (the second VMS re-creates it), audits the camera's accounts
// now and sees it kept, then stops keeping it and camsim no longer has it; keeping an Administrator
// account is refused with the API's own words; a viewer without the cameras right sees no account
// action and the POST is refused (403) and audited. No camera password reaches the page.
func TestCameraAccountsBrowser(t *testing.T) {
	dir := t.TempDir()
	var args []string
	for _, a := range []string{"vms2:User", "root:Administrator"} {
		name, _, _ := strings.Cut(a, ":")
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(name+"-factory-pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-account", a+":"+f)
	}
	ce := startCameraEnv(t, 1, "", args...)
	e := ce.env
	adminSecret := e.adminSetup(e.client(""), "admin", adminPassword)
	b := e.browser()
	admin := e.tab(b)
	e.browserLogin(admin, "admin", adminPassword, adminSecret)
	sim := ce.sim.ONVIF[0]
	e.do(admin, "adopt",
		chromedp.Navigate(e.origin+"/cameras"), chromedp.WaitVisible(chromedp.ID("adopt-manual")),
		chromedp.SendKeys(chromedp.CSS(`#adopt-manual input[name="https"]`), sim.HTTPS),
		chromedp.SendKeys(chromedp.CSS(`#adopt-manual input[name="username"]`), camFactoryUser),
		chromedp.SendKeys(chromedp.CSS(`#adopt-manual input[name="password"]`), camFactoryPass),
		chromedp.Click(chromedp.CSS(`#adopt-manual button[type="submit"]`)))
	waitText(e, admin, "#message", "adopted")
	id := ce.mgr.Cameras()[0].ID
	if _, ok := camsimUsers(t, ce.sim, sim.Camera)["vms2"]; ok {
		t.Fatal("vms2 survived the adoption")
	}

	// Keep vms2 (deleted at adoption) through the page: the form shows its level and asks for a reason.
	keepForm := `form.keep-account[data-account="vms2"]`
	waitSel(e, admin, keepForm)
	e.do(admin, "open the keep form", chromedp.Click(chromedp.CSS(`details:has(> `+keepForm+`) > summary`)))
	if got := jsText(e, admin, keepForm+" p"); !strings.Contains(got, "vms2, level User") {
		t.Errorf("the keep form does not show the level: %q", got)
	}
	e.do(admin, "keep vms2",
		chromedp.SendKeys(chromedp.CSS(keepForm+` input[name="reason"]`), "the second VMS re-creates it"),
		chromedp.Click(chromedp.CSS(keepForm+` button[type="submit"]`)))
	waitText(e, admin, "#message", "is kept")
	if got := jsText(e, admin, `.kept-account[data-kept="vms2"]`); !strings.Contains(got, "by admin") || !strings.Contains(got, "the second VMS re-creates it") {
		t.Errorf("kept account on the page: %q", got)
	}
	if got, _ := ce.mgr.Camera(id); len(got.KeepAccounts) != 1 || got.KeepAccounts[0].By != "admin" || got.KeepAccounts[0].Level != camera.LevelUser {
		t.Fatalf("exemption %+v", got.KeepAccounts)
	}

	// The second VMS creates it again; an audit from the page lists it as kept and leaves it alone.
	camsimCreateUser(t, ce.sim, sim.Camera, sim.HTTP, "vms2", "vms2-new-pw-1", "User")
	e.do(admin, "audit now", chromedp.Click(chromedp.ID("audit-accounts-"+id)))
	waitText(e, admin, "#message", "were listed now")
	waitSel(e, admin, `.account[data-account="vms2"][data-state="kept"]`)
	if pw := camsimUsers(t, ce.sim, sim.Camera)["vms2"]; pw != "vms2-new-pw-1" {
		t.Fatal("the audit changed the kept account")
	}

	// Keeping an Administrator account is refused with the API's words.
	rootForm := `form.keep-account[data-account="root"]`
	e.do(admin, "keep root",
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).closest("details").open = true`, rootForm)),
		chromedp.SendKeys(chromedp.CSS(rootForm+` input[name="reason"]`), "installer wants it"),
		chromedp.Click(chromedp.CSS(rootForm+` button[type="submit"]`)))
	waitText(e, admin, "#error", "cannot be kept")
	pageErr := jsText(e, admin, "#error")
	api, err := chromedp.Run(admin, chromedp.Evaluate[string](fmt.Sprintf(`fetch("/api/v1/cameras/%s/accounts/keep", {method: "POST",
		headers: {"Content-Type": "application/json", "X-CSRF-Token": document.querySelector('meta[name="csrf"]').content},
		body: JSON.stringify({username: "root", level: "Administrator", reason: "installer wants it"})}).then(r => r.json()).then(j => j.error)`, id),
		chromedp.EvalAwaitPromise))
	if err != nil || api == "" || !strings.Contains(pageErr, api) {
		t.Errorf("the page's refusal %q does not carry the API's %q (%v)", pageErr, api, err)
	}

	// Stop keeping it: the appliance deletes it from the camera at once.
	go func() {
		for _, err := range chromedp.Events(admin, cdppage.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			if _, err := chromedp.Call(admin, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()
	e.do(admin, "enforce vms2", chromedp.Navigate(e.origin+"/cameras"), chromedp.WaitVisible(chromedp.ID("camera-list")),
		chromedp.Click(chromedp.CSS(`form.enforce-account[data-account="vms2"] button`)))
	waitText(e, admin, "#message", "no longer kept")
	if got := jsText(e, admin, "#message"); !strings.Contains(got, "deleted") {
		t.Errorf("enforce message: %q", got)
	}
	if _, ok := camsimUsers(t, ce.sim, sim.Camera)["vms2"]; ok {
		t.Fatal("vms2 is still on the camera after the exemption was withdrawn")
	}
	if got, _ := ce.mgr.Camera(id); len(got.KeepAccounts) != 0 {
		t.Fatalf("exemptions after withdrawal: %+v", got.KeepAccounts)
	}
	for _, a := range []string{"camera.account-keep", "camera.account-audit", "camera.account-enforce"} {
		if !e.auditHas("admin", a, "ok", "") {
			t.Errorf("%s by admin is not audited", a)
		}
	}
	html := outerHTML(e, admin)
	for _, secret := range append([]string{"vms2-factory-pw", "root-factory-pw", "vms2-new-pw-1", camFactoryPass}, camsimPasswords(t, ce.sim)...) {
		if strings.Contains(html, secret) || strings.Contains(e.logs.String(), secret) {
			t.Error("a camera password is in the page or the log")
		}
	}

	// A viewer: no account action, and a forged POST is refused and audited.
	// (kept again by the administrator, through the manager, so that the viewer has something to withdraw)
	if _, err := ce.mgr.KeepAccount(camera.WithActor(context.Background(), "admin"), id,
		camera.KeepRequest{Username: "vms2", Reason: "for the viewer's attempt"}); err != nil {
		t.Fatal(err)
	}
	viewer := camViewer(e, b)
	e.do(viewer, "viewer camera page", chromedp.Navigate(e.origin+"/cameras"), chromedp.WaitVisible(chromedp.CSS("main")))
	if h := outerHTML(e, viewer); strings.Contains(h, "Keep this account") || strings.Contains(h, "Stop keeping") || strings.Contains(h, "Audit accounts now") {
		t.Error("the viewer sees account actions")
	}
	before, _ := e.az.AuditEntries(authz.AuditFilter{Subject: "viewer1", Action: string(authz.ManageCameras), Result: "deny", Limit: 100})
	for _, action := range []string{"enforce", "audit"} {
		code, err := chromedp.Run(viewer, chromedp.Evaluate[int](fmt.Sprintf(`fetch("/cameras/%s/accounts/%s", {method: "POST",
			headers: {"Content-Type": "application/x-www-form-urlencoded"},
			body: new URLSearchParams({csrf: document.querySelector('meta[name="csrf"]').content, username: "vms2"})}).then(r => r.status)`, id, action),
			chromedp.EvalAwaitPromise))
		if err != nil || code != 403 {
			t.Errorf("viewer %s POST: %d %v", action, code, err)
		}
	}
	after, _ := e.az.AuditEntries(authz.AuditFilter{Subject: "viewer1", Action: string(authz.ManageCameras), Result: "deny", Limit: 100})
	if len(after) < len(before)+2 {
		t.Errorf("the viewer's POSTs are not audited as denials: %d then %d", len(before), len(after))
	}
	if got, _ := ce.mgr.Camera(id); len(got.KeepAccounts) != 1 {
		t.Error("the viewer's request changed the exemptions")
	}
	if _, ok := camsimUsers(t, ce.sim, sim.Camera)["vms2"]; ok {
		t.Error("vms2 appeared on the camera")
	}
}

// waitSel polls until the page has an element matching sel (the page may still be loading after a
// form post).
func waitSel(e *env, ctx context.Context, sel string) {
	e.t.Helper()
	js := fmt.Sprintf(`!!document.querySelector(%q)`, sel)
	e.waitFor(30*time.Second, "element "+sel, func() bool {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](js))
		return err == nil && ok
	})
}

// outerHTML returns the current document's HTML.
func outerHTML(e *env, ctx context.Context) string {
	e.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	h, err := chromedp.Run(tctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// camsimUsers returns one camsim camera's accounts and passwords from its state file.
func camsimUsers(t *testing.T, s *camSim, cam string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, u := range s.State(t)[cam].Users {
		out[u.Username] = u.Password
	}
	return out
}

// camsimPasswords returns every password camsim holds.
func camsimPasswords(t *testing.T, s *camSim) []string {
	t.Helper()
	var out []string
	for _, st := range s.State(t) {
		for _, u := range st.Users {
			out = append(out, u.Password)
		}
	}
	return out
}

// camsimCreateUser creates an account on a camsim camera as another client would: ONVIF CreateUsers
// over plain HTTP, signed in (WS-Security digest) with the appliance's current account read from
// camsim's state.
func camsimCreateUser(t *testing.T, s *camSim, cam, addr, name, password, level string) {
	t.Helper()
	pw, ok := camsimUsers(t, s, cam)[camFactoryUser]
	if !ok {
		t.Fatalf("camsim %s has no %s account", cam, camFactoryUser)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	created := time.Now().UTC().Format(time.RFC3339Nano)
	h := sha1.New()
	h.Write(nonce)
	h.Write([]byte(created))
	h.Write([]byte(pw))
	env := `<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema"><s:Header>` +
		`<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:UsernameToken>` +
		`<wsse:Username>` + camFactoryUser + `</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">` +
		base64.StdEncoding.EncodeToString(h.Sum(nil)) + `</wsse:Password><wsse:Nonce>` + base64.StdEncoding.EncodeToString(nonce) + `</wsse:Nonce><wsu:Created>` + created +
		`</wsu:Created></wsse:UsernameToken></wsse:Security></s:Header><s:Body><tds:CreateUsers><tds:User><tt:Username>` + name + `</tt:Username><tt:Password>` + password +
		`</tt:Password><tt:UserLevel>` + level + `</tt:UserLevel></tds:User></tds:CreateUsers></s:Body></s:Envelope>`
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post("http://"+addr+"/onvif/device_service", "application/soap+xml", strings.NewReader(env))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != 200 {
		t.Fatalf("CreateUsers on camsim: %d %s", resp.StatusCode, b)
	}
	if _, ok := camsimUsers(t, s, cam)[name]; !ok {
		t.Fatalf("camsim has no %s after CreateUsers", name)
	}
}
