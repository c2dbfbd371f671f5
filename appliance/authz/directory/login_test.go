package directory

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/authz/directory/dirtest"
)

// stepClock is a clock the test moves; Sleep moves it instead of waiting.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
func (c *stepClock) Sleep(_ context.Context, d time.Duration) error { c.Advance(d); return nil }

const adminPW = "Break-Glass-Pass-7"

// newAuthz makes an authz service with a local administrator ("admin", TOTP enrolled) and the default
// roles. It returns the admin's TOTP secret.
func newAuthz(t *testing.T, clk *stepClock) (*authz.Service, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	az, err := authz.New(authz.Config{DataDir: t.TempDir(), Signer: key, Now: clk.Now, Sleep: clk.Sleep,
		Argon2: authz.Argon2Params{Time: 1, Memory: 1024, Threads: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { az.Close() })
	ctx := context.Background()
	code, _, _, err := az.SetupCode()
	if err != nil {
		t.Fatal(err)
	}
	id, enr, err := az.SetupBegin(ctx, code, "admin", adminPW, "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := authz.TOTPCode(enr.Secret, clk.Now())
	if _, err := az.SetupFinish(ctx, id, c, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute) // the next code is a new step
	return az, enr.Secret
}

// loginTOTP runs a whole login of a user who enrols TOTP at the first login (or uses secret after):
// password, code, and returns the session and the TOTP secret.
func loginTOTP(t *testing.T, az *authz.Service, clk *stepClock, name, password, secret string) (authz.Session, string, error) {
	t.Helper()
	ctx := context.Background()
	st, err := az.Login(ctx, name, password, "10.0.0.2")
	if err != nil {
		return authz.Session{}, "", err
	}
	switch st.Step {
	case authz.StepEnrol:
		secret = st.Enrol.Secret
	case authz.StepSecondFactor:
	default:
		t.Fatalf("%s: step %s", name, st.Step)
	}
	clk.Advance(time.Minute)
	code, _ := authz.TOTPCode(secret, clk.Now())
	st, err = az.LoginCode(ctx, st.Pending, code, "10.0.0.2")
	if err != nil {
		t.Fatalf("%s: code: %v", name, err)
	}
	if st.Step != authz.StepDone {
		return authz.Session{}, secret, errors.New("step " + string(st.Step))
	}
	return st.Session.Session, secret, nil
}

func TestDirectoryUsersUnderAuthz(t *testing.T) {
	s := dirtest.StartSlapd(t)
	clk := &stepClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)} // a Monday
	az, adminSecret := newAuthz(t, clk)
	m, err := NewManager(ManagerConfig{Path: t.TempDir() + "/directory.json"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Update(ldapSettings(s)); err != nil {
		t.Fatal(err)
	}
	az.SetDirectory(m)
	camera := func(sess authz.Session, a authz.Action) bool {
		return az.Decide(authz.Request{Subject: authz.Subject{User: sess.User, Via: "session", Ref: sess.ID}, Action: a, Camera: "cam1", Source: "10.0.0.2"}).Allow
	}

	// alice (nvr-operators) logs in over LDAPS, enrols TOTP, and gets the operator role.
	sess, aliceSecret, err := loginTOTP(t, az, clk, "alice", dirtest.UserPW, "")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := az.User("alice")
	if strings.Join(u.Roles, ",") != "operator" || u.Directory == "" || !u.HasTOTP() {
		t.Fatalf("alice: %+v", u)
	}
	if !camera(sess, authz.Export) || !camera(sess, authz.Playback) {
		t.Fatal("operator rights missing")
	}
	// Without the code there is no session: the directory password alone is one factor.
	st, err := az.Login(context.Background(), "alice", dirtest.UserPW, "10.0.0.2")
	if err != nil || st.Step != authz.StepSecondFactor || st.Session != nil {
		t.Fatalf("second login: %+v %v", st, err)
	}
	az.CancelLogin(st.Pending)
	// A directory account has no local password to set.
	if err := az.SetPassword(authz.Subject{User: "admin"}, "alice", "Another-Local-Pass-9", ""); !errors.Is(err, authz.ErrDenied) {
		t.Fatalf("SetPassword on a directory account: %v", err)
	}

	// Moved to nvr-viewers: viewer rights at the next login.
	s.MoveUser(t, "alice", dirtest.Operators, dirtest.Viewers)
	sess, _, err = loginTOTP(t, az, clk, "alice", dirtest.UserPW, aliceSecret)
	if err != nil {
		t.Fatal(err)
	}
	if camera(sess, authz.Export) || !camera(sess, authz.Live) {
		t.Fatal("viewer rights wrong after the group change")
	}

	// A schedule on the directory-mapped role applies as for local users.
	roles, _ := az.Roles()
	for _, r := range roles {
		if r.Name == "viewer" {
			sch, err := authz.ParseSchedule("Mon-Fri 08:00-18:00; zone UTC")
			if err != nil {
				t.Fatal(err)
			}
			r.Schedule = sch
			if err := az.PutRole(authz.Subject{User: "admin"}, r, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	clk.Advance(10 * time.Hour) // 20:00
	if camera(sess, authz.Live) {
		t.Fatal("viewer schedule not applied to a directory user")
	}
	clk.Advance(14 * time.Hour)

	// Dual authorization set by an administrator on the directory account holds across logins.
	if err := az.UpdateUser(authz.Subject{User: "admin"}, "alice", []string{"viewer"}, true, false, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loginTOTP(t, az, clk, "alice", dirtest.UserPW, aliceSecret); err == nil || !strings.Contains(err.Error(), string(authz.StepApproval)) {
		t.Fatalf("dual authorization not asked: %v", err)
	}

	// carol is disabled in the directory; erin is in no mapped group; a wrong password is wrong.
	for _, c := range []struct{ name, pw string }{{"carol", dirtest.UserPW}, {"erin", dirtest.UserPW}, {"alice", "Wrong-Password-1"}, {"nobody", "x"}} {
		if _, err := az.Login(context.Background(), c.name, c.pw, "10.0.0.3"); !errors.Is(err, authz.ErrBadCredentials) {
			t.Fatalf("%s: %v", c.name, err)
		}
		clk.Advance(time.Hour) // past the throttle
	}
	if _, err := az.User("carol"); !errors.Is(err, authz.ErrNotFound) {
		t.Fatalf("a refused directory user got an account: %v", err)
	}

	// The directory down: directory users are refused with a clear message; the local admin still signs in.
	s.Stop()
	_, err = az.Login(context.Background(), "bob", dirtest.UserPW, "10.0.0.4")
	if !errors.Is(err, authz.ErrDirectoryUnavailable) || !strings.Contains(err.Error(), "cannot be reached") {
		t.Fatalf("directory down: %v", err)
	}
	if _, _, err := loginTOTP(t, az, clk, "admin", adminPW, adminSecret); err != nil {
		t.Fatalf("break-glass admin: %v", err)
	}

	// Every directory decision is in the audit log, with its reason.
	es, err := az.AuditEntries(authz.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	for _, e := range es {
		log.WriteString(e.Action + " " + e.Result + " " + e.Subject + " " + e.Reason + "\n")
	}
	for _, want := range []string{"login.directory ok alice", "groups " + dirtest.Operators, "give roles viewer (were operator)",
		"disabled-account filter", "no group mapped", "directory: the directory cannot be reached"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("audit lacks %q:\n%s", want, log.String())
		}
	}
	if strings.Contains(log.String(), dirtest.UserPW) || strings.Contains(log.String(), dirtest.ServicePW) {
		t.Fatal("a password reached the audit log")
	}
}

// TestRevalidation: a user disabled in the directory loses their live sessions at the next check; a
// directory that cannot be reached ends nobody's session.
func TestRevalidation(t *testing.T) {
	s := dirtest.StartSlapd(t)
	clk := &stepClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	az, _ := newAuthz(t, clk)
	m, err := NewManager(ManagerConfig{Path: t.TempDir() + "/directory.json"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Update(ldapSettings(s)); err != nil {
		t.Fatal(err)
	}
	az.SetDirectory(m)
	for _, u := range []string{"alice", "bob"} {
		if _, _, err := loginTOTP(t, az, clk, u, dirtest.UserPW, ""); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewRevalidator(RevalidatorConfig{Authz: az, Directory: m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if n := r.Once(ctx); n != 0 {
		t.Fatalf("ended %d sessions of valid users", n)
	}
	s.Replace(t, dirtest.UserDN("bob"), "employeeType", "disabled")
	if n := r.Once(ctx); n != 1 {
		t.Fatalf("ended %d sessions, want bob's", n)
	}
	for _, sess := range az.Sessions() {
		if sess.User == "bob" {
			t.Fatal("bob still has a session")
		}
	}
	s.Stop()
	if n := r.Once(ctx); n != 0 {
		t.Fatalf("directory down ended %d sessions", n)
	}
}
