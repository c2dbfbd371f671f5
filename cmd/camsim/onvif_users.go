package main

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
)

// The ONVIF user management of a simulated device (ONVIF Core, Device
// Management, "Security": GetUsers, CreateUsers, DeleteUsers, SetUser).
//
// What it follows from the specification:
//   - GetUsers lists every account with its level, never a password.
//   - CreateUsers, DeleteUsers and SetUser are all-or-nothing: either every
//     account of the request is processed or a fault is returned and
//     nothing changed.
//   - Faults carry the specification's codes: env:Sender/ter:OperationProhibited/
//     ter:UsernameClash, ter:AnonymousNotAllowed, ter:UsernameTooLong,
//     ter:PasswordTooLong, ter:PasswordTooWeak; env:Receiver/ter:Action/
//     ter:TooManyUsers; env:Sender/ter:InvalidArgVal/ter:UsernameMissing and
//     ter:FixedUser.
//   - An Anonymous account may only call the PRE_AUTH operations; User and
//     Operator accounts may not manage users (GetUsers is READ_SYSTEM_SECRET).
//
// What camsim adds, as many cameras do: the account a request is
// authenticated as cannot delete itself (so a device never locks out the
// client deleting), and a device may keep built-in accounts: "fixed" ones
// that DeleteUsers refuses (ter:FixedUser) and "locked" ones whose password
// SetUser refuses too.

// ONVIF user levels camsim knows (tt:UserLevel). Extended is not simulated.
const levelAnonymous = "Anonymous"

// Bounds of an account, as a camera's firmware would have them.
const (
	maxUsernameLen = 64
	maxPasswordLen = 256
)

// Account is an extra account a device starts with (-account).
type Account struct {
	Name     string
	Level    string
	Password string
	// Fixed accounts cannot be deleted (DeleteUsers answers ter:FixedUser).
	Fixed bool
}

// parseAccount reads a -account value NAME:LEVEL:PASSWORD-FILE; the password
// is the first line of the file (camsim has no built-in password).
func parseAccount(v string) (Account, error) {
	name, rest, ok1 := strings.Cut(v, ":")
	level, file, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || name == "" || file == "" {
		return Account{}, fmt.Errorf("-account %q: want NAME:LEVEL:PASSWORD-FILE", v)
	}
	if !validLevel(level) {
		return Account{}, fmt.Errorf("-account %q: level must be Administrator, Operator, User or Anonymous", name)
	}
	if len(name) > maxUsernameLen || strings.ContainsAny(name, "<>&\"'") {
		return Account{}, fmt.Errorf("-account %q: bad user name", name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return Account{}, fmt.Errorf("-account %s: read password file: %w", name, err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimRight(pw, "\r")
	if pw == "" {
		return Account{}, fmt.Errorf("-account %s: password file %s is empty", name, file)
	}
	return Account{Name: name, Level: level, Password: pw}, nil
}

func validLevel(l string) bool {
	switch l {
	case levelAdmin, levelOperator, levelUser, levelAnonymous:
		return true
	}
	return false
}

// The specification's faults for user management.
func faultProhibited(sub, reason string) *soapFault {
	return &soapFault{status: http.StatusBadRequest, code: "env:Sender", subcode: "ter:OperationProhibited", subcode2: sub, reason: reason}
}

func faultInvalidArg(sub, reason string) *soapFault {
	return &soapFault{status: http.StatusBadRequest, code: "env:Sender", subcode: "ter:InvalidArgVal", subcode2: sub, reason: reason}
}

var errTooManyUsers = &soapFault{status: http.StatusBadRequest, code: "env:Receiver", subcode: "ter:Action", subcode2: "ter:TooManyUsers", reason: "Maximum number of supported users exceeded"}

// userIn is a tt:User in a request.
type userIn struct {
	Username  string  `xml:"Username"`
	Password  *string `xml:"Password"`
	UserLevel string  `xml:"UserLevel"`
}

// opGetUsers lists the accounts, never their passwords.
func (d *onvifDevice) opGetUsers() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var b strings.Builder
	b.WriteString(`<tds:GetUsersResponse>`)
	for _, u := range d.users {
		fmt.Fprintf(&b, `<tds:User><tt:Username>%s</tt:Username><tt:UserLevel>%s</tt:UserLevel></tds:User>`, esc(u.Username), esc(u.Level))
	}
	b.WriteString(`</tds:GetUsersResponse>`)
	return b.String()
}

// checkUserIn applies the per-account rules common to CreateUsers and SetUser.
func checkUserIn(u userIn, create bool) error {
	switch {
	case u.Username == "":
		return faultInvalidArg("ter:UsernameMissing", "Username missing")
	case len(u.Username) > maxUsernameLen:
		return faultProhibited("ter:UsernameTooLong", "The username is too long")
	case u.UserLevel == levelAnonymous:
		return faultProhibited("ter:AnonymousNotAllowed", "User level anonymous is not allowed")
	case !validLevel(u.UserLevel):
		return faultSender("ter:InvalidArgVal", "unknown user level")
	case u.Password != nil && len(*u.Password) > maxPasswordLen:
		return faultProhibited("ter:PasswordTooLong", "The password is too long")
	case create && (u.Password == nil || *u.Password == ""):
		// camsim never holds an account without a password.
		return faultProhibited("ter:PasswordTooWeak", "Too weak password")
	}
	return nil
}

// opCreateUsers adds accounts, all or none.
func (d *onvifDevice) opCreateUsers(req *request) (string, error) {
	var in struct {
		Users []userIn `xml:"CreateUsers>User"`
	}
	if err := xml.Unmarshal(wrap(req.body), &in); err != nil || len(in.Users) == 0 {
		return "", faultSender("ter:InvalidArgVal", "malformed CreateUsers")
	}
	d.mu.Lock()
	users := slices.Clone(d.users)
	for _, u := range in.Users {
		if err := checkUserIn(u, true); err != nil {
			d.mu.Unlock()
			return "", err
		}
		if slices.ContainsFunc(users, func(x onvifUser) bool { return x.Username == u.Username }) {
			d.mu.Unlock()
			return "", faultProhibited("ter:UsernameClash", "Username already exists")
		}
		if len(users) >= maxUsers {
			d.mu.Unlock()
			return "", errTooManyUsers
		}
		users = append(users, onvifUser{Username: u.Username, Password: *u.Password, Level: u.UserLevel})
	}
	d.users = users
	d.mu.Unlock()
	d.log.Info("users created", "count", len(in.Users))
	d.sim.saveState()
	return `<tds:CreateUsersResponse/>`, nil
}

// opSetUser changes passwords and levels, all or none.
func (d *onvifDevice) opSetUser(req *request) (string, error) {
	var in struct {
		Users []userIn `xml:"SetUser>User"`
	}
	if err := xml.Unmarshal(wrap(req.body), &in); err != nil || len(in.Users) == 0 {
		return "", faultSender("ter:InvalidArgVal", "malformed SetUser")
	}
	d.mu.Lock()
	if d.faults[onvifFaultRejectSetUser] {
		d.mu.Unlock()
		return "", &soapFault{status: http.StatusBadRequest, code: "env:Receiver", subcode: "ter:Action", reason: "user change refused by device policy"}
	}
	users := slices.Clone(d.users)
	for _, u := range in.Users {
		if err := checkUserIn(u, false); err != nil {
			d.mu.Unlock()
			return "", err
		}
		i := slices.IndexFunc(users, func(x onvifUser) bool { return x.Username == u.Username })
		switch {
		case i < 0:
			d.mu.Unlock()
			return "", faultInvalidArg("ter:UsernameMissing", "Username not recognized")
		case users[i].Locked:
			d.mu.Unlock()
			return "", faultInvalidArg("ter:FixedUser", "Username may not be updated")
		}
		if u.Password != nil && *u.Password != "" {
			users[i].Password = *u.Password
		}
		users[i].Level = u.UserLevel
	}
	d.users = users
	d.mu.Unlock()
	d.log.Info("users changed", "count", len(in.Users))
	d.sim.saveState()
	return `<tds:SetUserResponse/>`, nil
}

// opDeleteUsers removes accounts, all or none. self is the account the
// request is authenticated as: it cannot delete itself.
func (d *onvifDevice) opDeleteUsers(req *request, self string) (string, error) {
	var in struct {
		Names []string `xml:"DeleteUsers>Username"`
	}
	if err := xml.Unmarshal(wrap(req.body), &in); err != nil || len(in.Names) == 0 {
		return "", faultSender("ter:InvalidArgVal", "malformed DeleteUsers")
	}
	d.mu.Lock()
	users := slices.Clone(d.users)
	for _, name := range in.Names {
		i := slices.IndexFunc(users, func(x onvifUser) bool { return x.Username == name })
		switch {
		case i < 0:
			d.mu.Unlock()
			return "", faultInvalidArg("ter:UsernameMissing", "Username not recognized")
		case users[i].Fixed || users[i].Locked:
			d.mu.Unlock()
			return "", faultInvalidArg("ter:FixedUser", "Username may not be deleted")
		case name == self:
			d.mu.Unlock()
			return "", faultInvalidArg("ter:FixedUser", "The account making the request cannot delete itself")
		}
		users = slices.Delete(users, i, i+1)
	}
	d.users = users
	d.mu.Unlock()
	d.log.Info("users deleted", "count", len(in.Names))
	d.sim.saveState()
	return `<tds:DeleteUsersResponse/>`, nil
}

// controlAccount marks an existing account built in: fixed (DeleteUsers
// refuses it) and/or locked (SetUser refuses it as well).
func (d *onvifDevice) controlAccount(user, fixed, locked string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.IndexFunc(d.users, func(x onvifUser) bool { return x.Username == user })
	if i < 0 {
		return fmt.Errorf("no account %q on %s", user, d.name)
	}
	for _, f := range []struct {
		v   string
		dst *bool
	}{{fixed, &d.users[i].Fixed}, {locked, &d.users[i].Locked}} {
		switch f.v {
		case "":
		case "true":
			*f.dst = true
		case "false":
			*f.dst = false
		default:
			return errors.New("fixed and locked are true or false")
		}
	}
	return nil
}
