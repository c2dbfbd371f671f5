package authz

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock whose Sleep advances it instead of waiting.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error { c.Advance(d); return nil }

// testArgon2 keeps unit tests fast; the production cost is measured in benchmarks.
var testArgon2 = Argon2Params{Time: 1, Memory: 1024, Threads: 1}

func newTestService(t testing.TB, clk *fakeClock) *Service {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DataDir: t.TempDir(), Signer: key, Now: clk.Now, Sleep: clk.Sleep, Argon2: testArgon2,
		CheckpointEvery: 10}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

const adminPW = "correct horse battery staple 9"

// setupAdmin runs first-boot setup and returns the admin's TOTP secret.
func setupAdmin(t testing.TB, s *Service, clk *fakeClock) string {
	t.Helper()
	code, _, fresh, err := s.SetupCode()
	if err != nil || !fresh {
		t.Fatalf("SetupCode: %v fresh=%v", err, fresh)
	}
	ctx := context.Background()
	if _, _, err := s.SetupBegin(ctx, "AAAA-BBBB-CCCC", "admin", adminPW, "10.0.0.1"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong setup code: %v", err)
	}
	if _, _, err := s.SetupBegin(ctx, code, "admin", "password1234", "10.0.0.1"); !errors.Is(err, ErrWeakPassword) {
		t.Fatalf("common password: %v", err)
	}
	id, enr, err := s.SetupBegin(ctx, strings.ToLower(code), "admin", adminPW, "10.0.0.1")
	if err != nil {
		t.Fatalf("SetupBegin: %v", err)
	}
	c, _ := TOTPCode(enr.Secret, clk.Now())
	rec, err := s.SetupFinish(ctx, id, c, "10.0.0.1")
	if err != nil || len(rec) != 10 {
		t.Fatalf("SetupFinish: %v %d", err, len(rec))
	}
	if s.NeedsSetup() {
		t.Fatal("still needs setup")
	}
	if _, _, err := s.SetupBegin(ctx, code, "admin2", adminPW, "10.0.0.1"); !errors.Is(err, ErrSetupDone) {
		t.Fatalf("setup code reused: %v", err)
	}
	clk.Advance(31 * time.Second) // the next code is a new time step
	return enr.Secret
}

func login(t testing.TB, s *Service, clk *fakeClock, user, pw, secret, src string) LoginState {
	t.Helper()
	ctx := context.Background()
	st, err := s.Login(ctx, user, pw, src)
	if err != nil {
		t.Fatalf("Login %s: %v", user, err)
	}
	c, _ := TOTPCode(secret, clk.Now())
	st, err = s.LoginCode(ctx, st.Pending, c, src)
	if err != nil {
		t.Fatalf("LoginCode %s: %v", user, err)
	}
	clk.Advance(31 * time.Second)
	return st
}

func TestSetupLoginDecideAudit(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)} // a Monday
	s := newTestService(t, clk)
	sec := setupAdmin(t, s, clk)
	st := login(t, s, clk, "admin", adminPW, sec, "10.0.0.1")
	if st.Step != StepDone || st.Session == nil {
		t.Fatalf("admin login: %+v", st)
	}
	admin := Subject{User: "admin", Via: "session", Ref: st.Session.Session.ID}
	sched, err := ParseSchedule("Mon-Fri 08:00-18:00")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutRole(admin, Role{Name: "cam1-viewer", Cameras: map[string][]Action{"cam1": {Live, Playback}},
		System: []Action{ViewStatus}, Schedule: sched, MaxRecordingAge: 24 * time.Hour}, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(admin, NewUser{Name: "vic", Password: "viewer password 42x", Roles: []string{"cam1-viewer"}}, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// First login enrols TOTP.
	ctx := context.Background()
	ls, err := s.Login(ctx, "vic", "viewer password 42x", "10.0.0.2")
	if err != nil || ls.Step != StepEnrol || ls.Enrol == nil {
		t.Fatalf("vic login: %v %+v", err, ls)
	}
	c, _ := TOTPCode(ls.Enrol.Secret, clk.Now())
	ls, err = s.LoginCode(ctx, ls.Pending, c, "10.0.0.2")
	if err != nil || ls.Step != StepDone || len(ls.RecoveryCodes) != 10 {
		t.Fatalf("vic enrol: %v %+v", err, ls)
	}
	vic := Subject{User: "vic", Via: "session", Ref: ls.Session.Session.ID}
	now := clk.Now()
	cases := []struct {
		name  string
		req   Request
		allow bool
		why   string
	}{
		{"live cam1", Request{Subject: vic, Action: Live, Camera: "cam1"}, true, "granted"},
		{"live cam2", Request{Subject: vic, Action: Live, Camera: "cam2"}, false, "no role grants"},
		{"export cam1", Request{Subject: vic, Action: Export, Camera: "cam1", From: now.Add(-time.Hour)}, false, "no role grants"},
		{"recent playback", Request{Subject: vic, Action: Playback, Camera: "cam1", From: now.Add(-time.Hour)}, true, "granted"},
		{"old playback", Request{Subject: vic, Action: Playback, Camera: "cam1", From: now.Add(-48 * time.Hour)}, false, "older than"},
		{"users", Request{Subject: vic, Action: ManageUsers}, false, "no role grants"},
		{"anonymous", Request{Action: Live, Camera: "cam1"}, false, "not signed in"},
		{"unknown action", Request{Subject: vic, Action: "camera.fly", Camera: "cam1"}, false, "unknown action"},
		{"admin export", Request{Subject: admin, Action: Export, Camera: "cam9", From: now.Add(-1000 * time.Hour)}, true, "granted"},
	}
	for _, tc := range cases {
		d := s.Decide(tc.req)
		if d.Allow != tc.allow || !strings.Contains(d.Reason, tc.why) {
			t.Errorf("%s: %+v, want allow=%v reason~%q", tc.name, d, tc.allow, tc.why)
		}
	}
	clk.Advance(10 * time.Hour) // 20:00 Monday: outside the schedule
	if d := s.Decide(Request{Subject: vic, Action: Live, Camera: "cam1"}); d.Allow || !strings.Contains(d.Reason, "schedule") {
		t.Errorf("outside schedule: %+v", d)
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := s.ExportAudit(&buf); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyLog(bytes.NewReader(buf.Bytes()), nil)
	if err != nil || !rep.OK() || rep.Checkpoints == 0 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	for _, want := range []string{`"result":"deny","reason":"outside the schedule`, `"object":"camera/cam2","result":"deny"`, `older than the 24h0m0s limit`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("audit lacks %s", want)
		}
	}
	if strings.Contains(buf.String(), adminPW) || strings.Contains(buf.String(), sec) || strings.Contains(buf.String(), st.Session.Token) {
		t.Error("a secret is in the audit log")
	}
	entries, err := s.AuditEntries(AuditFilter{Result: "deny", Limit: 3})
	if err != nil || len(entries) != 3 || entries[0].Seq < entries[1].Seq {
		t.Errorf("AuditEntries: %v %d", err, len(entries))
	}
}

func TestAuditTamperDetected(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestService(t, clk)
	for i := range 25 {
		s.Event(Subject{User: "u"}, "test", "obj", "ok", strings.Repeat("x", i), "1.2.3.4")
		clk.Advance(time.Second)
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(s.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	pub := s.cfg.Signer.Public()
	if rep, _ := VerifyLog(bytes.NewReader(raw), pub); !rep.OK() || rep.Checkpoints < 2 || rep.Anchored != rep.Entries-1 {
		t.Fatalf("clean log: %+v", rep)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	join := func(ls []string) []byte { return []byte(strings.Join(ls, "")) }
	edited := append([]string{}, lines...)
	edited[3] = strings.Replace(edited[3], `"result":"ok"`, `"result":"no"`, 1)
	deleted := append(append([]string{}, lines[:5]...), lines[6:]...)
	reordered := append([]string{}, lines...)
	reordered[7], reordered[8] = reordered[8], reordered[7]
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, in := range map[string][]byte{"edit": join(edited), "delete": join(deleted), "reorder": join(reordered)} {
		rep, err := VerifyLog(bytes.NewReader(in), pub)
		if err != nil || rep.OK() {
			t.Errorf("%s not detected: %v %+v", name, err, rep)
		}
	}
	if rep, _ := VerifyLog(bytes.NewReader(raw), other.Public()); rep.OK() {
		t.Error("checkpoints accepted under another key")
	}
}

func TestThrottleProtectsWithoutLockout(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestService(t, clk)
	sec := setupAdmin(t, s, clk)
	ctx := context.Background()
	var last time.Duration
	checked := 0
	for i := range 1000 {
		start := clk.Now()
		_, err := s.Login(ctx, "admin", "wrong password number "+string(rune('a'+i%26)), "203.0.113.9")
		var te *ThrottledError
		if errors.As(err, &te) {
			clk.Advance(te.RetryAfter) // a patient attacker waits as told
			continue
		}
		if !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		checked++
		took := clk.Now().Sub(start)
		if took < last {
			t.Fatalf("attempt %d answered faster (%v) than the one before (%v)", i, took, last)
		}
		last = took
	}
	if last < 2*time.Second {
		t.Errorf("delay only reached %v", last)
	}
	// The real admin, from another address, is slowed by at most the account cap.
	start := clk.Now()
	st := login(t, s, clk, "admin", adminPW, sec, "10.0.0.1")
	if st.Session == nil {
		t.Fatal("no session for the real admin")
	}
	if d := clk.Now().Sub(start) - 31*time.Second; d > 2*time.Second {
		t.Errorf("real admin delayed %v", d)
	}
	if len(s.Sessions()) != 1 {
		t.Errorf("sessions: %d", len(s.Sessions()))
	}
}

func TestDualAuthorization(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestService(t, clk)
	sec := setupAdmin(t, s, clk)
	admin := Subject{User: "admin", Via: "session"}
	if err := s.CreateUser(admin, NewUser{Name: "op", Password: "shift leader pass 7", Roles: []string{"operator"}, DualAuth: true}, ""); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ls, _ := s.Login(ctx, "op", "shift leader pass 7", "10.0.0.3")
	c, _ := TOTPCode(ls.Enrol.Secret, clk.Now())
	opSecret := ls.Enrol.Secret
	ls, err := s.LoginCode(ctx, ls.Pending, c, "10.0.0.3")
	if err != nil || ls.Step != StepApproval || ls.Session != nil {
		t.Fatalf("op: %v %+v", err, ls)
	}
	clk.Advance(31 * time.Second)
	oc, _ := TOTPCode(opSecret, clk.Now())
	if _, err := s.LoginApprove(ctx, ls.Pending, "op", "shift leader pass 7", oc, "10.0.0.3"); !errors.Is(err, ErrDenied) {
		t.Fatalf("self-approval: %v", err)
	}
	ac, _ := TOTPCode(sec, clk.Now())
	done, err := s.LoginApprove(ctx, ls.Pending, "admin", adminPW, ac, "10.0.0.3")
	if err != nil || done.Session == nil {
		t.Fatalf("approval: %v %+v", err, done)
	}
	op := Subject{User: "op", Via: "session", Ref: done.Session.Session.ID}
	req := Request{Subject: op, Action: Export, Camera: "cam1", From: clk.Now().Add(-time.Hour)}
	d := s.Decide(req)
	if !d.Allow || !d.NeedApproval {
		t.Fatalf("export decision: %+v", d)
	}
	a, err := s.RequestApproval(req, clk.Now(), "incident 42")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseApproval(a.ID, op, []string{"cam1"}, ""); !errors.Is(err, ErrDenied) {
		t.Fatalf("unapproved use: %v", err)
	}
	clk.Advance(31 * time.Second)
	ac, _ = TOTPCode(sec, clk.Now())
	if err := s.Approve(ctx, a.ID, "admin", adminPW, ac, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Approve(ctx, a.ID, "admin", adminPW, ac, ""); err == nil {
		t.Fatal("TOTP code replayed")
	}
	if _, err := s.UseApproval(a.ID, op, []string{"cam1"}, ""); err != nil {
		t.Fatalf("use: %v", err)
	}
	if _, err := s.UseApproval(a.ID, op, []string{"cam1"}, ""); err == nil {
		t.Fatal("approval used twice")
	}
}

func TestTokensAndSessions(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestService(t, clk)
	sec := setupAdmin(t, s, clk)
	admin := Subject{User: "admin", Via: "session"}
	if err := s.CreateUser(admin, NewUser{Name: "vms", Roles: []string{"viewer"}, Service: true}, ""); err != nil {
		t.Fatal(err)
	}
	tok, err := s.IssueToken(admin, "vms", "VMS integration", "")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := s.AuthenticateToken(tok)
	if err != nil || sub.User != "vms" {
		t.Fatalf("token: %v %+v", err, sub)
	}
	if d := s.Decide(Request{Subject: sub, Action: Live, Camera: "cam1"}); !d.Allow {
		t.Errorf("token live: %+v", d)
	}
	if d := s.Decide(Request{Subject: sub, Action: Playback, Camera: "cam1", From: clk.Now()}); d.Allow {
		t.Errorf("token playback: %+v", d)
	}
	if _, err := s.AuthenticateToken(tok + "x"); err == nil {
		t.Error("altered token accepted")
	}
	if _, err := s.Login(context.Background(), "vms", "", "1.1.1.1"); err == nil {
		t.Error("service account logged in interactively")
	}
	st := login(t, s, clk, "admin", adminPW, sec, "10.0.0.1")
	if _, err := s.Authenticate(st.Session.Token); err != nil {
		t.Fatal(err)
	}
	clk.Advance(16 * time.Minute)
	if _, err := s.Authenticate(st.Session.Token); !errors.Is(err, ErrExpired) {
		t.Errorf("idle session still valid: %v", err)
	}
	st = login(t, s, clk, "admin", adminPW, sec, "10.0.0.1")
	for range 60 { // active, but past the absolute limit
		clk.Advance(14 * time.Minute)
		if _, err := s.Authenticate(st.Session.Token); err != nil {
			break
		}
	}
	if _, err := s.Authenticate(st.Session.Token); !errors.Is(err, ErrExpired) {
		t.Errorf("session outlived the absolute limit")
	}
	st = login(t, s, clk, "admin", adminPW, sec, "10.0.0.1")
	if n := s.RevokeSession(admin, st.Session.Session.ID, "", ""); n != 1 {
		t.Errorf("revoked %d", n)
	}
	if _, err := s.Authenticate(st.Session.Token); err == nil {
		t.Error("revoked session still valid")
	}
	if err := s.DeleteUser(admin, "admin", ""); !errors.Is(err, ErrLastAdmin) {
		t.Errorf("last admin deleted: %v", err)
	}
}

func TestPasswordPolicy(t *testing.T) {
	for pw, ok := range map[string]bool{"short": false, "password1234": false, "Qwertyuiop123": false,
		"aaaaaaaaaaaaaaa": false, "my admin is great": true, "zebra-kettle-orbit": true} {
		err := CheckPasswordPolicy("bob", pw)
		if (err == nil) != ok {
			t.Errorf("%q: %v", pw, err)
		}
	}
	if CheckPasswordPolicy("kettle", "zebra-kettle-orbit") == nil {
		t.Error("password containing the user name accepted")
	}
}

func TestScheduleParse(t *testing.T) {
	s, err := ParseSchedule("zone Europe/Berlin; Mon-Fri 08:00-18:00; Sat 09:00-13:00")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Windows) != 6 {
		t.Fatalf("%d windows", len(s.Windows))
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if !s.Allows(time.Date(2026, 11, 28, 12, 0, 0, 0, berlin)) || s.Allows(time.Date(2026, 11, 29, 12, 0, 0, 0, berlin)) {
		t.Error("Saturday/Sunday")
	}
	if _, err := ParseSchedule("Mon 18:00-08:00"); err == nil {
		t.Error("inverted span accepted")
	}
	s2, err := ParseSchedule(s.String())
	if err != nil || s2.String() != s.String() {
		t.Errorf("round trip: %v %q", err, s2.String())
	}
}

// TestUnknownAccountNotEchoed: a name that is no account (perhaps a password typed into the wrong field)
// is audited only as a hash.
func TestUnknownAccountNotEchoed(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	s := newTestService(t, clk)
	setupAdmin(t, s, clk)
	for range 6 {
		_, _ = s.Login(context.Background(), "my secret pass phrase", "x", "10.9.9.9")
		_, _ = s.Login(context.Background(), "NoSuchUser42", "x", "10.9.9.8")
	}
	var buf bytes.Buffer
	if _, err := s.ExportAudit(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "my secret pass phrase") || strings.Contains(buf.String(), "NoSuchUser42") {
		t.Error("an unknown account name is in the audit log")
	}
	if !strings.Contains(buf.String(), `"subject":"unknown-`) {
		t.Error("unknown accounts not audited")
	}
}
