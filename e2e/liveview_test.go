package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/edgenvr/nvr/appliance/authz"
)

// web is a signed-in HTTPS client of nvrd's pages.
type webClient struct {
	t      testing.TB
	origin string
	c      *http.Client
	spki   string // base64 SHA-256 of the server's public key, for Chromium's pin
}

func newWebClient(t testing.TB, origin string) *webClient {
	jar, _ := cookiejar.New(nil)
	return &webClient{t: t, origin: origin, c: &http.Client{
		Jar:           jar,
		Timeout:       60 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // pinned below, by SPKI
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (w *webClient) get(path string) (int, string) {
	w.t.Helper()
	resp, err := w.c.Get(w.origin + path)
	if err != nil {
		w.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		sum := sha256.Sum256(resp.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo)
		spki := base64.StdEncoding.EncodeToString(sum[:])
		if w.spki != "" && w.spki != spki {
			w.t.Fatal("the appliance's TLS key changed")
		}
		w.spki = spki
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (w *webClient) csrf(path string) string {
	w.t.Helper()
	_, body := w.get(path)
	m := csrfInput.FindStringSubmatch(body)
	if m == nil {
		w.t.Fatalf("no CSRF token on %s", path)
	}
	return m[1]
}

func (w *webClient) post(path string, f url.Values) (int, string) {
	w.t.Helper()
	req, _ := http.NewRequest("POST", w.origin+path, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", w.origin)
	resp, err := w.c.Do(req)
	if err != nil {
		w.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (w *webClient) session() string {
	u, _ := url.Parse(w.origin)
	for _, c := range w.c.Jar.Cookies(u) {
		if c.Name == "__Host-nvr_session" {
			return c.Value
		}
	}
	w.t.Fatal("no session cookie")
	return ""
}

var (
	secretRE   = regexp.MustCompile(`id="secret">([A-Z2-7]+)<`)
	enrolRE    = regexp.MustCompile(`name="enrol" value="([^"]+)"`)
	recoveryRE = regexp.MustCompile(`<li><code>([^<]+)</code></li>`)
)

// setupAdmin runs first-boot setup with the code from the console and signs the administrator in with a
// recovery code (the TOTP step of the setup is spent).
func setupAdmin(t *testing.T, origin, code, password string) *webClient {
	w := newWebClient(t, origin)
	tok := w.csrf("/setup")
	_, body := w.post("/setup", url.Values{"csrf": {tok}, "code": {code}, "name": {"admin"}, "password": {password}, "password2": {password}})
	en, sec := enrolRE.FindStringSubmatch(body), secretRE.FindStringSubmatch(body)
	if en == nil || sec == nil {
		t.Fatalf("setup: no enrolment:\n%.600s", body)
	}
	totp, _ := authz.TOTPCode(sec[1], time.Now())
	_, body = w.post("/setup/confirm", url.Values{"csrf": {tok}, "enrol": {en[1]}, "totp": {totp}})
	rc := recoveryRE.FindAllStringSubmatch(body, -1)
	if len(rc) == 0 {
		t.Fatalf("setup: no recovery codes:\n%.600s", body)
	}
	tok = w.csrf("/login")
	if code, _ := w.post("/login", url.Values{"csrf": {tok}, "name": {"admin"}, "password": {password}}); code != http.StatusSeeOther {
		t.Fatalf("admin login: %d", code)
	}
	if code, body := w.post("/login/code", url.Values{"csrf": {tok}, "code": {rc[0][1]}}); code != http.StatusSeeOther {
		t.Fatalf("admin second factor: %d %.400s", code, body)
	}
	return w
}

// enrolUser signs a new account in, enrolling its TOTP on the way.
func enrolUser(t *testing.T, origin, name, password string) *webClient {
	w := newWebClient(t, origin)
	tok := w.csrf("/login")
	w.post("/login", url.Values{"csrf": {tok}, "name": {name}, "password": {password}})
	_, body := w.get("/login/step")
	m := secretRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("enrol %s: no secret", name)
	}
	code, _ := authz.TOTPCode(m[1], time.Now())
	if st, _ := w.post("/login/code", url.Values{"csrf": {tok}, "code": {code}}); st != 200 {
		t.Fatalf("enrol %s: status %d", name, st)
	}
	return w
}

// chromium starts Debian's headless Chromium pinned to the appliance's key, stopped by PID at the end.
func chromium(t *testing.T, spki string) context.Context {
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found: make test installs it (scripts/deps.sh): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1400),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("ignore-certificate-errors-spki-list", spki),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	proc := chromedp.FromContext(bctx).Browser.Process()
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		if proc != nil {
			_ = proc.Kill()
		}
	})
	return bctx
}

// tabAs opens a browser context (its own cookies) signed in with w's session.
func tabAs(t *testing.T, b context.Context, w *webClient) context.Context {
	ctx, cancel := chromedp.NewContext(b, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	secure, httpOnly := true, true
	if _, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{Name: "__Host-nvr_session", Value: w.session(),
		URL: w.origin + "/", Path: "/", Secure: &secure, HTTPOnly: &httpOnly, SameSite: network.CookieSameSiteStrict}); err != nil {
		t.Fatalf("set cookie: %v", err)
	}
	return ctx
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %q: %v", js, err)
	}
	return v
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestBrowserLiveViewPlaybackExport is the acceptance test of live view, playback and export from the page,
// against nvrd recording camsim's cameras with swtpm as its TPM, in Debian's headless Chromium:
//   - live view plays (currentTime advances, frames are decoded) with a glass-to-glass latency (the
//     recording timeline of the presented picture, which is the appliance's clock when the picture
//     arrived, against the browser's clock) of at most 2 s;
//   - playback seeks to a requested instant and the presented frame's media time matches it within 1 s;
//     a speed change takes effect; the timeline shows what was recorded;
//   - a role without the camera sees no video and the server refuses the stream requests, all audited;
//   - an export through the page, downloaded by the browser, passes nvr verify;
//   - the metrics endpoint answers the status right only.
func TestBrowserLiveViewPlaybackExport(t *testing.T) {
	cs := startCamsim(t, 2)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1", "cam2": "rtsp://" + cs.RTSP + "/cam2"},
		cs.Password, "-segment", "4s", "-transport", "tcp", "-display", "console")
	began := time.Now()
	nvrd := a.start()
	origin := strings.TrimSuffix(a.webURL(t), "/")
	const adminPassword = "copper lantern 58 harbour"
	admin := setupAdmin(t, origin, setupCode(t, nvrd), adminPassword)

	// A viewer of cam1 only, without the status right.
	tok := admin.csrf("/users")
	if st, body := admin.post("/roles", url.Values{"csrf": {tok}, "op": {"put"}, "name": {"cam1-viewer"}, "cameras": {"cam1"},
		"cam_camera.live": {"on"}, "cam_camera.playback": {"on"}, "schedule": {""}, "max_age_hours": {"0"}}); st != 200 {
		t.Fatalf("role: %d %.300s", st, body)
	}
	const viewerPassword = "juniper quarry 17 dawn"
	if st, body := admin.post("/users", url.Values{"csrf": {tok}, "op": {"create"}, "name": {"viewer1"}, "password": {viewerPassword},
		"roles": {"cam1-viewer"}}); st != 200 || !strings.Contains(body, "account viewer1 created") {
		t.Fatalf("create viewer: %d", st)
	}
	viewer := enrolUser(t, origin, "viewer1", viewerPassword)

	// Some recording, in closed segments, before the browser comes.
	waitFor(t, 90*time.Second, "12 s recorded per camera", func() bool {
		return time.Since(began) > 14*time.Second && len(a.events("segment closed")) >= 4
	})

	b := chromium(t, admin.spki)
	tab := tabAs(t, b, admin)
	do(t, tab, "camera page", chromedp.Navigate(origin+"/cameras/cam1?from="+url.QueryEscape(began.Add(-time.Minute).UTC().Format(time.RFC3339))),
		chromedp.WaitVisible(chromedp.ID("live")))

	// Live view plays: the position advances, frames are decoded, and the latency stays within 2 s.
	type vstate struct {
		T       float64 `json:"t"`
		Frames  int     `json:"frames"`
		Latency float64 `json:"latency"`
		State   string  `json:"state"`
	}
	liveState := func() vstate {
		return eval[vstate](t, tab, `(() => { const v = document.getElementById("live");
			return {t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, latency: Number(v.dataset.latency || -1), state: v.dataset.state || ""}; })()`)
	}
	var first vstate
	diag := func() string {
		return eval[string](t, tab, `(() => { const v = document.getElementById("live"); const b = v.buffered; let r = [];
			for (let i = 0; i < b.length; i++) r.push(b.start(i).toFixed(2) + "-" + b.end(i).toFixed(2));
			return "status=" + document.getElementById("live-status").textContent + " ready=" + v.readyState + " paused=" + v.paused +
				" t=" + v.currentTime + " err=" + (v.error ? v.error.message : "") + " buffered=" + r.join(","); })()`)
	}
	deadline0 := time.Now().Add(60 * time.Second)
	for {
		first = liveState()
		if first.State == "live" && first.Frames > 5 && first.Latency > 0 {
			break
		}
		if time.Now().After(deadline0) {
			t.Fatalf("live video not playing: %+v %s", first, diag())
		}
		time.Sleep(200 * time.Millisecond)
	}
	var last vstate
	waitFor(t, 60*time.Second, "10 s of live view", func() bool { last = liveState(); return last.T > first.T+10 })
	if last.Frames <= first.Frames+100 {
		t.Errorf("live view does not decode: %+v then %+v", first, last)
	}
	var lat []float64
	for _, f := range strings.Split(eval[string](t, tab, `document.getElementById("live").dataset.latencies`), ",") {
		var v float64
		if _, err := fmt.Sscan(f, &v); err == nil {
			lat = append(lat, v)
		}
	}
	sort.Float64s(lat)
	if len(lat) < 5 {
		t.Fatalf("only %d latency samples", len(lat))
	}
	med, worst := lat[len(lat)/2], lat[len(lat)-1]
	t.Logf("live view latency (appliance's arrival clock of the presented picture → browser's clock): median %.2f s, max %.2f s over %d samples", med, worst, len(lat))
	if med > 2 {
		t.Errorf("live view latency median %.2f s, want at most 2 s", med)
	}

	// Playback: the timeline shows what was recorded; a seek to a requested instant presents that instant.
	waitFor(t, 30*time.Second, "the timeline", func() bool {
		return eval[string](t, tab, `document.getElementById("timeline").dataset.spans || ""`) != ""
	})
	if n := eval[string](t, tab, `document.getElementById("timeline").dataset.spans`); n == "0" {
		t.Fatal("the timeline shows no recording")
	}
	want := began.Add(7*time.Second + 300*time.Millisecond).UTC()
	do(t, tab, "seek", chromedp.SetValue(chromedp.ID("seek-time"), want.Format("2006-01-02T15:04:05")), chromedp.Click(chromedp.ID("seek-go")))
	wantSec := float64(want.Truncate(time.Second).UnixMilli()) / 1000
	var presented float64
	waitFor(t, 60*time.Second, "the frame presented after the seek", func() bool {
		s := eval[string](t, tab, `document.getElementById("playback").dataset.presented || ""`)
		if s == "" {
			return false
		}
		fmt.Sscan(s, &presented)
		return true
	})
	t.Logf("seek to %s: presented media time %.3f (%.3f s off)", want.Truncate(time.Second).Format(time.RFC3339), presented, presented-wantSec)
	if math.Abs(presented-wantSec) > 1 {
		t.Errorf("presented media time %.3f, want %.3f within 1 s", presented, wantSec)
	}
	waitFor(t, 30*time.Second, "playback advancing", func() bool {
		v := eval[[]float64](t, tab, `(() => { const v = document.getElementById("playback"); return [v.currentTime, v.getVideoPlaybackQuality().totalVideoFrames]; })()`)
		return v[0] > presented+1 && v[1] > 10
	})
	do(t, tab, "speed", chromedp.SetValue(chromedp.ID("speed"), "4"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("speed").dispatchEvent(new Event("change"))`))
	if r := eval[float64](t, tab, `document.getElementById("playback").playbackRate`); r != 4 {
		t.Errorf("playback rate %v after choosing 4×", r)
	}

	// Export through the page: the browser downloads the evidence file, and nvr verify accepts it.
	dl := t.TempDir()
	if _, err := chromedp.CallBrowser(tab, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl, BrowserContextID: chromedp.FromContext(tab).BrowserContextID}); err != nil {
		t.Fatalf("download behavior: %v", err)
	}
	segs := a.events("segment closed")
	to := time.Now().Add(-6 * time.Second).UTC() // inside closed segments
	do(t, tab, "export form",
		chromedp.SetValue(chromedp.ID("export-from"), began.Add(-time.Minute).UTC().Format("2006-01-02T15:04:05")),
		chromedp.SetValue(chromedp.ID("export-to"), to.Format("2006-01-02T15:04:05")),
		chromedp.SendKeys(chromedp.ID("reason"), "incident 2026-201"),
		chromedp.Click(chromedp.ID("export")))
	var file string
	waitFor(t, 120*time.Second, "the downloaded export", func() bool {
		es, _ := os.ReadDir(dl)
		for _, e := range es {
			if strings.HasSuffix(e.Name(), ".zip") {
				file = filepath.Join(dl, e.Name())
				return true
			}
		}
		return false
	})
	t.Logf("%d segments closed; downloaded %s", len(segs), filepath.Base(file))
	if p := eval[[]float64](t, tab, `(() => { const p = document.getElementById("export-progress"); return [p.value, p.max]; })()`); p[0] != p[1] || p[1] < 1000 {
		t.Errorf("export progress ends at %v of %v", p[0], p[1])
	}
	if out, code := a.nvr("verify", file, "-device-cert", a.deviceCert()); code != 0 || !strings.Contains(out, "VERDICT: AUTHENTIC") {
		t.Errorf("nvr verify of the browser's download: exit %d\n%s", code, out)
	}

	// Several cameras in one file: the camera page's link opens the export page (in a second tab, so that
	// the live view above keeps playing) with cam1 ticked; the user ticks cam2; the browser downloads one
	// file that nvr verify accepts camera by camera.
	href := eval[string](t, tab, `document.getElementById("export-several").getAttribute("href")`)
	if !strings.HasPrefix(href, "/export?camera=cam1&") {
		t.Fatalf("the camera page links to %q", href)
	}
	xtab := tabAs(t, b, admin)
	if _, err := chromedp.CallBrowser(xtab, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl, BrowserContextID: chromedp.FromContext(xtab).BrowserContextID}); err != nil {
		t.Fatalf("download behavior: %v", err)
	}
	do(t, xtab, "export page", chromedp.Navigate(origin+href), chromedp.WaitVisible(chromedp.ID("export-cam-cam2")))
	if !eval[bool](t, xtab, `document.getElementById("export-cam-cam1").checked`) {
		t.Error("cam1 is not ticked on the export page reached from its camera page")
	}
	do(t, xtab, "export of two cameras",
		chromedp.Click(chromedp.ID("export-cam-cam2")),
		chromedp.SetValue(chromedp.ID("export-from"), began.Add(-time.Minute).UTC().Format("2006-01-02T15:04:05")),
		chromedp.SetValue(chromedp.ID("export-to"), to.Format("2006-01-02T15:04:05")),
		chromedp.SendKeys(chromedp.ID("reason"), "incident 2026-202"),
		chromedp.Click(chromedp.ID("export")))
	var multi string
	waitFor(t, 120*time.Second, "the downloaded export of two cameras", func() bool {
		es, _ := os.ReadDir(dl)
		for _, e := range es {
			if strings.Contains(e.Name(), "2-cameras-") && strings.HasSuffix(e.Name(), ".zip") {
				multi = filepath.Join(dl, e.Name())
				return true
			}
		}
		return false
	})
	if out, code := a.nvr("verify", multi, "-device-cert", a.deviceCert()); code != 0 || !strings.Contains(out, "the recordings of all 2 cameras are complete") ||
		!strings.Contains(out, "camera cam1: every check passed") || !strings.Contains(out, "camera cam2: every check passed") {
		t.Errorf("nvr verify of the browser's two-camera download: exit %d\n%s", code, out)
	}

	// A role without the camera: no video on the page, and the server refuses the stream requests.
	vtab := tabAs(t, b, viewer)
	do(t, vtab, "viewer on cam2", chromedp.Navigate(origin+"/cameras/cam2"), chromedp.WaitVisible(chromedp.CSS("main")))
	if n := eval[int](t, vtab, `document.querySelectorAll("video").length`); n != 0 {
		t.Errorf("the viewer sees %d video elements on cam2's page", n)
	}
	at := url.QueryEscape(began.Add(5 * time.Second).UTC().Format(time.RFC3339))
	for _, p := range []string{"/api/v1/cameras/cam2/live/stream", "/api/v1/cameras/cam2/playback?at=" + at, "/api/v1/cameras/cam2/timeline"} {
		if st := eval[int](t, vtab, `fetch("`+p+`", {credentials: "same-origin"}).then(r => r.status)`); st != 403 {
			t.Errorf("viewer GET %s: %d, want 403", p, st)
		}
	}
	// The viewer may export no camera: the export page offers none, and the API refuses, naming the camera.
	do(t, vtab, "viewer's export page", chromedp.Navigate(origin+"/export?camera=cam1"), chromedp.WaitVisible(chromedp.ID("error")))
	if msg := eval[string](t, vtab, `document.getElementById("error").textContent + " " + (document.getElementById("export-refused") || {}).textContent`); !strings.Contains(msg, "you may export no camera") ||
		!strings.Contains(msg, "cam1: no role grants camera.export on camera cam1") {
		t.Errorf("viewer's export page says %q", msg)
	}
	if r := eval[string](t, vtab, `fetch("/api/v1/export", {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json",
			"X-CSRF-Token": document.querySelector('meta[name="csrf"]').content}, body: JSON.stringify({cameras: ["cam1", "cam2"],
			from: "`+began.UTC().Format(time.RFC3339)+`", to: "`+to.Format(time.RFC3339)+`", reason: "curious"})}).then(async r => r.status + " " + await r.text())`); !strings.HasPrefix(r, "403 ") ||
		!strings.Contains(r, "camera cam1") || !strings.Contains(r, "camera cam2") {
		t.Errorf("viewer's API export: %s", r)
	}
	// The same viewer may watch cam1.
	if st := eval[int](t, vtab, `fetch("/api/v1/cameras/cam1/playback?at=`+at+`", {credentials: "same-origin"}).then(async r => { await r.arrayBuffer(); return r.status; })`); st != 200 {
		t.Errorf("viewer playback of cam1: %d", st)
	}

	// Metrics: the administrator (status right) gets the exposition; the viewer is refused.
	st, body := admin.get("/api/v1/metrics")
	for _, want := range []string{`nvr_camera_recording{camera="cam1"} 1`, "nvr_recorded_bytes_total{camera=\"cam2\"}", "nvr_storage_used_bytes",
		`nvr_login_attempts_total{step="password",result="ok"}`, "nvr_live_viewers 1", "nvr_exports_total{result=\"ok\"} 2"} {
		if st != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics: %d, lacks %q", st, want)
		}
	}
	if st, _ := viewer.get("/api/v1/metrics"); st != 403 {
		t.Errorf("viewer metrics: %d, want 403", st)
	}

	// Everything above is in the audit log, allowed and denied.
	nvrd.stop(t, 30*time.Second)
	audit, err := os.ReadFile(filepath.Join(a.data, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	type entry struct{ Subject, Action, Object, Result, Reason string }
	var es []entry
	for _, l := range strings.Split(string(audit), "\n") {
		var ln struct{ E entry } // each line: {"e": entry, "h": hash}
		if json.Unmarshal([]byte(l), &ln) == nil && ln.E.Action != "" {
			es = append(es, ln.E)
		}
	}
	for _, w := range []entry{
		{Subject: "admin", Action: "camera.live", Object: "camera/cam1", Result: "allow"},
		{Subject: "admin", Action: "camera.playback", Object: "camera/cam1@", Result: "allow"},
		{Subject: "admin", Action: "export", Object: "camera/cam1", Result: "ok"},
		{Subject: "admin", Action: "export", Object: "camera/cam2", Result: "ok"},
		{Subject: "viewer1", Action: "camera.export", Object: "camera/cam2", Result: "deny"},
		{Subject: "viewer1", Action: "camera.live", Object: "camera/cam2", Result: "deny"},
		{Subject: "viewer1", Action: "camera.playback", Object: "camera/cam2@", Result: "deny"},
		{Subject: "viewer1", Action: "system.status", Object: "system", Result: "deny"},
	} {
		found := false
		for _, e := range es {
			if strings.HasPrefix(e.Subject, w.Subject) && e.Action == w.Action && strings.HasPrefix(e.Object, w.Object) && e.Result == w.Result {
				found = true
			}
		}
		if !found {
			t.Errorf("no audit entry %+v", w)
		}
	}
	for _, s := range []string{adminPassword, viewerPassword, admin.session(), viewer.session()} {
		if strings.Contains(a.allLogs(), s) {
			t.Error("a secret is in nvrd's log")
		}
	}
}
