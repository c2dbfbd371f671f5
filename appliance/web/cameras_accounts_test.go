package web

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
