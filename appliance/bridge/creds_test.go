package bridge

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/edgenvr/nvr/appliance/authz"
)

// TestCheckHolder: who may hold a bridge credential.
func TestCheckHolder(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    authz.User
		ok   bool
	}{
		{"service account", authz.User{Name: "vms", Service: true}, true},
		{"person", authz.User{Name: "alice"}, true},
		{"disabled person", authz.User{Name: "alice", Disabled: true}, false},
		{"disabled service account", authz.User{Name: "vms", Service: true, Disabled: true}, false},
		{"directory account", authz.User{Name: "bob", Directory: "corp"}, false},
		{"person under dual authorization", authz.User{Name: "carol", DualAuth: true}, false},
	} {
		err := CheckHolder(tc.u)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrNotHolder) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestIssueChecksHolder: Issue refuses an account that may not hold a credential and one without a
// creation time (the derivation binds it); Info and Revoke see what Issue made.
func TestIssueChecksHolder(t *testing.T) {
	c, err := OpenCredentials(t.TempDir(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	if _, _, err := c.Issue(authz.User{Name: "carol", DualAuth: true, Created: created}); !errors.Is(err, ErrNotHolder) {
		t.Fatalf("dual authorization: %v", err)
	}
	if _, _, err := c.Issue(authz.User{Name: "alice"}); err == nil {
		t.Fatal("issued without a creation time")
	}
	s, info, err := c.Issue(authz.User{Name: "alice", Created: created})
	if err != nil || info.Serial != 1 {
		t.Fatalf("issue: %+v %v", info, err)
	}
	if got, _, ok := c.secret("alice", created); !ok || got != s {
		t.Fatal("the issued credential does not verify")
	}
	if got, ok := c.Info("alice"); !ok || got != info {
		t.Fatalf("info: %+v", got)
	}
	if err := c.Revoke("alice"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Info("alice"); ok {
		t.Fatal("revoked, still there")
	}
	if err := c.Revoke("alice"); !errors.Is(err, ErrNoCredential) {
		t.Fatalf("revoke twice: %v", err)
	}
}

// TestPeopleUseTheirCredential: against the real authz and a running bridge, a person's credential (issued
// as the web page issues it) opens exactly the person's cameras, through the "bridge" door: authz admits
// it and the audit log names it "alice (bridge bridge-1)", while a service account's stays "vms (token
// bridge-1)". A person who comes under dual authorization, or is disabled, is refused at the next request
// (401), and so is a name that holds no credential.
func TestPeopleUseTheirCredential(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.live.run(ctx, t, 200*time.Millisecond, 600)
	for _, nu := range []authz.NewUser{
		{Name: "alice", Password: "copper lantern 71 meadow", Roles: []string{"vms-cam1"}},
		{Name: "carol", Password: "willow harbour 58 basalt", Roles: []string{"vms-cam1"}},
		{Name: "nocred", Password: "amber thistle 64 quarry", Roles: []string{"vms-cam1"}},
	} {
		if err := e.az.CreateUser(testAdmin, nu, "test"); err != nil {
			t.Fatal(err)
		}
	}
	issue := func(name string) string {
		t.Helper()
		u, err := e.az.User(name)
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := e.b.cfg.Credentials.Issue(u)
		if err != nil {
			t.Fatalf("issue for %s: %v", name, err)
		}
		return s
	}
	alice, carol := issue("alice"), issue("carol")
	// describe answers a digest DESCRIBE of path as user (each from its own address: no shared back-off).
	n := 10
	describe := func(user, pass, path string) base.StatusCode {
		t.Helper()
		n++
		rc := dialRTSP(t, e.rtsp, false, fmt.Sprintf("127.0.0.%d", n))
		res, ok := rc.do(base.Describe, path, nil)
		if !ok {
			t.Fatal("no challenge")
		}
		res, ok = rc.do(base.Describe, path, base.Header{"Authorization": base.HeaderValue{digest(t, res, base.Describe, rc.url(path), user, pass)}})
		if !ok {
			t.Fatalf("%s on %s: the connection ended", user, path)
		}
		return res.StatusCode
	}
	for _, c := range []struct {
		user, pass, path string
		want             base.StatusCode
	}{
		{"alice", alice, "/cam1", base.StatusOK},
		{"alice", alice, "/cam2", base.StatusForbidden},
		{"alice", carol, "/cam1", base.StatusUnauthorized},
		{"vms", e.vmsCred, "/cam1", base.StatusOK},
		{"nocred", alice, "/cam1", base.StatusUnauthorized},
	} {
		if got := describe(c.user, c.pass, c.path); got != c.want {
			t.Errorf("%s on %s: %d, want %d", c.user, c.path, got, c.want)
		}
	}
	// Basic over RTSPS takes a person's credential too.
	tc := dialRTSP(t, e.rtsps, true, "127.0.0.3")
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+alice))
	if res, ok := tc.do(base.Describe, "/cam1", base.Header{"Authorization": base.HeaderValue{basic}}); !ok || res.StatusCode != base.StatusOK {
		t.Errorf("alice's credential as Basic over RTSPS: %+v", res)
	}
	// Dual authorization and disabling take the bridge away at the next request.
	if err := e.az.UpdateUser(testAdmin, "carol", []string{"vms-cam1"}, true, false, "test"); err != nil {
		t.Fatal(err)
	}
	if got := describe("carol", carol, "/cam1"); got != base.StatusUnauthorized {
		t.Errorf("carol under dual authorization: %d", got)
	}
	if err := e.az.UpdateUser(testAdmin, "alice", []string{"vms-cam1"}, false, true, "test"); err != nil {
		t.Fatal(err)
	}
	if got := describe("alice", alice, "/cam1"); got != base.StatusUnauthorized {
		t.Errorf("alice disabled: %d", got)
	}

	entries, err := e.az.AuditEntries(authz.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"alice (bridge bridge-1) camera.live camera/cam1 allow": false,
		"alice (bridge bridge-1) camera.live camera/cam2 deny":  false,
		"vms (token bridge-1) camera.live camera/cam1 allow":    false,
		"alice bridge.login bridge failure":                     false,
		"carol bridge.login bridge failure":                     false,
	}
	for _, en := range entries {
		k := en.Subject + " " + en.Action + " " + en.Object + " " + en.Result
		if _, ok := want[k]; ok {
			want[k] = true
		}
		if strings.Contains(en.Reason, "wrong door") {
			t.Errorf("authz refused a door: %+v", en)
		}
		if strings.Contains(en.Subject+en.Reason, alice) || strings.Contains(en.Subject+en.Reason, carol) {
			t.Error("a credential is in the audit log")
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("not in the audit log: %s", k)
		}
	}
}
