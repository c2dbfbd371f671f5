package authz

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestApprovalCameras: one approval covers a set of cameras (validated, bounded, sorted, each once); the
// requester cannot approve it; it is used once, for exactly the approved set, every camera decided again;
// it expires; and every audit entry of it — request, refused and given approval, use — names the whole set.
func TestApprovalCameras(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestService(t, clk)
	sec := setupAdmin(t, s, clk)
	admin := Subject{User: "admin", Via: "session"}
	ex := []Action{Playback, Export}
	role := Role{Name: "supervised", Cameras: map[string][]Action{"cam1": ex, "cam2": ex, "cam3": ex}, DualExport: true}
	if err := s.PutRole(admin, role, ""); err != nil {
		t.Fatal(err)
	}
	const pw = "shift leader pass 7"
	if err := s.CreateUser(admin, NewUser{Name: "sup", Password: pw, Roles: []string{"supervised"}}, ""); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sup := Subject{User: "sup", Via: "session", Ref: "s1"}
	from := clk.Now().Add(-time.Hour)
	req := Request{Subject: sup, Action: Export, From: from, Source: "10.0.0.7"}
	for _, cam := range []string{"cam1", "cam2", "cam3"} {
		r := req
		r.Camera = cam
		if d := s.Decide(r); !d.Allow || !d.NeedApproval {
			t.Fatalf("%s: %+v", cam, d)
		}
	}
	approve := func(id, who, password, secret string) error {
		clk.Advance(31 * time.Second)
		code, _ := TOTPCode(secret, clk.Now())
		return s.Approve(ctx, id, who, password, code, "10.0.0.7")
	}

	// Validation and bounds.
	var many []string
	for i := range MaxApprovalCameras + 1 {
		many = append(many, "c"+strings.Repeat("x", i))
	}
	for _, bad := range []struct {
		req  Request
		cams []string
	}{
		{req, nil},
		{req, []string{"cam1", "../x"}},
		{req, []string{"cam1", "a,b"}},
		{req, many},
		{Request{Subject: sup, Action: Export, Camera: "cam9"}, []string{"cam1"}},
		{Request{Subject: sup, Action: ReadAudit}, []string{"cam1"}},
	} {
		if _, err := s.RequestApprovalCameras(bad.req, bad.cams, clk.Now(), "x"); err == nil {
			t.Errorf("approval of %q for %+v accepted", bad.cams, bad.req)
		}
	}
	if _, err := s.RequestApprovalCameras(req, many[:MaxApprovalCameras], clk.Now(), "x"); err != nil {
		t.Errorf("%d cameras: %v", MaxApprovalCameras, err)
	}

	// A set, given in any order with a repeat, is recorded sorted and once.
	a, err := s.RequestApprovalCameras(req, []string{"cam3", "cam1", "cam2", "cam1"}, clk.Now(), "incident 7")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cam1", "cam2", "cam3"}
	if !slices.Equal(a.Cameras, want) || a.Requester != "sup" || a.Request.Camera != "cam1" {
		t.Fatalf("approval %+v", a)
	}
	at := "@" + from.UTC().Format(time.RFC3339)
	object := "cameras/cam1,cam2,cam3" + at
	if a.Object() != object {
		t.Errorf("object %q", a.Object())
	}
	if p, err := s.PendingApproval(a.ID); err != nil || !slices.Equal(p.Cameras, want) {
		t.Fatalf("pending %+v %v", p, err)
	}
	// The returned record is a copy.
	a.Cameras[0] = "gate"
	if p, _ := s.PendingApproval(a.ID); p.Cameras[0] != "cam1" {
		t.Fatal("the caller changed the stored set")
	}

	if _, err := s.UseApproval(a.ID, sup, want, ""); !errors.Is(err, ErrDenied) {
		t.Fatalf("use before approval: %v", err)
	}
	// The requester cannot approve their own request, even with their own valid credentials.
	if err := approve(a.ID, "sup", pw, sec); !errors.Is(err, ErrDenied) {
		t.Fatalf("self-approval: %v", err)
	}
	if err := approve(a.ID, "admin", adminPW, sec); err != nil {
		t.Fatal(err)
	}
	// Another user cannot use it; nor can the requester for a camera outside the set, nor for a subset.
	if _, err := s.UseApproval(a.ID, Subject{User: "admin", Via: "session"}, want, ""); !errors.Is(err, ErrDenied) {
		t.Fatalf("use by another user: %v", err)
	}
	for _, other := range [][]string{{"cam1", "cam2", "cam3", "gate"}, {"cam1", "cam2", "gate"}, {"cam1", "cam2"}, nil} {
		if _, err := s.UseApproval(a.ID, sup, other, ""); !errors.Is(err, ErrDenied) {
			t.Fatalf("use for %q: %v", other, err)
		}
	}
	// Refused uses do not spend it; the same set in another order is the same set.
	got, err := s.UseApproval(a.ID, sup, []string{"cam2", "cam3", "cam1"}, "10.0.0.7")
	if err != nil || !slices.Equal(got.Cameras, want) || got.ApprovedBy != "admin" {
		t.Fatalf("use: %+v %v", got, err)
	}
	if _, err := s.UseApproval(a.ID, sup, want, ""); !errors.Is(err, ErrDenied) {
		t.Fatalf("second use: %v", err)
	}

	// A right lost on one camera between approval and use refuses the whole use, naming that camera.
	b, err := s.RequestApprovalCameras(req, want, clk.Now(), "incident 8")
	if err != nil {
		t.Fatal(err)
	}
	if err := approve(b.ID, "admin", adminPW, sec); err != nil {
		t.Fatal(err)
	}
	role.Cameras = map[string][]Action{"cam1": ex, "cam3": ex}
	if err := s.PutRole(admin, role, ""); err != nil {
		t.Fatal(err)
	}
	var refused *RefusedError
	if _, err := s.UseApproval(b.ID, sup, want, ""); !errors.As(err, &refused) || !errors.Is(err, ErrDenied) ||
		len(refused.Refused) != 1 || !strings.HasPrefix(refused.Refused[0], "camera cam2: ") {
		t.Fatalf("use after cam2 was withdrawn: %v", err)
	}

	// Expiry: an approval unanswered for longer than its lifetime can be neither approved nor used.
	c, err := s.RequestApprovalCameras(req, []string{"cam1", "cam3"}, clk.Now(), "incident 9")
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(approvalTTL + time.Second)
	if err := approve(c.ID, "admin", adminPW, sec); !errors.Is(err, ErrExpired) {
		t.Fatalf("approval of an expired request: %v", err)
	}
	if _, err := s.UseApproval(c.ID, sup, []string{"cam1", "cam3"}, ""); !errors.Is(err, ErrDenied) {
		t.Fatalf("use of an expired approval: %v", err)
	}

	// One camera keeps its object; the old single-camera call still works.
	d, err := s.RequestApproval(Request{Subject: sup, Action: Export, Camera: "cam1", From: from}, clk.Now(), "incident 10")
	if err != nil || !slices.Equal(d.Cameras, []string{"cam1"}) || d.Object() != "camera/cam1"+at {
		t.Fatalf("single camera: %+v %v", d, err)
	}

	// The audit log names the whole set on every step of the approval.
	es, err := s.AuditEntries(AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct{ subject, action, result, reason string }{
		{"sup", "approval.request", "pending", "incident 7"},
		{"sup", "approve", "fail", "requested by sup"},
		{"admin", "approve", "ok", "requested by sup"},
		{"sup", "approval.use", "fail", "covers cam1,cam2,cam3, asked for cam1,cam2,cam3,gate"},
		{"sup", "approval.use", "ok", "approved by admin"},
		{"sup", "approval.use", "fail", "camera cam2: "},
	} {
		if !slices.ContainsFunc(es, func(e Entry) bool {
			return strings.HasPrefix(e.Subject, w.subject) && e.Action == w.action && e.Result == w.result &&
				e.Object == object && strings.Contains(e.Reason, w.reason)
		}) {
			t.Errorf("no audit entry %+v on %s", w, object)
		}
	}
	// Each camera was decided again at use, on its own.
	for _, cam := range want {
		if !slices.ContainsFunc(es, func(e Entry) bool {
			return e.Kind == "decision" && strings.HasPrefix(e.Subject, "sup") && e.Object == "camera/"+cam+at && e.Result == "allow"
		}) {
			t.Errorf("no decision on %s", cam)
		}
	}
}
