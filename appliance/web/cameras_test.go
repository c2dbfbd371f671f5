package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/camera"
)

// TestCameraPagesHTTP drives the camera pages and the mounted camera API over HTTPS against a real
// camera manager (registry sealed by swtpm) and camsim's ONVIF cameras: adoption by address through the
// page and through the API, inventory, rotation through both (camsim's state shows the new password;
// the API refuses a session's change without its CSRF token), a firmware rollout uploaded through the
// page (a wrong vendor checksum touches nothing, a corrupt image stops at the canary, a good one updates
// every camera with per-camera status), and a viewer without the cameras right refused the page, the
// API and the upload, every decision audited. No camera password appears in any page, answer or log.
func TestCameraPagesHTTP(t *testing.T) {
	ce := startCameraEnv(t, 2, "")
	e := ce.env
	c := e.client("")
	adminSecret := e.adminSetup(c, "admin", adminPassword)
	e.login(c, "admin", adminPassword, adminSecret)
	var shown []string // every page and answer, checked for secrets at the end

	code, body, csrf := e.get(c, "/cameras")
	if code != 200 || !strings.Contains(body, "No camera adopted yet") || csrf == "" {
		t.Fatalf("empty camera page: %d %.300s", code, body)
	}
	if !strings.Contains(body, `href="/cameras"`) {
		t.Error("no navigation link to the camera page for the admin")
	}

	// Adopt cam1 through the page, by address.
	cam1, cam2 := ce.sim.ONVIF[0], ce.sim.ONVIF[1]
	resp := e.post(c, "/cameras/adopt", url.Values{"csrf": {csrf}, "https": {cam1.HTTPS}, "http": {cam1.HTTP},
		"name": {"Gate"}, "username": {camFactoryUser}, "password": {camFactoryPass}})
	b := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(b, "adopted") {
		t.Fatalf("adopt through the page: %d %.500s", resp.StatusCode, b)
	}
	shown = append(shown, b)
	cams := ce.mgr.Cameras()
	if len(cams) != 1 {
		t.Fatalf("%d cameras adopted", len(cams))
	}
	id1 := cams[0].ID
	st := ce.sim.State(t)[cam1.Camera]
	pw1 := st.Users[0].Password
	if pw1 == camFactoryPass || len(pw1) < 32 {
		t.Fatalf("the installer's password was not replaced (len %d)", len(pw1))
	}
	code, body, _ = e.get(c, "/cameras")
	shown = append(shown, body)
	for _, want := range []string{st.Serial, st.MAC, "CamSim-1080", "1.0.0", "in use", "Gate", "never (adopted"} {
		if !strings.Contains(body, want) {
			t.Errorf("inventory lacks %q", want)
		}
	}
	// A wrong installer password: refused, and the form is refilled without it.
	resp = e.post(c, "/cameras/adopt", url.Values{"csrf": {csrf}, "https": {cam2.HTTPS}, "username": {camFactoryUser},
		"password": {"wrong-password-typed"}, "name": {"Yard"}})
	b = readAll(t, resp)
	if resp.StatusCode == 200 || !strings.Contains(b, "adoption failed") || strings.Contains(b, "wrong-password-typed") || !strings.Contains(b, `value="Yard"`) {
		t.Errorf("adoption with a wrong password: %d %.400s", resp.StatusCode, b)
	}

	// The API, mounted under /api/v1: the inventory without secrets.
	code, b = e.send(c, "GET", "/api/v1/cameras", "", nil, nil)
	var inv []camera.CameraView
	if code != 200 || json.Unmarshal([]byte(b), &inv) != nil || len(inv) != 1 || inv[0].Serial != st.Serial {
		t.Fatalf("GET /api/v1/cameras: %d %.300s", code, b)
	}
	shown = append(shown, b)
	// Adopt cam2 through the API with the session's CSRF token.
	adopt, _ := json.Marshal(camera.AdoptRequest{HTTPS: cam2.HTTPS, Username: camFactoryUser, Password: camFactoryPass})
	if code, b = e.send(c, "POST", "/api/v1/cameras/adopt", "application/json", strings.NewReader(string(adopt)), nil); code != 403 {
		t.Errorf("API adoption without CSRF token: %d %s", code, b)
	}
	if code, b = e.send(c, "POST", "/api/v1/cameras/adopt", "application/json", strings.NewReader(string(adopt)), map[string]string{"X-CSRF-Token": csrf}); code != 200 {
		t.Fatalf("API adoption: %d %s", code, b)
	}
	shown = append(shown, b)
	var id2 string
	for _, cm := range ce.mgr.Cameras() {
		if cm.ID != id1 {
			id2 = cm.ID
		}
	}

	// Rotation through the API: refused without the CSRF token (nothing changes), done with it.
	if code, b = e.send(c, "POST", "/api/v1/cameras/"+id1+"/rotate", "", nil, nil); code != 403 {
		t.Errorf("API rotation without CSRF token: %d %s", code, b)
	}
	if got := ce.sim.State(t)[cam1.Camera].Users[0].Password; got != pw1 {
		t.Fatal("the password changed on a request without CSRF token")
	}
	if code, b = e.send(c, "POST", "/api/v1/cameras/"+id1+"/rotate", "", nil, map[string]string{"X-CSRF-Token": csrf}); code != 200 {
		t.Fatalf("API rotation: %d %s", code, b)
	}
	pw2 := ce.sim.State(t)[cam1.Camera].Users[0].Password
	if pw2 == pw1 || len(pw2) < 32 {
		t.Fatal("API rotation did not change camsim's password")
	}
	if !e.auditHas("admin", "camera.rotate", "ok", "") {
		t.Error("API rotation not audited")
	}
	// Rotation through the page.
	resp = e.post(c, "/cameras/"+id1+"/rotate", url.Values{"csrf": {csrf}})
	b = readAll(t, resp)
	pw3 := ce.sim.State(t)[cam1.Camera].Users[0].Password
	if resp.StatusCode != 200 || pw3 == pw2 || !strings.Contains(b, "replaced by a new generated one") {
		t.Fatalf("page rotation: %d, changed %v", resp.StatusCode, pw3 != pw2)
	}
	shown = append(shown, b)
	// Rotate all.
	resp = e.post(c, "/cameras/rotate", url.Values{"csrf": {csrf}})
	b = readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(b, "2 of 2 passwords replaced") {
		t.Fatalf("rotate all: %d %.300s", resp.StatusCode, b)
	}
	shown = append(shown, b)

	// Firmware through the page: a wrong vendor checksum touches nothing.
	good, goodSum := camsimImage("2.0.0", false)
	bad, badSum := camsimImage("2.0.0", true)
	upload := func(image []byte, sum string, first string) (int, string) {
		ct, body := multipartBody(t, [][2]string{{"csrf", csrf}, {"sha256", sum}, {"model", "CamSim-1080"}, {"version", "2.0.0"},
			{"camera", id1}, {"camera", id2}, {"first", first}, {"canary", "1"}}, image)
		return e.send(c, "POST", "/cameras/firmware", ct, body, nil)
	}
	if code, b = upload(good, badSum, ""); code != http.StatusUnprocessableEntity || !strings.Contains(b, "no camera touched") {
		t.Errorf("wrong vendor checksum: %d %.300s", code, b)
	}
	// A corrupt image (the vendor's checksum matches the file, the camera refuses it) stops at the canary.
	if code, b = upload(bad, badSum, id2); code != http.StatusAccepted {
		t.Fatalf("corrupt image upload: %d %.300s", code, b)
	}
	job := waitRollout(t, e, c)
	if job.State != "stopped" || len(job.Report.Cameras) != 2 || job.Report.Cameras[0].Camera != id2 ||
		job.Report.Cameras[0].State != camera.StatusFailed || job.Report.Cameras[1].State != camera.StatusSkipped {
		t.Fatalf("corrupt image rollout: %+v", job)
	}
	for cam, s := range ce.sim.State(t) {
		if s.Firmware != "1.0.0" {
			t.Fatalf("%s runs %s after a refused image", cam, s.Firmware)
		}
	}
	// The good image: canary, then the rest.
	if code, b = upload(good, goodSum, ""); code != http.StatusAccepted || !strings.Contains(b, "started") {
		t.Fatalf("good image upload: %d %.300s", code, b)
	}
	job = waitRollout(t, e, c)
	if job.State != "done" || len(job.Report.Cameras) != 2 || job.Report.Cameras[0].Stage != "canary" ||
		job.Report.Cameras[0].State != camera.StatusUpdated || job.Report.Cameras[1].State != camera.StatusUpdated {
		t.Fatalf("good image rollout: %+v", job)
	}
	for cam, s := range ce.sim.State(t) {
		if s.Firmware != "2.0.0" {
			t.Fatalf("%s runs %s after the rollout", cam, s.Firmware)
		}
	}
	code, body, _ = e.get(c, "/cameras")
	if !strings.Contains(body, "Every camera runs the newest firmware known") || strings.Contains(body, "never (adopted") {
		t.Errorf("firmware state after the rollout: %.2000s", body)
	}
	shown = append(shown, body)
	if !e.auditHas("admin", "camera.firmware-rollout", "ok", "CamSim-1080 2.0.0 on 2 cameras") ||
		!e.auditHas("admin", "camera.firmware-rollout", "fail", "rollout stopped") ||
		!e.auditHas("admin", "camera.firmware-rollout", "fail", "checksum") {
		t.Error("rollouts not audited")
	}

	// A viewer without the cameras right: page, API and upload refused, and audited.
	admin := authz.Subject{User: "admin", Via: "session"}
	if err := e.az.PutRole(admin, authz.Role{Name: "watch", Cameras: map[string][]authz.Action{authz.AllCameras: {authz.Live}},
		System: []authz.Action{authz.ViewStatus}}, ""); err != nil {
		t.Fatal(err)
	}
	const viewerPassword = "plum orchard 31 sunrise"
	if err := e.az.CreateUser(admin, authz.NewUser{Name: "viewer1", Password: viewerPassword, Roles: []string{"watch"}}, ""); err != nil {
		t.Fatal(err)
	}
	vc := e.client("")
	e.enrolLogin(vc, "viewer1", viewerPassword)
	_, dash, vcsrf := e.get(vc, "/dashboard")
	if strings.Contains(dash, `href="/cameras"`) {
		t.Error("the viewer sees the camera page in the navigation")
	}
	if code, body, _ = e.get(vc, "/cameras"); code != 403 || !strings.Contains(body, "denied: no role grants system.cameras") {
		t.Errorf("viewer camera page: %d %.300s", code, body)
	}
	if code, b = e.send(vc, "GET", "/api/v1/cameras", "", nil, nil); code != 403 || !strings.Contains(b, "no role grants system.cameras") {
		t.Errorf("viewer API: %d %s", code, b)
	}
	if code, b = e.send(vc, "POST", "/api/v1/cameras/rotate", "application/json", strings.NewReader("{}"), map[string]string{"X-CSRF-Token": vcsrf}); code != 403 {
		t.Errorf("viewer API rotation: %d %s", code, b)
	}
	ct, ub := multipartBody(t, [][2]string{{"csrf", vcsrf}, {"sha256", goodSum}, {"model", "CamSim-1080"}, {"version", "2.0.0"}, {"camera", id1}}, good)
	if code, b = e.send(vc, "POST", "/cameras/firmware", ct, ub, nil); code != 403 {
		t.Errorf("viewer upload: %d %.200s", code, b)
	}
	if code, b = e.send(vc, "GET", "/api/v1/cameras/firmware/rollouts", "", nil, nil); code != 403 {
		t.Errorf("viewer rollouts: %d %.200s", code, b)
	}
	es, _ := e.az.AuditEntries(authz.AuditFilter{Subject: "viewer1", Action: string(authz.ManageCameras), Result: "deny", Limit: 100})
	if len(es) < 5 {
		t.Errorf("%d audited denials of the cameras right for the viewer, want 5", len(es))
	}

	// No camera password in any page, answer or log line.
	var secrets []string
	for _, s := range ce.sim.State(t) {
		secrets = append(secrets, s.Users[0].Password)
	}
	secrets = append(secrets, camFactoryPass, pw1, pw2, pw3)
	logs := e.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a camera password (%d characters) is in the log", len(s))
		}
		for _, p := range shown {
			if strings.Contains(p, s) {
				t.Errorf("a camera password (%d characters) is in a page or answer", len(s))
			}
		}
	}
}

// waitRollout waits for the newest rollout to end, reading the API as the page's script does.
func waitRollout(t *testing.T, e *env, c *http.Client) rolloutJob {
	t.Helper()
	var job rolloutJob
	e.waitFor(60*time.Second, "the rollout to end", func() bool {
		code, b := e.send(c, "GET", "/api/v1/cameras/firmware/rollouts", "", nil, nil)
		var jobs []rolloutJob
		if code != 200 || json.Unmarshal([]byte(b), &jobs) != nil || len(jobs) == 0 {
			t.Fatalf("rollouts API: %d %.200s", code, b)
		}
		job = jobs[0]
		return job.State != "running"
	})
	return job
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}
