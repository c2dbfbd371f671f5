package bridge

import (
	"errors"
	"testing"
	"time"

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

// recordingAuthz answers User from a table and records the requests Decide gets.
type recordingAuthz struct {
	users map[string]authz.User
	reqs  []authz.Request
}

func (r *recordingAuthz) Decide(req authz.Request) authz.Decision {
	r.reqs = append(r.reqs, req)
	return authz.Decision{Allow: true}
}
func (r *recordingAuthz) AuthenticateToken(string) (authz.Subject, error) {
	return authz.Subject{}, authz.ErrBadCredentials
}
func (r *recordingAuthz) User(name string) (authz.User, error) {
	u, ok := r.users[name]
	if !ok {
		return authz.User{}, authz.ErrNotFound
	}
	return u, nil
}
func (r *recordingAuthz) Event(authz.Subject, string, string, string, string, string) {}

// TestHolders: the wrapper presents allowed people to the authentication as able to hold a credential and
// puts their decisions to authz through the "bridge" door; service accounts and API tokens pass unchanged.
// (The web tests run it against the real authz and bridge.)
func TestHolders(t *testing.T) {
	az := &recordingAuthz{users: map[string]authz.User{
		"alice": {Name: "alice"},
		"carol": {Name: "carol", DualAuth: true},
		"vms":   {Name: "vms", Service: true},
	}}
	h := Holders(az)
	for name, want := range map[string]bool{"alice": true, "carol": false, "vms": true} {
		u, err := h.User(name)
		if err != nil || u.Service != want {
			t.Errorf("%s: service %v, %v", name, u.Service, err)
		}
	}
	if _, err := h.User("nobody"); !errors.Is(err, authz.ErrNotFound) {
		t.Errorf("unknown account: %v", err)
	}
	for _, tc := range []struct {
		sub authz.Subject
		via string
	}{
		{authz.Subject{User: "alice", Via: "token", Ref: "bridge-3"}, "bridge"},
		{authz.Subject{User: "vms", Via: "token", Ref: "bridge-1"}, "token"},
		{authz.Subject{User: "vms", Via: "token", Ref: "abcd1234"}, "token"},
		{authz.Subject{}, ""},
	} {
		az.reqs = nil
		h.Decide(authz.Request{Subject: tc.sub, Action: authz.Live, Camera: "cam1"})
		if len(az.reqs) != 1 || az.reqs[0].Subject.Via != tc.via || az.reqs[0].Subject.User != tc.sub.User || az.reqs[0].Subject.Ref != tc.sub.Ref {
			t.Errorf("%+v decided as %+v", tc.sub, az.reqs)
		}
	}
}
