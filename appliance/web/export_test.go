package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

func TestExportCameras(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
		err  string
	}{
		{[]string{"cam1"}, "cam1", ""},
		{[]string{"cam1", "cam2", "cam1"}, "cam1,cam2", ""},
		{[]string{"cam1, cam2", ""}, "cam1,cam2", ""},
		{nil, "", "at least one"},
		{[]string{"cam1", "../x"}, "", "letters, digits"},
		{[]string{strings.Repeat("a", 65)}, "", "letters, digits"},
	} {
		got, err := exportCameras(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("%q: %q %v, want %q", c.in, got, err, c.want)
		}
	}
	var many []string
	for i := range 65 {
		many = append(many, "c"+strings.Repeat("x", i%60)+string(rune('a'+i/60)))
	}
	if _, err := exportCameras(many); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("65 cameras: %v", err)
	}
}

// TestExportSeveralCameras: the export page lists only the cameras the user may export; an export of
// several cameras through the form and through the API reaches the exporter as one request, each camera
// decided and audited; a camera the user may not export refuses the whole export, naming it; under dual
// authorization one approval covers the set, and every camera is decided again when it is used.
func TestExportSeveralCameras(t *testing.T) {
	e := startEnv(t)
	ac := e.client("")
	adminSecret := e.adminSetup(ac, "admin", adminPassword)
	admin := authz.Subject{User: "admin", Via: "session"}
	both := []authz.Action{authz.Playback, authz.Export}
	for _, r := range []authz.Role{
		{Name: "investigator", Cameras: map[string][]authz.Action{"cam1": both, "cam2": both}, System: []authz.Action{authz.ViewStatus}},
		{Name: "supervised", Cameras: map[string][]authz.Action{"cam1": both, "cam2": both}, System: []authz.Action{authz.ViewStatus}, DualExport: true},
		{Name: "vms-export", Cameras: map[string][]authz.Action{"cam1": both, "cam2": both}},
	} {
		if err := e.az.PutRole(admin, r, ""); err != nil {
			t.Fatal(err)
		}
	}
	const pw = "copper willow 31 heron"
	for _, u := range []authz.NewUser{{Name: "inv", Password: pw, Roles: []string{"investigator"}}, {Name: "sup", Password: pw, Roles: []string{"supervised"}},
		{Name: "vms1", Roles: []string{"vms-export"}, Service: true}} {
		if err := e.az.CreateUser(admin, u, ""); err != nil {
			t.Fatal(err)
		}
	}
	now := e.clk.Now()
	from, to := now.Add(-20*time.Minute).UTC().Format(time.RFC3339), now.Add(-10*time.Minute).UTC().Format(time.RFC3339)

	// The page: cam1 and cam2 offered (cam1 ticked, as the link asks), gate refused with its reason.
	c := e.client("")
	e.enrolLogin(c, "inv", pw)
	st, body, tok := e.get(c, "/export?camera=cam1&camera=gate&from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to))
	if st != 200 || !strings.Contains(body, `id="export-cam-cam1" checked`) || !strings.Contains(body, `id="export-cam-cam2">`) ||
		strings.Contains(body, `id="export-cam-gate"`) || !strings.Contains(body, "You may not export: gate: no role grants camera.export on camera gate") {
		t.Fatalf("export page: %d\n%s", st, body)
	}

	// The form: two cameras, one download.
	resp := e.post(c, "/export", url.Values{"csrf": {tok}, "camera": {"cam1", "cam2"}, "from": {from}, "to": {to}, "reason": {"incident 2026-310"}})
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Disposition"), "2-cameras-") {
		t.Fatalf("export form: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Disposition"), b)
	}
	if x := e.app.Exports(); len(x) != 1 || !slices.Equal(x[0].Cameras, []string{"cam1", "cam2"}) || x[0].User != "inv" || x[0].Reason != "incident 2026-310" {
		t.Fatalf("exports %+v", x)
	}

	// A camera the user may not export refuses the whole export, naming it.
	resp = e.post(c, "/export", url.Values{"csrf": {tok}, "camera": {"cam1", "gate"}, "from": {from}, "to": {to}, "reason": {"incident 2026-311"}})
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "camera gate: no role grants camera.export") ||
		!strings.Contains(string(b), "Nothing was exported") || len(e.app.Exports()) != 1 {
		t.Fatalf("export with a forbidden camera: %d %s", resp.StatusCode, b)
	}

	// The API, with a service account's token.
	token, err := e.az.IssueToken(admin, "vms1", "test", "")
	if err != nil {
		t.Fatal(err)
	}
	api := func(body string) (int, http.Header, []byte) {
		req, _ := http.NewRequest("POST", e.origin+"/api/v1/export", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.client("").Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	jsonBody := func(cams ...string) string {
		b, _ := json.Marshal(map[string]any{"cameras": cams, "from": from, "to": to, "reason": "vms archive", "passphrase": "a long shared passphrase"})
		return string(b)
	}
	if st, h, b := api(jsonBody("cam2", "cam1")); st != 200 || !strings.HasSuffix(h.Get("Content-Disposition"), `evidence.zip.age"`) {
		t.Fatalf("API export: %d %v %s", st, h, b)
	}
	// The exporter got the passphrase, and it was wiped once the export was written.
	if x := e.app.Exports(); len(x) != 2 || !slices.Equal(x[1].Cameras, []string{"cam2", "cam1"}) || len(x[1].Passphrase) != 24 ||
		strings.Trim(string(x[1].Passphrase), "\x00") != "" {
		t.Fatalf("API exports %+v", x)
	}
	if st, _, b := api(jsonBody("cam1", "gate")); st != 403 || !strings.Contains(string(b), "camera gate") {
		t.Errorf("API export with a forbidden camera: %d %s", st, b)
	}
	if st, _, b := api(`{"cameras":[],"from":"` + from + `","to":"` + to + `","reason":"x"}`); st != 400 || !strings.Contains(string(b), "at least one") {
		t.Errorf("API export of no camera: %d %s", st, b)
	}

	// Dual authorization: one approval covers both cameras.
	sc := e.client("")
	e.enrolLogin(sc, "sup", pw)
	_, _, stok := e.get(sc, "/export")
	resp = e.post(sc, "/export", url.Values{"csrf": {stok}, "camera": {"cam2", "cam1"}, "from": {from}, "to": {to}, "reason": {"incident 2026-312"}})
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/approvals/") {
		t.Fatalf("supervised export: %d %q", resp.StatusCode, loc)
	}
	if _, body, _ := e.get(sc, loc); !strings.Contains(body, "2 cameras (cam1, cam2), in one export") {
		t.Errorf("the approval page does not show the set:\n%s", body)
	}
	resp = e.post(sc, loc+"/download", url.Values{"csrf": {stok}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(e.app.Exports()) != 2 {
		t.Fatalf("download before approval: %d", resp.StatusCode)
	}
	e.clk.Advance(31 * time.Second)
	code, _ := authz.TOTPCode(adminSecret, e.clk.Now())
	resp = e.post(sc, loc, url.Values{"csrf": {stok}, "approver": {"admin"}, "approver_password": {adminPassword}, "approver_code": {code}})
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "approved by admin") || !strings.Contains(string(b), "2 cameras (cam1, cam2)") {
		t.Fatalf("approval: %d", resp.StatusCode)
	}
	resp = e.post(sc, loc+"/download", url.Values{"csrf": {stok}})
	resp.Body.Close()
	x := e.app.Exports()
	if resp.StatusCode != 200 || len(x) != 3 || !slices.Equal(x[2].Cameras, []string{"cam1", "cam2"}) || x[2].ApprovedBy != "admin" || x[2].User != "sup" {
		t.Fatalf("approved export: %d %+v", resp.StatusCode, x)
	}

	// A right withdrawn from one camera of an approved set between approval and use refuses the export.
	_, _, stok = e.get(sc, "/export")
	resp = e.post(sc, "/export", url.Values{"csrf": {stok}, "camera": {"cam1", "cam2"}, "from": {from}, "to": {to}, "reason": {"incident 2026-313"}})
	resp.Body.Close()
	loc = resp.Header.Get("Location")
	e.clk.Advance(31 * time.Second)
	code, _ = authz.TOTPCode(adminSecret, e.clk.Now())
	resp = e.post(sc, loc, url.Values{"csrf": {stok}, "approver": {"admin"}, "approver_password": {adminPassword}, "approver_code": {code}})
	resp.Body.Close()
	if err := e.az.PutRole(admin, authz.Role{Name: "supervised", Cameras: map[string][]authz.Action{"cam1": both}, System: []authz.Action{authz.ViewStatus}, DualExport: true}, ""); err != nil {
		t.Fatal(err)
	}
	resp = e.post(sc, loc+"/download", url.Values{"csrf": {stok}})
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "camera cam2") || len(e.app.Exports()) != 3 {
		t.Fatalf("approved set after cam2 was withdrawn: %d %s", resp.StatusCode, b)
	}

	// The audit log: each camera decided, the refusal, the approval of the set (authz's own entries for
	// its request, approval and use name every camera, and there is one request entry per approval), an
	// export entry per camera.
	set := "cameras/cam1,cam2@" + now.Add(-20*time.Minute).UTC().Format(time.RFC3339)
	for _, w := range []struct{ subject, action, result string }{
		{"sup", "approval.request", "pending"},
		{"admin", "approve", "ok"},
		{"sup", "approval.use", "ok"},
		{"sup", "approval.use", "fail"},
	} {
		es, err := e.az.AuditEntries(authz.AuditFilter{Subject: w.subject, Action: w.action, Result: w.result, Limit: 1000})
		if err != nil || !slices.ContainsFunc(es, func(en authz.Entry) bool { return en.Object == set }) {
			t.Errorf("no audit entry %+v on %s (%v)", w, set, err)
		}
		if w.action == "approval.request" && len(es) != 2 {
			t.Errorf("%d approval requests for 2 approvals: %+v", len(es), es)
		}
	}
	for _, w := range []struct{ subject, action, object, result string }{
		{"inv", "camera.export", "camera/cam2", "allow"},
		{"inv", "camera.export", "camera/gate", "deny"},
		{"inv", "export", "camera/cam2", "ok"},
		{"vms1", "camera.export", "camera/gate", "deny"},
		{"sup", "export", "camera/cam2", "ok"},
		{"sup", "camera.export", "camera/cam2", "deny"},
	} {
		es, err := e.az.AuditEntries(authz.AuditFilter{Subject: w.subject, Action: w.action, Result: w.result, Limit: 1000})
		if err != nil || !slices.ContainsFunc(es, func(en authz.Entry) bool { return strings.HasPrefix(en.Object, w.object) }) {
			t.Errorf("no audit entry %+v (%v)", w, err)
		}
	}
}
