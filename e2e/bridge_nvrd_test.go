package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/headers"

	"github.com/edgenvr/nvr/appliance/authz"
)

// apiCall calls nvrd's JSON API as a session (csrf set on POST) or with an API token (bearer), and
// decodes the answer.
func apiCall(t *testing.T, c *http.Client, origin, method, path, bearer, csrf string, out any) int {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, _ := http.NewRequest(method, origin+path, body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", origin)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

var newTokenRE = regexp.MustCompile(`id="new-token">(nvrt_[^<]+)<`)

// TestBridgeThroughNvrd is the bridge's acceptance test through the real binaries: nvrd (swtpm as its
// TPM) recording camsim's cameras, with the bridge on kernel-chosen ports that nvrd reports in its log.
// An administrator is set up through the web pages; a service account gets an API token there and issues
// its own bridge credential through the JSON API, as does a person with their session; the administrator
// issues one for a second service account. ffprobe reads live video and a recorded range (a start time in
// the URL), gortsplib's client a clock range (Range: clock=…); without credentials the bridge answers
// 401, to a role without the camera 403; every issue and every decision is in the audit log, no
// credential in a log line.
func TestBridgeThroughNvrd(t *testing.T) {
	cs := startCamsim(t, 2)
	a := newAppliance(t, "", map[string]string{"cam1": "rtsp://" + cs.RTSP + "/cam1", "cam2": "rtsp://" + cs.RTSP + "/cam2"},
		cs.Password, "-segment", "3s", "-transport", "tcp", "-display", "console",
		"-bridge-rtsp", "127.0.0.1:0", "-bridge-rtsps", "127.0.0.1:0")
	began := time.Now()
	nvrd := a.start()
	var origin, rtspAddr, rtspsAddr string
	waitFor(t, 30*time.Second, "the web server and the bridge listening", func() bool {
		if ev := a.events("web server listening"); len(ev) > 0 {
			origin, _ = ev[0]["url"].(string)
		}
		if ev := a.events("bridge listening"); len(ev) > 0 {
			rtspAddr, _ = ev[0]["rtsp"].(string)
			rtspsAddr, _ = ev[0]["rtsps"].(string)
		}
		return origin != "" && rtspAddr != "" && rtspsAddr != ""
	})
	origin = strings.TrimSuffix(origin, "/")
	if strings.HasSuffix(rtspAddr, ":0") || strings.HasSuffix(rtspsAddr, ":0") {
		t.Fatalf("nvrd reports unbound bridge addresses %s %s", rtspAddr, rtspsAddr)
	}
	const adminPassword = "basalt meadow 93 lantern"
	admin := setupAdmin(t, origin, setupCode(t, nvrd), adminPassword)

	// Roles and accounts, through the users page; the roles grant the RTSP bridge right (system.bridge).
	tok := admin.csrf("/users")
	for _, r := range []url.Values{
		{"name": {"cam1-viewer"}, "cameras": {"cam1"}, "cam_camera.live": {"on"}, "cam_camera.playback": {"on"}, "sys_system.bridge": {"on"}},
		{"name": {"cam2-viewer"}, "cameras": {"cam2"}, "cam_camera.live": {"on"}, "cam_camera.playback": {"on"}, "sys_system.bridge": {"on"}},
	} {
		r.Set("csrf", tok)
		r.Set("op", "put")
		r.Set("schedule", "")
		r.Set("max_age_hours", "0")
		if st, body := admin.post("/roles", r); st != 200 {
			t.Fatalf("role %s: %d %.300s", r.Get("name"), st, body)
		}
	}
	const viewerPassword = "orchid ferry 28 granite"
	for _, u := range []url.Values{
		{"name": {"vms"}, "service": {"on"}, "roles": {"cam1-viewer"}},
		{"name": {"other"}, "service": {"on"}, "roles": {"cam2-viewer"}},
		{"name": {"viewer1"}, "password": {viewerPassword}, "roles": {"cam1-viewer"}},
	} {
		u.Set("csrf", tok)
		u.Set("op", "create")
		if st, body := admin.post("/users", u); st != 200 || !strings.Contains(body, "account "+u.Get("name")+" created") {
			t.Fatalf("create %s: %d %.300s", u.Get("name"), st, body)
		}
	}
	st, body := admin.post("/users", url.Values{"csrf": {tok}, "op": {"issue-token"}, "name": {"vms"}, "label": {"vms integration"}})
	m := newTokenRE.FindStringSubmatch(body)
	if st != 200 || m == nil {
		t.Fatalf("API token for vms: %d", st)
	}
	vmsToken := m[1]
	plain := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the appliance's own certificate

	// Credentials through the API: vms its own (API token), the admin one for "other", viewer1 their own.
	type issued struct {
		User       string
		Serial     uint64
		Credential string
		Error      string
	}
	var vms, other, viewer issued
	if st := apiCall(t, plain, origin, "POST", "/api/v1/bridge/credentials/vms", vmsToken, "", &vms); st != 200 || !strings.HasPrefix(vms.Credential, "nvrb_") {
		t.Fatalf("vms issues its own: %d %s", st, vms.Error)
	}
	adminCSRF := admin.csrf("/bridge")
	if st := apiCall(t, admin.c, origin, "POST", "/api/v1/bridge/credentials/other", "", adminCSRF, &other); st != 200 || other.Credential == "" {
		t.Fatalf("admin issues for other: %d %s", st, other.Error)
	}
	var refused issued
	if st := apiCall(t, admin.c, origin, "POST", "/api/v1/bridge/credentials/viewer1", "", adminCSRF, &refused); st != 403 || refused.Credential != "" {
		t.Fatalf("admin issued a person's credential: %d", st)
	}
	viewerW := enrolUser(t, origin, "viewer1", viewerPassword)
	if st := apiCall(t, viewerW.c, origin, "POST", "/api/v1/bridge/credentials/viewer1", "", viewerW.csrf("/bridge"), &viewer); st != 200 || viewer.Credential == "" {
		t.Fatalf("viewer1 issues their own: %d %s", st, viewer.Error)
	}
	var info struct {
		URLs        []string
		Credential  *struct{ User string }
		Credentials []struct{ User string }
	}
	if st := apiCall(t, admin.c, origin, "GET", "/api/v1/bridge", "", "", &info); st != 200 || len(info.Credentials) != 3 ||
		len(info.URLs) != 2 || info.URLs[0] != "rtsp://"+rtspAddr {
		t.Fatalf("GET /api/v1/bridge as admin: %d %+v", st, info)
	}

	// Live: ffprobe with the credentials, digest over RTSP and over RTSPS.
	if p := ffprobeURL(t, rtspURL("rtsp", rtspAddr, "vms", vms.Credential, "/cam1"), 25); p.Codec != "h264" || p.Width == 0 || p.Frames < 10 {
		t.Fatalf("live as vms: ffprobe saw %+v", p)
	}
	if p := ffprobeURL(t, rtspURL("rtsps", rtspsAddr, "viewer1", viewer.Credential, "/cam1/live"), 10); p.Codec != "h264" || p.Frames < 5 {
		t.Fatalf("live as viewer1 over RTSPS: ffprobe saw %+v", p)
	}
	if p := ffprobeURL(t, rtspURL("rtsp", rtspAddr, "other", other.Credential, "/cam2"), 10); p.Codec != "h264" {
		t.Fatalf("live as other on cam2: ffprobe saw %+v", p)
	}
	// Without credentials: 401. A role without the camera: 403.
	if out, err := exec.Command("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-i", "rtsp://"+rtspAddr+"/cam1").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "401") {
		t.Fatalf("ffprobe without credentials: err %v, output %s", err, out)
	}
	if out, err := exec.Command("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-i",
		rtspURL("rtsp", rtspAddr, "other", other.Credential, "/cam1")).CombinedOutput(); err == nil || !strings.Contains(string(out), "403") {
		t.Fatalf("ffprobe as other on cam1: err %v, output %s", err, redact(string(out), rtspURL("rtsp", rtspAddr, "other", other.Credential, "/cam1")))
	}

	// A recorded range: wait for closed segments of cam1, then read from a time inside them.
	var recs struct {
		Segments []struct{ Start, End time.Time }
	}
	waitFor(t, 60*time.Second, "two closed segments of cam1", func() bool {
		q := "/api/v1/cameras/cam1/recordings?from=" + url.QueryEscape(began.Add(-time.Minute).UTC().Format(time.RFC3339))
		return apiCall(t, plain, origin, "GET", q, vmsToken, "", &recs) == 200 && len(recs.Segments) >= 2
	})
	from := recs.Segments[0].Start.Add(1500 * time.Millisecond)
	q := "?start=" + from.UTC().Format("20060102T150405Z")
	if p := ffprobeURL(t, rtspURL("rtsp", rtspAddr, "vms", vms.Credential, "/cam1/replay"+q), 25); p.Codec != "h264" || p.Frames < 10 {
		t.Fatalf("replay as vms: ffprobe saw %+v", p)
	}
	want := recs.Segments[0].Start.Add(2 * time.Second).Truncate(time.Second)
	rng := &headers.Range{Value: &headers.RangeUTC{Start: want}}
	got := readRTP(t, "rtsps", rtspsAddr, "viewer1", viewer.Credential, "/cam1/replay", rng, 0, 3*time.Second)
	wantTS := uint32(want.Unix()*90000 + int64(want.Nanosecond())*90000/1e9)
	if d := int64(int32(wantTS - got.firstTS)); got.packets == 0 || d < 0 || d > 2*90000 {
		t.Fatalf("clock-range replay: %d packets, first RTP timestamp %d ticks before the requested time (want 0 to 2 s)", got.packets, d)
	}
	if !strings.HasPrefix(got.rangeHdr, "clock=") {
		t.Fatalf("PLAY answered Range %q", got.rangeHdr)
	}
	if res := digestDescribe(t, rtspAddr, "/cam1/replay"+q, "other", other.Credential); res.StatusCode != 403 {
		t.Fatalf("replay of cam1 as other: %d, want 403", res.StatusCode)
	}

	// Revoked through the API: 401 at once.
	if st := apiCall(t, admin.c, origin, "POST", "/api/v1/bridge/credentials/other/revoke", "", adminCSRF, nil); st != 200 {
		t.Fatalf("revoke other: %d", st)
	}
	if res := digestDescribe(t, rtspAddr, "/cam2", "other", other.Credential); res.StatusCode != 401 {
		t.Fatalf("a revoked credential: %d, want 401", res.StatusCode)
	}

	// The audit log, read through the API by the administrator.
	resp, err := admin.c.Get(origin + "/api/v1/audit")
	if err != nil {
		t.Fatal(err)
	}
	var entries []authz.Entry
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct { // the audit file's line: the entry and its hash
			E authz.Entry `json:"e"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.E.Seq > 0 {
			entries = append(entries, line.E)
		}
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(entries) == 0 {
		t.Fatalf("GET /api/v1/audit: %s, %d entries", resp.Status, len(entries))
	}
	for _, w := range []struct{ action, object, result, subject string }{
		{"bridge.credential.issue", "user/vms", "ok", "vms (token"},
		{"bridge.credential.issue", "user/other", "ok", "admin (session"},
		{"bridge.credential.issue", "user/viewer1", "refused", "admin (session"},
		{"bridge.credential.issue", "user/viewer1", "ok", "viewer1 (session"},
		{"bridge.credential.revoke", "user/other", "ok", "admin (session"},
		{"system.bridge", "system", "allow", "vms (token"},
		{"system.bridge", "system", "allow", "viewer1 (session"},
		{"system.bridge", "system", "allow", "other"},
		{"camera.live", "camera/cam1", "allow", "vms (token bridge-1)"},
		{"camera.live", "camera/cam1", "allow", "viewer1 (bridge bridge-1)"},
		{"camera.live", "camera/cam1", "deny", "other (token bridge-1)"},
		{"camera.live", "camera/cam1", "deny", "anonymous"},
		{"camera.playback", "camera/cam1@", "allow", "vms (token bridge-1)"},
		{"camera.playback", "camera/cam1@", "allow", "viewer1 (bridge bridge-1)"},
		{"bridge.login", "bridge", "failure", "other"},
	} {
		found := false
		for _, e := range entries {
			if e.Action == w.action && strings.HasPrefix(e.Object, w.object) && e.Result == w.result && strings.HasPrefix(e.Subject, w.subject) {
				found = true
			}
		}
		if !found {
			t.Errorf("no audit entry %+v", w)
		}
	}

	nvrd.stop(t, 30*time.Second)
	logs := a.allLogs()
	for _, s := range []string{vms.Credential, other.Credential, viewer.Credential, vmsToken} {
		if strings.Contains(logs, s) {
			t.Errorf("a secret (%d characters) is in nvrd's output", len(s))
		}
	}
}
