package web

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/internal/testpeer"
	"github.com/edgenvr/nvr/netconfig/nstest"
)

// TestCameraBrowser is the acceptance walk in headless Chromium against camsim's ONVIF cameras and the
// real camera manager (swtpm): an admin discovers the cameras through the page (WS-Discovery on the
// namespace's loopback), adopts them with the installer's credentials typed once, sees the inventory,
// rotates a password (camsim's state shows it changed), rolls out firmware with the page following its
// per-camera status; a viewer without the cameras right is refused the page and the API, audited.
func TestCameraBrowser(t *testing.T) {
	if !nstest.InNS(t, "nvrwebcam") {
		return
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up", "multicast", "on").CombinedOutput(); err != nil {
		t.Fatalf("loopback multicast: %v\n%s", err, out)
	}
	ce := startCameraEnv(t, 2, "lo", "-discovery", "lo")
	e := ce.env
	adminSecret := e.adminSetup(e.client(""), "admin", adminPassword)
	b := e.browser()
	admin := e.tab(b)
	e.browserLogin(admin, "admin", adminPassword, adminSecret)

	// Discover, then adopt both cameras through the discovery table.
	for n := 1; n <= 2; n++ {
		e.do(admin, "discover",
			chromedp.Navigate(e.origin+"/cameras"), chromedp.WaitVisible(chromedp.ID("discover")),
			chromedp.Click(chromedp.ID("discover")))
		waitText(e, admin, "#message", "devices answered")
		if got := jsText(e, admin, "#message"); !strings.Contains(got, "2 ONVIF devices answered") {
			t.Fatalf("discovery: %q", got)
		}
		form := `#discovered form`
		e.do(admin, "adopt",
			chromedp.SendKeys(chromedp.CSS(form+` input[name="name"]`), []string{"", "Gate", "Yard"}[n]),
			chromedp.SendKeys(chromedp.CSS(form+` input[name="username"]`), camFactoryUser),
			chromedp.SendKeys(chromedp.CSS(form+` input[name="password"]`), camFactoryPass),
			chromedp.Click(chromedp.CSS(form+` button[type="submit"]`)))
		waitText(e, admin, "#message", "adopted")
		if got := jsText(e, admin, "#message"); !strings.Contains(got, "adopted") {
			t.Fatalf("adoption %d: %q", n, got)
		}
		if len(ce.mgr.Cameras()) != n {
			t.Fatalf("%d cameras adopted after %d adoptions", len(ce.mgr.Cameras()), n)
		}
	}
	// The inventory, and no password in the page: the installer's is never shown again.
	html, err := chromedp.Run(admin, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	states := ce.sim.State(t)
	inv := jsText(e, admin, "#camera-list")
	for cam, st := range states {
		for _, want := range []string{st.Serial, st.MAC, "CamSim-1080", "1.0.0"} {
			if !strings.Contains(inv, want) {
				t.Errorf("inventory lacks %s's %q", cam, want)
			}
		}
		if strings.Contains(html, st.Users[0].Password) {
			t.Errorf("%s's password is in the page", cam)
		}
	}
	if strings.Contains(html, camFactoryPass) {
		t.Error("the installer's password is in the page")
	}

	// Rotate one camera's password.
	id := ce.mgr.Cameras()[0].ID
	var cam, before string
	for name, st := range states {
		if strings.HasSuffix(id, strings.ToLower(st.Serial)) {
			cam, before = name, st.Users[0].Password
		}
	}
	if cam == "" {
		t.Fatalf("no camsim camera has the serial of %s", id)
	}
	e.do(admin, "rotate", chromedp.Click(chromedp.ID("rotate-"+id)))
	waitText(e, admin, "#message", "password of")
	if got := jsText(e, admin, "#message"); !strings.Contains(got, "password of "+id+" was replaced") {
		t.Fatalf("rotation: %q", got)
	}
	after := ce.sim.State(t)[cam].Users[0].Password
	if after == before || len(after) < 32 {
		t.Fatal("camsim's password did not change")
	}

	// Firmware: the page checks the file against the vendor checksum, the rollout runs in the
	// background and the page follows it to the end.
	image, sum := camsimImage("2.0.0", false)
	path := filepath.Join(t.TempDir(), "camsim-2.0.0.bin")
	if err := os.WriteFile(path, image, 0o600); err != nil {
		t.Fatal(err)
	}
	e.do(admin, "rollout form",
		chromedp.Navigate(e.origin+"/cameras"), // a fresh document for chromedp's node ids after the posts
		chromedp.WaitVisible(chromedp.ID("rollout-form")),
		chromedp.SetUploadFiles(chromedp.ID("rollout-image"), []string{path}),
		chromedp.SendKeys(chromedp.ID("rollout-sha256"), sum),
		chromedp.SendKeys(chromedp.ID("rollout-version"), "2.0.0"),
		chromedp.Poll[chromedp.Void](`document.getElementById("rollout-sum").textContent.includes("matches the vendor")`, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Click(chromedp.ID("rollout")),
	)
	waitText(e, admin, "#message", "rollout")
	waitText(e, admin, "#rollouts .rollout-state", "done")
	if got := jsText(e, admin, "#rollouts"); strings.Count(got, "updated") != 2 || !strings.Contains(got, "canary") {
		t.Errorf("rollout status: %q", got)
	}
	for name, st := range ce.sim.State(t) {
		if st.Firmware != "2.0.0" {
			t.Errorf("%s runs %s after the rollout", name, st.Firmware)
		}
	}
	e.do(admin, "reload", chromedp.Navigate(e.origin+"/cameras"), chromedp.WaitVisible(chromedp.ID("camera-list")))
	camerasScreenshot(e, admin)

	// A viewer without the cameras right: no navigation link, the page and the API refused, audited.
	viewer := camViewer(e, b)
	if h, _ := chromedp.Run(viewer, chromedp.OuterHTML(chromedp.CSS("header"))); strings.Contains(h, `href="/cameras"`) {
		t.Error("the viewer sees the camera page in the navigation")
	}
	e.do(viewer, "viewer camera page", chromedp.Navigate(e.origin+"/cameras"), chromedp.WaitVisible(chromedp.CSS("main")))
	if body := jsText(e, viewer, "main"); !strings.Contains(body, "denied: no role grants system.cameras") {
		t.Errorf("viewer camera page: %q", body)
	}
	// The API, called from the viewer's page as a script would.
	api, err := chromedp.Run(viewer, chromedp.Evaluate[string](`fetch("/api/v1/cameras").then(r => r.status + " " + r.statusText)`,
		chromedp.EvalAwaitPromise))
	if err != nil || !strings.HasPrefix(api, "403") {
		t.Errorf("viewer API: %q %v", api, err)
	}
	toks := e.cookies(viewer)
	if len(toks) != 1 {
		t.Fatalf("viewer cookies: %d", len(toks))
	}
	req, _ := newGet(e.origin+"/api/v1/cameras/"+id, toks[0])
	resp, err := e.client("").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("viewer API camera: %d", resp.StatusCode)
	}
	es, _ := e.az.AuditEntries(authz.AuditFilter{Subject: "viewer1", Action: string(authz.ManageCameras), Result: "deny", Limit: 100})
	if len(es) < 3 {
		t.Errorf("%d audited denials of the cameras right for the viewer, want 3", len(es))
	}
	if !e.auditHas("admin", "camera.adopt", "ok", "") || !e.auditHas("admin", "camera.rotate", "ok", "") || !e.auditHas("admin", "camera.discover", "ok", "") {
		t.Error("the admin's camera actions are not all audited")
	}

	// No camera password in any log line.
	logs := e.logs.String()
	for _, st := range ce.sim.State(t) {
		if strings.Contains(logs, st.Users[0].Password) {
			t.Error("a camera password is in the log")
		}
	}
	for _, s := range []string{camFactoryPass, before, after} {
		if strings.Contains(logs, s) {
			t.Error("a camera password is in the log")
		}
	}
}

// camViewer creates viewer1, who may watch every camera live but holds no cameras right, and signs
// them in (enrolling TOTP) in a tab of their own.
func camViewer(e *env, b context.Context) context.Context {
	e.t.Helper()
	sub := authz.Subject{User: "admin", Via: "session"}
	if err := e.az.PutRole(sub, authz.Role{Name: "watch", Cameras: map[string][]authz.Action{authz.AllCameras: {authz.Live}},
		System: []authz.Action{authz.ViewStatus}}, ""); err != nil {
		e.t.Fatal(err)
	}
	const viewerPassword = "plum orchard 31 sunrise"
	if err := e.az.CreateUser(sub, authz.NewUser{Name: "viewer1", Password: viewerPassword, Roles: []string{"watch"}}, ""); err != nil {
		e.t.Fatal(err)
	}
	viewer := e.tab(b)
	e.do(viewer, "viewer login", chromedp.Navigate(e.origin+"/login"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "viewer1"), chromedp.SendKeys(chromedp.ID("password"), viewerPassword),
		chromedp.Click(chromedp.ID("submit")), chromedp.WaitVisible(chromedp.ID("secret")))
	vs := jsText(e, viewer, "#secret")
	vc, _ := authz.TOTPCode(vs, e.clk.Now())
	e.do(viewer, "viewer enrol", chromedp.SendKeys(chromedp.ID("code"), vc), chromedp.Click(chromedp.ID("submit")),
		chromedp.WaitVisible(chromedp.ID("continue")), chromedp.Click(chromedp.ID("continue")), chromedp.WaitVisible(chromedp.ID("cameras")))
	return viewer
}

// waitText polls until the page (after a form post, which navigates) has an element sel whose text
// contains sub.
func waitText(e *env, ctx context.Context, sel, sub string) {
	e.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, sub)
	e.waitFor(30*time.Second, fmt.Sprintf("%q in %s", sub, sel), func() bool {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](js))
		return err == nil && ok
	})
}

// jsText returns the text of the element sel, read by the page's own DOM (chromedp's node ids go stale
// across the navigations of form posts).
func jsText(e *env, ctx context.Context, sel string) string {
	e.t.Helper()
	var out string
	e.waitFor(30*time.Second, "element "+sel, func() bool {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := chromedp.Run(tctx, chromedp.Evaluate[string](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : "\x00"; })()`, sel)))
		out = s
		return err == nil && s != "\x00"
	})
	return out
}

// camerasScreenshot saves the whole camera page as docs/screenshots/cameras.png when NVR_SCREENSHOTS is
// set or the file is missing, else into the test's temp dir.
func camerasScreenshot(e *env, ctx context.Context) {
	e.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		e.t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(testpeer.Root(e.t), "docs", "screenshots", "cameras.png")
	if _, err := os.Stat(path); err == nil && os.Getenv("NVR_SCREENSHOTS") == "" {
		path = filepath.Join(e.t.TempDir(), "cameras.png")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		e.t.Fatal(err)
	}
}
