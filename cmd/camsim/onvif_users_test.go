package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	servicePass   = "service-factory-pw"
	installerPass = "installer-known-pw"
	guestPass     = "guest-pw-0000"
)

// accountsSim starts camsim whose cameras carry a factory "service"
// Operator (built in: fixed), an installer's Administrator and an Anonymous
// "guest" besides the test administrator.
func accountsSim(t *testing.T, cameras int) (testSim, string) {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for _, a := range [][3]string{{"service", "Operator", servicePass}, {"installer", "Administrator", installerPass}, {"guest", "Anonymous", guestPass}} {
		f := filepath.Join(dir, a[0])
		if err := os.WriteFile(f, []byte(a[2]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-account", a[0]+":"+a[1]+":"+f)
	}
	return onvifSim(t, cameras, append(args, "-fixed-account", "service")...)
}

var userRE = regexp.MustCompile(`<tt:Username>([^<]*)</tt:Username><tt:UserLevel>([^<]*)</tt:UserLevel>`)

// listUsers returns "name:level" of every account GetUsers lists.
func listUsers(t *testing.T, url string) []string {
	t.Helper()
	code, body := soapCall(t, url, testUser, testPassword, `<tds:GetUsers/>`)
	if code != 200 {
		t.Fatalf("GetUsers: %d %s", code, body)
	}
	var out []string
	for _, m := range userRE.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1]+":"+m[2])
	}
	return out
}

// wantFault checks a SOAP fault's status and its specification subcodes.
func wantFault(t *testing.T, what string, code int, body string, subcodes ...string) {
	t.Helper()
	if code == 200 {
		t.Fatalf("%s succeeded, want a fault %v", what, subcodes)
	}
	for _, s := range subcodes {
		if !strings.Contains(body, "<env:Value>"+s+"</env:Value>") {
			t.Fatalf("%s: fault without %s: %s", what, s, body)
		}
	}
}

func userXML(name, pass, level string) string {
	return `<tds:User><tt:Username>` + name + `</tt:Username><tt:Password>` + pass + `</tt:Password><tt:UserLevel>` + level + `</tt:UserLevel></tds:User>`
}

// TestONVIFAccounts: extra accounts from -account; GetUsers, CreateUsers,
// DeleteUsers and SetUser with the specification's faults, all-or-nothing,
// levels enforced, the requester unable to delete itself, built-in accounts.
func TestONVIFAccounts(t *testing.T) {
	ts, state := accountsSim(t, 1)
	url := "https://" + ts.ONVIF[0].HTTPS + "/onvif/device_service"
	want := []string{testUser + ":Administrator", "service:Operator", "installer:Administrator", "guest:Anonymous"}
	if got := listUsers(t, url); !slices.Equal(got, want) {
		t.Fatalf("GetUsers %v, want %v", got, want)
	}
	if _, body := soapCall(t, url, testUser, testPassword, `<tds:GetUsers/>`); strings.Contains(body, servicePass) || strings.Contains(body, "Password") {
		t.Fatal("GetUsers shows passwords")
	}
	// Levels: an Operator reads the device but not its accounts; Anonymous reaches only PRE_AUTH.
	if code, _ := soapCall(t, url, "service", servicePass, `<tds:GetDeviceInformation/>`); code != 200 {
		t.Fatal("the Operator cannot read the device information")
	}
	code, body := soapCall(t, url, "service", servicePass, `<tds:GetUsers/>`)
	wantFault(t, "GetUsers as an Operator", code, body, "ter:NotAuthorized")
	code, body = soapCall(t, url, "guest", guestPass, `<tds:GetDeviceInformation/>`)
	wantFault(t, "GetDeviceInformation as Anonymous", code, body, "ter:NotAuthorized")
	if code, _ := soapCall(t, url, "guest", guestPass, `<tds:GetSystemDateAndTime/>`); code != 200 {
		t.Fatal("Anonymous refused a PRE_AUTH operation")
	}

	// DeleteUsers: all or nothing; built-in accounts and the requester itself refused.
	code, body = soapCall(t, url, testUser, testPassword, `<tds:DeleteUsers><tds:Username>installer</tds:Username><tds:Username>nobody</tds:Username></tds:DeleteUsers>`)
	wantFault(t, "DeleteUsers of an unknown account", code, body, "env:Sender", "ter:InvalidArgVal", "ter:UsernameMissing")
	code, body = soapCall(t, url, testUser, testPassword, `<tds:DeleteUsers><tds:Username>service</tds:Username></tds:DeleteUsers>`)
	wantFault(t, "DeleteUsers of a built-in account", code, body, "ter:InvalidArgVal", "ter:FixedUser")
	code, body = soapCall(t, url, testUser, testPassword, `<tds:DeleteUsers><tds:Username>`+testUser+`</tds:Username></tds:DeleteUsers>`)
	wantFault(t, "DeleteUsers of oneself", code, body, "ter:FixedUser")
	code, body = soapCall(t, url, "service", servicePass, `<tds:DeleteUsers><tds:Username>installer</tds:Username></tds:DeleteUsers>`)
	wantFault(t, "DeleteUsers as an Operator", code, body, "ter:NotAuthorized")
	if got := listUsers(t, url); !slices.Equal(got, want) {
		t.Fatalf("refused DeleteUsers changed the accounts: %v", got)
	}
	if code, body := soapCall(t, url, testUser, testPassword, `<tds:DeleteUsers><tds:Username>installer</tds:Username><tds:Username>guest</tds:Username></tds:DeleteUsers>`); code != 200 {
		t.Fatalf("DeleteUsers: %d %s", code, body)
	}
	if code, _ := soapCall(t, url, "installer", installerPass, `<tds:GetDeviceInformation/>`); code == 200 {
		t.Fatal("a deleted account still logs in")
	}
	want = want[:2]
	if got := listUsers(t, url); !slices.Equal(got, want) {
		t.Fatalf("after DeleteUsers %v, want %v", got, want)
	}

	// CreateUsers: all or nothing, and the specification's refusals.
	for _, tc := range []struct {
		what, users string
		subcodes    []string
	}{
		{"a clash", userXML("new1", "pw-new-1", "User") + userXML("service", "x-pw", "User"), []string{"ter:OperationProhibited", "ter:UsernameClash"}},
		{"a duplicate in one request", userXML("new1", "pw-new-1", "User") + userXML("new1", "pw-new-1", "User"), []string{"ter:UsernameClash"}},
		{"an Anonymous account", userXML("new1", "pw-new-1", "Anonymous"), []string{"ter:OperationProhibited", "ter:AnonymousNotAllowed"}},
		{"a long name", userXML(strings.Repeat("n", 65), "pw", "User"), []string{"ter:UsernameTooLong"}},
		{"a long password", userXML("new1", strings.Repeat("p", 257), "User"), []string{"ter:PasswordTooLong"}},
		{"no password", `<tds:User><tt:Username>new1</tt:Username><tt:UserLevel>User</tt:UserLevel></tds:User>`, []string{"ter:PasswordTooWeak"}},
		{"a bad level", userXML("new1", "pw-new-1", "Root"), []string{"ter:InvalidArgVal"}},
		{"too many", manyUsers(40), []string{"env:Receiver", "ter:TooManyUsers"}},
	} {
		code, body := soapCall(t, url, testUser, testPassword, `<tds:CreateUsers>`+tc.users+`</tds:CreateUsers>`)
		wantFault(t, "CreateUsers with "+tc.what, code, body, tc.subcodes...)
	}
	if got := listUsers(t, url); !slices.Equal(got, want) {
		t.Fatalf("refused CreateUsers changed the accounts: %v", got)
	}
	if code, body := soapCall(t, url, testUser, testPassword, `<tds:CreateUsers>`+userXML("op2", "op2-pass", "Operator")+userXML("viewer2", "viewer2-pass", "User")+`</tds:CreateUsers>`); code != 200 {
		t.Fatalf("CreateUsers: %d %s", code, body)
	}
	if code, _ := soapCall(t, url, "viewer2", "viewer2-pass", `<tds:GetDeviceInformation/>`); code != 200 {
		t.Fatal("a created account does not log in")
	}

	// SetUser: unknown account, locked built-in account, all or nothing.
	code, body = soapCall(t, url, testUser, testPassword, `<tds:SetUser>`+userXML("op2", "op2-new", "Operator")+userXML("nobody", "x", "User")+`</tds:SetUser>`)
	wantFault(t, "SetUser of an unknown account", code, body, "ter:InvalidArgVal", "ter:UsernameMissing")
	if code, _ := soapCall(t, url, "op2", "op2-pass", `<tds:GetDeviceInformation/>`); code != 200 {
		t.Fatal("a refused SetUser changed a password")
	}
	code, body = soapCall(t, url, testUser, testPassword, `<tds:SetUser>`+userXML("op2", "op2-new", "Anonymous")+`</tds:SetUser>`)
	wantFault(t, "SetUser to Anonymous", code, body, "ter:AnonymousNotAllowed")
	if code, body := soapCall(t, url, testUser, testPassword, `<tds:SetUser>`+userXML("service", "service-new-pw", "Operator")+`</tds:SetUser>`); code != 200 {
		t.Fatalf("SetUser of a fixed (deletable no, settable yes) account: %d %s", code, body)
	}
	if code, _ := soapCall(t, url, "service", servicePass, `<tds:GetDeviceInformation/>`); code == 200 {
		t.Fatal("the old password of service still logs in")
	}
	ctl(t, ts, "/onvif/account?cam=cam1&user=service&locked=true")
	code, body = soapCall(t, url, testUser, testPassword, `<tds:SetUser>`+userXML("service", "another-pw", "Operator")+`</tds:SetUser>`)
	wantFault(t, "SetUser of a locked account", code, body, "ter:InvalidArgVal", "ter:FixedUser")

	st := readState(t, state)["cam1"]
	var names []string
	for _, u := range st.Users {
		names = append(names, u.Username)
		if u.Username == "service" && (!u.Fixed || !u.Locked || u.Password != "service-new-pw") {
			t.Fatalf("state of service: %+v", u)
		}
	}
	if !slices.Equal(names, []string{testUser, "service", "op2", "viewer2"}) {
		t.Fatalf("state lists %v", names)
	}
}

func manyUsers(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(userXML(fmt.Sprintf("bulk%d", i), "bulk-pass", "User"))
	}
	return b.String()
}

// TestAccountFlags: -account needs a level camsim knows and a non-empty
// password file; -fixed-account must name an -account.
func TestAccountFlags(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(pw, []byte("pw\n"), 0o600)
	os.WriteFile(empty, nil, 0o600)
	base := []string{"-user", "admin", "-password-file", pw, "-onvif", "127.0.0.1:0", "-clips", dir}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-account", "svc:Root:" + pw}, "level"},
		{[]string{"-account", "svc:User"}, "NAME:LEVEL:PASSWORD-FILE"},
		{[]string{"-account", "svc:User:" + empty}, "empty"},
		{[]string{"-account", "svc:User:" + filepath.Join(dir, "missing")}, "read password file"},
		{[]string{"-account", "svc:User:" + pw, "-fixed-account", "other"}, "no -account"},
		{[]string{"-account", "admin:User:" + pw}, "given twice"},
	} {
		err := run(context.Background(), append(slices.Clone(base), tc.args...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// TestNPMOnvifUsers checks camsim's user management with the npm onvif
// client: getUsers, createUsers, deleteUsers, and the refusal of a built-in
// account's deletion.
func TestNPMOnvifUsers(t *testing.T) {
	dir := nodeCheck(t)
	ts, state := accountsSim(t, 1)
	_, port, _ := strings.Cut(ts.ONVIF[0].HTTP, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "users.js", "127.0.0.1", port, testUser)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(testPassword + "\nnpm-created-pw-1\n")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node users.js: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	var steps []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("node printed %q: %v", sc.Text(), err)
		}
		steps = append(steps, m)
	}
	byStep := map[string]map[string]any{}
	for _, s := range steps {
		if e, ok := s["error"]; ok {
			t.Fatalf("node: %v", e)
		}
		byStep[fmt.Sprint(s["step"])] = s
	}
	users := func(step string) string { return fmt.Sprint(byStep[step]["users"]) }
	if got := users("get"); got != "[viewer:Administrator service:Operator installer:Administrator guest:Anonymous]" {
		t.Fatalf("getUsers: %s", got)
	}
	if got := users("create"); !strings.Contains(got, "npmcheck:User") {
		t.Fatalf("after createUsers: %s", got)
	}
	if got := users("delete"); got != "[viewer:Administrator service:Operator guest:Anonymous]" {
		t.Fatalf("after deleteUsers: %s", got)
	}
	if e := fmt.Sprint(byStep["delete-fixed"]["refused"]); !strings.Contains(e, "FixedUser") && !strings.Contains(e, "may not be deleted") {
		t.Fatalf("deleting the built-in account: %v", byStep["delete-fixed"])
	}
	names := []string{}
	for _, u := range readState(t, state)["cam1"].Users {
		names = append(names, u.Username)
	}
	if !slices.Equal(names, []string{testUser, "service", "guest"}) {
		t.Fatalf("camsim state after the npm client: %v", names)
	}
}
