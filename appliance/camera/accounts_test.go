package camera

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/use-go/onvif/device"
	"github.com/use-go/onvif/xsd/onvif"
)

// accountArgs writes a password file per account ("name:Level", or
// "name:Level:fixed" for a built-in account camsim refuses to delete) and
// returns camsim's flags for them. Each factory password is name+"-factory-pw".
func accountArgs(t testing.TB, specs ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for _, s := range specs {
		parts := strings.Split(s, ":")
		f := filepath.Join(dir, parts[0])
		if err := os.WriteFile(f, []byte(parts[0]+"-factory-pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-account", parts[0]+":"+parts[1]+":"+f)
		if len(parts) > 2 && parts[2] == "fixed" {
			args = append(args, "-fixed-account", parts[0])
		}
	}
	return args
}

// users returns camsim's accounts of one camera: password by name.
func (s *sim) users(t testing.TB, cam string) map[string]string {
	t.Helper()
	return s.allUsers(t)[cam]
}

// allUsers returns camsim's accounts of every camera.
func (s *sim) allUsers(t testing.TB) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile(s.state)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]struct {
		Users []struct {
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"users"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for cam, st := range st {
		out[cam] = map[string]string{}
		for _, u := range st.Users {
			out[cam][u.Username] = u.Password
		}
	}
	return out
}

// auditLog collects account events.
type auditLog struct {
	mu sync.Mutex
	ev []AccountEvent
}

func (l *auditLog) add(e AccountEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ev = append(l.ev, e)
}

func (l *auditLog) has(cam, account, action, result string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.ev, func(e AccountEvent) bool {
		return e.Camera == cam && e.Account == account && e.Action == action && e.Result == result
	})
}

func (l *auditLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, _ := json.Marshal(l.ev)
	return string(b)
}

func accountOf(c Camera, name string) Account {
	for _, a := range c.Accounts {
		if a.Username == name {
			return a
		}
	}
	return Account{}
}

// TestAdoptSecuresOtherAccounts: a camera with a deletable factory account,
// an installer's administrator and a built-in account camsim refuses to
// delete. After adoption the first two are gone and the third has a new
// generated password (read in camsim's state), the inventory says so, every
// action is audited, and no password appears anywhere.
func TestAdoptSecuresOtherAccounts(t *testing.T) {
	s := startSim(t, 1, accountArgs(t, "service:Operator", "installer:Administrator", "builtin:User:fixed")...)
	logs := &syncBuffer{}
	audit := &auditLog{}
	dir := t.TempDir()
	m, al := newManager(t, dir, testTPM(t), logs, func(c *Config) { c.Audit = audit.add })
	ids := adoptAll(t, context.Background(), m, s)
	id := ids["cam1"]

	users := s.users(t, "cam1")
	if _, ok := users["service"]; ok {
		t.Error("the deletable factory account is still on the camera")
	}
	if _, ok := users["installer"]; ok {
		t.Error("the installer's account is still on the camera")
	}
	builtin, ok := users["builtin"]
	if !ok || builtin == "builtin-factory-pw" || len(builtin) < 32 {
		t.Fatalf("the built-in account's password was not replaced by a generated one (present %v, len %d)", ok, len(builtin))
	}
	if users[factoryUser] == factoryPass {
		t.Fatal("the appliance's own password was not replaced")
	}

	c, err := m.Camera(id)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]AccountState{factoryUser: AccountOwn, "service": AccountDeleted, "installer": AccountDeleted, "builtin": AccountSecured} {
		a := accountOf(c, name)
		if a.State != want || a.Present != (want != AccountDeleted) || a.FirstSeen.IsZero() {
			t.Errorf("inventory account %s: %+v, want %s", name, a, want)
		}
	}
	if accountOf(c, "installer").Level != LevelAdministrator || c.AccountWarning != "" || c.AccountsAudited.IsZero() {
		t.Errorf("inventory %+v", c)
	}
	if !strings.HasPrefix(c.AccountPolicy(), "strict") {
		t.Errorf("policy %q", c.AccountPolicy())
	}
	for _, e := range []struct{ account, action string }{{"service", "delete"}, {"installer", "delete"}, {"builtin", "secure"}} {
		if !audit.has(id, e.account, e.action, "ok") {
			t.Errorf("no audited %s of %s: %s", e.action, e.account, audit)
		}
	}
	for _, a := range m.Alarms() {
		if a.Kind == AlarmAccountAppeared || a.Kind == AlarmAccountUnsecured {
			t.Errorf("alarm at a clean adoption: %+v", a)
		}
	}
	_ = al
	secrets := []string{builtin, users[factoryUser], "service-factory-pw", "installer-factory-pw", "builtin-factory-pw"}
	noSecretIn(t, "the manager's log", logs.String(), secrets...)
	noSecretIn(t, "the audit events", audit.String(), secrets...)
	noSecretIn(t, "the registry", readRegistry(t, dir), secrets...)
	b, _ := json.Marshal(view(c, time.Now()))
	noSecretIn(t, "the API view", string(b), secrets...)
}

// TestAccountAlarms: an account the camera refuses both to delete and to
// change is an alarm and marks the camera; an account created on the camera
// behind the appliance's back is an alarm at the next audit and removed;
// once the camera lets the built-in account change, the next audit secures
// it and clears the alarm.
func TestAccountAlarms(t *testing.T) {
	s := startSim(t, 1, accountArgs(t, "locked:Operator:fixed")...)
	s.control(t, "/onvif/account?cam=cam1&user=locked&locked=true")
	audit := &auditLog{}
	m, al := newManager(t, t.TempDir(), testTPM(t), &syncBuffer{}, func(c *Config) {
		c.Audit = audit.add
		c.AccountAuditEvery = 200 * time.Millisecond
	})
	ctx := context.Background()
	id := adoptAll(t, ctx, m, s)["cam1"]

	c, _ := m.Camera(id)
	if a := accountOf(c, "locked"); a.State != AccountUnsecured || !strings.Contains(a.Detail, "FixedUser") {
		t.Fatalf("locked account %+v", a)
	}
	if c.AccountWarning != "account locked could not be secured" {
		t.Fatalf("inventory warning %q", c.AccountWarning)
	}
	if a, ok := al.find(id, AlarmAccountUnsecured, true); !ok || !strings.Contains(a.Detail, "locked") {
		t.Fatal("no alarm for the account that could not be secured")
	}
	if !audit.has(id, "locked", "secure", "fail") {
		t.Fatalf("the failure is not audited: %s", audit)
	}
	if s.users(t, "cam1")["locked"] != "locked-factory-pw" {
		t.Fatal("camsim changed the locked account")
	}

	runManager(t, m)
	// Someone with the camera's administrator credentials adds an account.
	src, err := m.Source(id)
	if err != nil {
		t.Fatal(err)
	}
	e := newEndpoint("https", s.ONVIF[0].HTTPS, c.CertSHA256, nil, 5*time.Second)
	defer e.close()
	req := device.CreateUsers{User: onvif.User{Username: "backdoor", Password: "backdoor-pw-1", UserLevel: "Administrator"}}
	if err := e.call(ctx, "", credentials{Username: src.Username, Password: src.Password}, req, nil); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	waitFor(t, 10*time.Second, "account-appeared alarm", func() bool {
		a, ok := al.find(id, AlarmAccountAppeared, true)
		return ok && strings.Contains(a.Detail, "backdoor")
	})
	t.Logf("account-appeared alarm %v after the account was created", time.Since(created).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "backdoor removed", func() bool {
		_, ok := s.users(t, "cam1")["backdoor"]
		return !ok && audit.has(id, "backdoor", "delete", "ok")
	})
	if !audit.has(id, "backdoor", "appeared", "ok") {
		t.Fatalf("the appearance is not audited: %s", audit)
	}

	// The camera now lets the built-in account change: the next audit secures it.
	s.control(t, "/onvif/account?cam=cam1&user=locked&locked=false")
	waitFor(t, 10*time.Second, "unsecured alarm cleared", func() bool {
		_, ok := al.find(id, AlarmAccountUnsecured, false)
		return ok
	})
	c, _ = m.Camera(id)
	if accountOf(c, "locked").State != AccountSecured || c.AccountWarning != "" || s.users(t, "cam1")["locked"] == "locked-factory-pw" {
		t.Fatalf("after the camera allowed it: %+v", accountOf(c, "locked"))
	}
	if accountOf(c, "backdoor").State != AccountDeleted {
		t.Fatalf("backdoor %+v", accountOf(c, "backdoor"))
	}
}

// TestKeepAccount: an administrator's exemption keeps one account (given at
// adoption, audited with the administrator's name); an Administrator
// account cannot be kept; a kept account whose level rises is an alarm and
// removed; withdrawing an exemption removes the account at once; a
// rotation lists the accounts again.
func TestKeepAccount(t *testing.T) {
	s := startSim(t, 1, accountArgs(t, "vms2:Operator", "other:User", "lpr:User")...)
	audit := &auditLog{}
	m, al := newManager(t, t.TempDir(), testTPM(t), &syncBuffer{}, func(c *Config) { c.Audit = audit.add })
	ctx := WithActor(context.Background(), "alice")
	o := s.ONVIF[0]
	if _, err := m.Adopt(ctx, AdoptRequest{HTTPS: o.HTTPS, Username: factoryUser, Password: factoryPass,
		Keep: []KeepRequest{{Username: "vms2", Reason: "   "}}}); !errors.Is(err, errBadRequest) {
		t.Fatalf("an exemption without a reason: %v", err)
	}
	if _, err := m.Adopt(ctx, AdoptRequest{HTTPS: o.HTTPS, Username: factoryUser, Password: factoryPass,
		Keep: []KeepRequest{{Username: "vms2", Level: LevelAdministrator, Reason: "x"}}}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("an Administrator exemption: %v", err)
	}
	c, err := m.Adopt(ctx, AdoptRequest{HTTPS: o.HTTPS, Username: factoryUser, Password: factoryPass,
		Keep: []KeepRequest{{Username: "vms2", Level: LevelOperator, Reason: "used by the second VMS"}, {Username: "lpr", Reason: "number-plate reader"}}})
	if err != nil {
		t.Fatal(err)
	}
	users := s.users(t, "cam1")
	if users["vms2"] != "vms2-factory-pw" || users["lpr"] != "lpr-factory-pw" {
		t.Fatal("a kept account was changed")
	}
	if _, ok := users["other"]; ok {
		t.Fatal("an account not kept is still on the camera")
	}
	if a := accountOf(c, "vms2"); a.State != AccountKept || !strings.Contains(a.Detail, "alice") {
		t.Fatalf("vms2 %+v", a)
	}
	if !audit.has(c.ID, "vms2", "keep", "ok") || !strings.Contains(c.AccountPolicy(), "vms2 (Operator, by alice: used by the second VMS)") {
		t.Fatalf("exemption not audited or not shown: %q %s", c.AccountPolicy(), audit)
	}

	// The kept account is raised to Administrator behind the appliance's back.
	src, _ := m.Source(c.ID)
	e := newEndpoint("https", o.HTTPS, c.CertSHA256, nil, 5*time.Second)
	defer e.close()
	if err := setUser(ctx, e, credentials{Username: src.Username, Password: src.Password}, "vms2", "vms2-factory-pw", LevelAdministrator); err != nil {
		t.Fatal(err)
	}
	if err := m.AuditAccounts(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := al.find(c.ID, AlarmAccountAppeared, true); !ok || !audit.has(c.ID, "vms2", "level-raised", "ok") {
		t.Fatal("no alarm for the kept account's raised level")
	}
	if _, ok := s.users(t, "cam1")["vms2"]; ok {
		t.Fatal("the raised account is still on the camera")
	}
	if _, err := m.KeepAccount(ctx, c.ID, KeepRequest{Username: factoryUser, Reason: "x"}); !errors.Is(err, errBadRequest) {
		t.Fatalf("keeping the appliance's own account: %v", err)
	}

	// Withdrawn: removed at once.
	if _, err := m.EnforceAccount(WithActor(context.Background(), "bob"), c.ID, "lpr"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.users(t, "cam1")["lpr"]; ok || !audit.has(c.ID, "lpr", "enforce", "ok") || !audit.has(c.ID, "lpr", "delete", "ok") {
		t.Fatalf("after withdrawing the exemption: %s", audit)
	}

	// A rotation lists the accounts again.
	if err := e.call(ctx, "", credentials{Username: src.Username, Password: src.Password},
		device.CreateUsers{User: onvif.User{Username: "late", Password: "late-pw-123", UserLevel: "User"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Rotate(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.users(t, "cam1")["late"]; ok || !audit.has(c.ID, "late", "delete", "ok") {
		t.Fatal("the rotation did not remove the new account")
	}
}

// usersResponse builds a GetUsers answer.
func usersResponse(users ...[2]string) []byte {
	var b strings.Builder
	b.WriteString(`<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema"><env:Body><tds:GetUsersResponse>`)
	for _, u := range users {
		fmt.Fprintf(&b, `<tds:User><tt:Username>%s</tt:Username><tt:UserLevel>%s</tt:UserLevel></tds:User>`, u[0], u[1])
	}
	b.WriteString(`</tds:GetUsersResponse></env:Body></env:Envelope>`)
	return []byte(b.String())
}

func manyAccounts(n int) [][2]string {
	out := make([][2]string, n)
	for i := range out {
		out[i] = [2]string{fmt.Sprintf("u%d", i), "User"}
	}
	return out
}

// usersCases are the GetUsers answers of a malicious camera; the fuzz seeds
// in testdata/fuzz/FuzzParseUsers start from the same shapes.
var usersCases = []struct {
	name  string
	body  []byte
	want  []cameraUser
	error error
}{
	{"normal", usersResponse([2]string{"admin", "Administrator"}, [2]string{"service", "Operator"}),
		[]cameraUser{{"admin", LevelAdministrator}, {"service", LevelOperator}}, nil},
	{"bad levels", usersResponse([2]string{"a", "root"}, [2]string{"b", ""}, [2]string{"c", "Extended"}),
		[]cameraUser{{"a", LevelUnknown}, {"b", LevelUnknown}, {"c", LevelExtended}}, nil},
	{"duplicates", usersResponse([2]string{"a", "User"}, [2]string{"a", "Administrator"}), []cameraUser{{"a", LevelUser}}, nil},
	{"at the bound", usersResponse(manyAccounts(maxAccounts)...), nil, nil},
	{"huge list", usersResponse(manyAccounts(maxAccounts + 1)...), nil, ErrTooLarge},
	{"long name", usersResponse([2]string{strings.Repeat("n", maxUsernameBytes+1), "User"}), nil, ErrMalformed},
	{"empty name", usersResponse([2]string{"", "User"}), nil, ErrMalformed},
	{"control character", usersResponse([2]string{"a&#x1b;[31m", "User"}), nil, ErrMalformed},
	{"fault", []byte(`<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code><env:Reason><env:Text>no</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>`), nil, nil},
}

func TestParseUsers(t *testing.T) {
	for _, tc := range usersCases {
		got, err := parseUsers(200, tc.body)
		switch {
		case tc.name == "fault":
			var f *FaultError
			if !errors.As(err, &f) || !errors.Is(authErr(err), ErrUnauthorized) {
				t.Errorf("%s: %v", tc.name, err)
			}
		case tc.error != nil:
			if !errors.Is(err, tc.error) {
				t.Errorf("%s: err %v, want %v", tc.name, err, tc.error)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != nil && !slices.Equal(got, tc.want):
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		case tc.name == "at the bound" && len(got) != maxAccounts:
			t.Errorf("%s: %d accounts", tc.name, len(got))
		}
	}
	for name, b := range hostile {
		if _, err := parseUsers(200, b); err == nil {
			t.Errorf("%s: parseUsers accepted it", name)
		}
	}
}

func FuzzParseUsers(f *testing.F) {
	for _, tc := range usersCases {
		f.Add(tc.body)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		users, err := parseUsers(200, b)
		if err != nil {
			return
		}
		if len(users) > maxAccounts {
			t.Fatalf("%d accounts", len(users))
		}
		seen := map[string]bool{}
		for _, u := range users {
			if u.Username == "" || len(u.Username) > maxUsernameBytes || seen[u.Username] || strings.ContainsAny(u.Username, "\x00\n\r\x1b") {
				t.Fatalf("bad account %q", u.Username)
			}
			seen[u.Username] = true
			switch u.Level {
			case LevelAdministrator, LevelOperator, LevelUser, LevelAnonymous, LevelExtended, LevelUnknown:
			default:
				t.Fatalf("level %q", u.Level)
			}
		}
	})
}
