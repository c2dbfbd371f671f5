package authz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestDefaultRolesBridgeRight: of the roles made at first boot only the administrator may take video out
// over the RTSP bridge, and the right is one of the system actions (so the role editor offers it).
func TestDefaultRolesBridgeRight(t *testing.T) {
	if !slices.Contains(SystemActions, UseBridge) || !UseBridge.Valid() || UseBridge.IsCamera() {
		t.Fatal("system.bridge is not a system action")
	}
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestService(t, clk)
	setupAdmin(t, s, clk)
	roles, err := s.Roles()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"administrator": true, "operator": false, "viewer": false, "auditor": false}
	for _, r := range roles {
		if got := slices.Contains(r.System, UseBridge); got != want[r.Name] {
			t.Errorf("role %s: bridge right %v", r.Name, got)
		}
		delete(want, r.Name)
	}
	if len(want) != 0 {
		t.Errorf("default roles missing: %v", want)
	}
	if d := s.Decide(Request{Subject: Subject{User: "admin", Via: "session"}, Action: UseBridge}); !d.Allow {
		t.Errorf("the administrator may not use the bridge: %s", d.Reason)
	}
}

// v0Roles are roles as appliances stored them before the bridge right existed (no rights_version): the
// four defaults of that time and two custom roles.
var v0Roles = map[string]string{
	"administrator": `{"name":"administrator","cameras":{"*":["camera.live","camera.playback","camera.export","camera.delete"]},"system":["system.users","system.cameras","system.network","system.storage","system.update","system.audit","system.config.view","system.approve","system.status"],"max_recording_age":0,"dual_export":false,"dual_delete":false}`,
	"operator":      `{"name":"operator","cameras":{"*":["camera.live","camera.playback","camera.export"]},"system":["system.status"],"max_recording_age":0,"dual_export":true,"dual_delete":false}`,
	"viewer":        `{"name":"viewer","cameras":{"*":["camera.live"]},"system":["system.status"],"max_recording_age":0,"dual_export":false,"dual_delete":false}`,
	"auditor":       `{"name":"auditor","cameras":null,"system":["system.audit","system.config.view","system.status"],"max_recording_age":0,"dual_export":false,"dual_delete":false}`,
	"vms-feed":      `{"name":"vms-feed","cameras":{"gate":["camera.playback"]},"system":null,"max_recording_age":3600000000000,"dual_export":false,"dual_delete":false}`,
	"exporters":     `{"name":"exporters","cameras":{"gate":["camera.export"]},"system":[],"max_recording_age":0,"dual_export":false,"dual_delete":false}`,
}

// TestRolesStoredBeforeBridgeRight: a data directory written before system.bridge existed keeps, after the
// update, exactly who could use the bridge: roles that could watch or play back a camera get the right,
// except those whose exports need approval (the bridge's replay would bypass it); roles without a camera
// stay without. Saving a role stores the current rights version, so an administrator who takes the right
// away is not overruled at the next start.
func TestRolesStoredBeforeBridgeRight(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	open := func() *Service {
		t.Helper()
		s, err := New(Config{DataDir: dir, Signer: key, Now: clk.Now, Sleep: clk.Sleep, Argon2: testArgon2}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Write the old records straight into auth.db, as the previous firmware left them.
	db, err := bolt.Open(filepath.Join(dir, "auth.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for name, v := range v0Roles {
			if err := tx.Bucket(bucketRoles).Put([]byte(name), []byte(v)); err != nil {
				return err
			}
		}
		for _, u := range []User{
			{Name: "admin", Roles: []string{"administrator"}},
			{Name: "op", Roles: []string{"operator"}},
			{Name: "guard", Roles: []string{"viewer"}},
			{Name: "aud", Roles: []string{"auditor"}},
			{Name: "vms", Service: true, Roles: []string{"vms-feed"}},
			{Name: "exp", Service: true, Roles: []string{"exporters"}},
		} {
			u.Created = clk.Now()
			if err := putJSON(tx, bucketUsers, u.Name, u); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}

	s = open()
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	may := func(user string) bool {
		via := "session"
		if u, err := s.User(user); err == nil && u.Service {
			via = "token"
		}
		return s.Decide(Request{Subject: Subject{User: user, Via: via}, Action: UseBridge}).Allow
	}
	want := map[string]bool{"admin": true, "op": false, "guard": true, "aud": false, "vms": true, "exp": false}
	for user, w := range want {
		if got := may(user); got != w {
			t.Errorf("%s after the update: bridge right %v, want %v", user, got, w)
		}
	}
	roles, err := s.Roles()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles {
		if r.Name == "vms-feed" && (r.MaxRecordingAge != time.Hour || !slices.Equal(r.Cameras["gate"], []Action{Playback})) {
			t.Errorf("the upgrade changed more than the right: %+v", r)
		}
		if r.Name == "administrator" && len(r.System) != len(SystemActions) {
			t.Errorf("administrator after the update: %v", r.System)
		}
	}
	// The administrator takes the right away from the viewer role: it stays away.
	viewer := Role{Name: "viewer", Cameras: map[string][]Action{AllCameras: {Live}}, System: []Action{ViewStatus}}
	if err := s.PutRole(Subject{User: "admin", Via: "session"}, viewer, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	if may("guard") {
		t.Error("the bridge right came back to the viewer role after the administrator removed it")
	}
	if !may("vms") {
		t.Error("a role not saved again lost the right at the second start")
	}
}

// TestRoleJSON: roles are written with the rights version and read back unchanged; only an older record
// is upgraded.
func TestRoleJSON(t *testing.T) {
	r := Role{Name: "feed", Cameras: map[string][]Action{"cam1": {Live}}, System: []Action{ViewStatus}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m["rights_version"] != float64(rightsVersion) || m["name"] != "feed" {
		t.Fatalf("stored form %s: %v", b, err)
	}
	var back Role
	if err := json.Unmarshal(b, &back); err != nil || slices.Contains(back.System, UseBridge) || back.Name != "feed" {
		t.Fatalf("read back %+v: %v", back, err)
	}
	for _, tc := range []struct {
		json string
		want bool
	}{
		{`{"name":"a","cameras":{"*":["camera.live"]}}`, true},
		{`{"name":"a","cameras":{"c":["camera.playback"]},"rights_version":0}`, true},
		{`{"name":"a","cameras":{"c":["camera.playback"]},"dual_export":true}`, false},
		{`{"name":"a","cameras":{"c":["camera.export","camera.delete"]}}`, false},
		{`{"name":"a","system":["system.users"]}`, false},
		{`{"name":"a","cameras":{"*":["camera.live"]},"rights_version":1}`, false},
		{`{"name":"a","cameras":{"*":["camera.live"]},"system":["system.bridge"]}`, true},
	} {
		var r Role
		if err := json.Unmarshal([]byte(tc.json), &r); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		if got := slices.Contains(r.System, UseBridge); got != tc.want {
			t.Errorf("%s: bridge right %v", tc.json, got)
		}
		if n := len(r.System); n > 1 && r.System[n-1] == r.System[n-2] {
			t.Errorf("%s: granted twice: %v", tc.json, r.System)
		}
	}
	if err := json.Unmarshal([]byte(`{"name":5}`), new(Role)); err == nil {
		t.Error("a malformed role was read")
	}
}
