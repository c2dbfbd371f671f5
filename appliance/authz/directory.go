package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	bolt "go.etcd.io/bbolt"
)

// Directory is an external source of accounts (LDAP, Active Directory, a Kerberos realm). It proves who a
// user is and says which appliance roles their directory groups map to; authz keeps everything else:
// the second factor, schedules, dual authorization, sessions and the audit. The appliance/authz/directory
// package implements it.
//
// A directory account appears in authz as an account whose [User.Directory] is set. It has no local
// password; its roles are replaced by the directory's answer at every login, so a change of group takes
// effect at the next login. A local account of the same name always wins: the directory is never asked
// about it, so local break-glass administrators sign in whatever state the directory is in.
type Directory interface {
	// Authenticate checks name and password with the directory. It returns a [*DirectoryError] when it
	// refuses, wrapping [ErrBadCredentials], [ErrAccountDisabled], [ErrNoDirectoryRole] or
	// [ErrDirectoryUnavailable].
	Authenticate(ctx context.Context, name, password string) (DirectoryUser, error)
}

// Negotiator is a [Directory] that also accepts SPNEGO (Kerberos) tokens from the web server's
// "Authorization: Negotiate" header. NTLM tokens are refused.
type Negotiator interface {
	Directory
	// Negotiate verifies a SPNEGO token (the decoded header value) against the appliance's keytab and
	// looks its user up. Errors as for Authenticate.
	Negotiate(ctx context.Context, token []byte) (DirectoryUser, error)
	// NegotiateEnabled reports whether single sign-on is configured, so the login page offers it.
	NegotiateEnabled() bool
}

// DirectoryUser is a user the directory vouched for.
type DirectoryUser struct {
	// Name is the canonical account name in the appliance (letters, digits, ., _ and -; at most 64).
	Name string
	// Source names the directory and the way the user was checked, for the account and the audit log,
	// such as "ldap ldaps://dc1.example.com:636" or "kerberos EXAMPLE.COM".
	Source string
	// DN is the user's distinguished name in the directory, shown on the users page.
	DN string
	// Groups are the directory groups that mapped to roles (direct or nested), for the audit log.
	Groups []string
	// Roles are the appliance roles the groups map to; at least one.
	Roles []string
	// DualAuth is set when a group puts the user under dual authorization at login.
	DualAuth bool
}

// Directory errors. A [*DirectoryError] wraps one of them, or [ErrBadCredentials].
var (
	// ErrDirectoryUnavailable: the directory (LDAP server or KDC) cannot be reached or answers wrongly.
	// Directory accounts are refused (fail closed); local accounts are unaffected.
	ErrDirectoryUnavailable = errors.New("the directory cannot be reached, so directory accounts cannot sign in now; local administrator accounts still can")
	// ErrAccountDisabled: the directory says the account is disabled or locked.
	ErrAccountDisabled = errors.New("account disabled")
	// ErrNoDirectoryRole: the user is in no group that maps to an appliance role.
	ErrNoDirectoryRole = errors.New("no appliance role for this directory account")
	// ErrNoDirectory: no directory is configured.
	ErrNoDirectory = errors.New("directory login is not configured")
)

// DirectoryError is a refusal by a [Directory]. Reason goes to the audit log only (never a secret);
// users see the wrapped sentinel's message.
type DirectoryError struct {
	Err    error
	Reason string
	// Known reports that the account exists in the directory; otherwise the typed name is audited only
	// as a hash (it may be a password typed into the wrong field).
	Known bool
}

func (e *DirectoryError) Error() string {
	if e.Reason == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Reason
}

func (e *DirectoryError) Unwrap() error { return e.Err }

// directoryHolder lets SetDirectory swap the backend while logins run.
type directoryHolder struct{ d Directory }

// SetDirectory installs (or with nil removes) the directory consulted for names that are no local
// account. It may be called at any time, for example when the configuration page saves new settings.
func (s *Service) SetDirectory(d Directory) {
	s.dir.Store(&directoryHolder{d: d})
}

func (s *Service) directory() Directory {
	h := s.dir.Load()
	if h == nil {
		return nil
	}
	return h.d
}

// NegotiateEnabled reports whether the login page should offer Kerberos single sign-on.
func (s *Service) NegotiateEnabled() bool {
	n, ok := s.directory().(Negotiator)
	return ok && n.NegotiateEnabled()
}

// directoryTimeout bounds one directory check, so an unreachable server fails closed in bounded time.
const directoryTimeout = 15 * time.Second

// maxDirectoryName bounds a name handed to the directory (user@realm, DOMAIN\user).
const maxDirectoryName = 256

// directoryName reports whether name may be handed to a directory: printable, bounded.
func directoryName(name string) bool {
	if name == "" || len(name) > maxDirectoryName {
		return false
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// isLocal reports whether name is a local (not directory) account.
func (s *Service) isLocal(name string) bool {
	if !validName(name) {
		return false
	}
	var u *User
	_ = s.db.View(func(tx *bolt.Tx) error {
		u, _ = s.getUser(tx, name)
		return nil
	})
	return u != nil && u.Directory == ""
}

// checkDirectory authenticates name with the directory and brings its shadow account up to date. It is
// called under the throttle by checkPassword for names that are no local account.
func (s *Service) checkDirectory(ctx context.Context, d Directory, name, password, source, purpose string) (*User, error) {
	ctx, cancel := context.WithTimeout(ctx, directoryTimeout)
	defer cancel()
	du, err := d.Authenticate(ctx, name, password)
	if err != nil {
		return nil, s.directoryRefused(ctx, name, source, purpose, err)
	}
	return s.directoryAccepted(ctx, du, source, purpose)
}

// directoryRefused audits a refusal and turns it into the error the user sees.
func (s *Service) directoryRefused(ctx context.Context, name, source, purpose string, err error) error {
	var de *DirectoryError
	if !errors.As(err, &de) {
		de = &DirectoryError{Err: ErrDirectoryUnavailable, Reason: err.Error()}
	}
	shown := unknownAccount(name)
	if de.Known && validName(name) {
		shown = name
	}
	reason := "directory: " + de.Error()
	switch {
	case errors.Is(de, ErrDirectoryUnavailable), errors.Is(ctx.Err(), context.DeadlineExceeded):
		// Not a guess: no failure is counted, and the user learns why.
		s.Event(Subject{User: shown, Via: purpose}, purpose, "account/"+shown, "refused", reason, source)
		return fmt.Errorf("%w", ErrDirectoryUnavailable)
	}
	// Disabled accounts and accounts without a role are refused like a wrong password: the user learns no
	// more, the audit log says why.
	return s.failedAs(ctx, name, shown, source, purpose, reason)
}

// directoryAccepted creates or updates the shadow account of a directory user: roles from the directory,
// dual authorization if the directory or an administrator asks for it. A local account of the same name,
// or a shadow account disabled on the appliance, is refused.
func (s *Service) directoryAccepted(ctx context.Context, du DirectoryUser, source, purpose string) (*User, error) {
	if !validName(du.Name) || len(du.Roles) == 0 {
		return nil, s.directoryRefused(ctx, du.Name, source, purpose, &DirectoryError{Err: ErrNoDirectoryRole, Known: true, Reason: "no usable name or role"})
	}
	var out *User
	var conflict, disabled bool
	var before []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, du.Name)
		switch {
		case errors.Is(err, ErrNotFound):
			u = &User{Name: du.Name, Created: s.cfg.Now().UTC()}
		case err != nil:
			return err
		case u.Directory == "":
			conflict = true
			return nil
		}
		before = u.Roles
		var roles []string
		for _, r := range du.Roles {
			if tx.Bucket(bucketRoles).Get([]byte(r)) != nil && !slices.Contains(roles, r) {
				roles = append(roles, r)
			}
		}
		slices.Sort(roles)
		u.Roles, u.Directory, u.DirectoryDN, u.DirectorySynced = roles, du.Source, du.DN, s.cfg.Now().UTC()
		u.DualAuth = u.DualAuth || du.DualAuth
		u.Hash, u.Service = "", false
		if u.Disabled {
			disabled = true
			return nil
		}
		if len(roles) == 0 {
			return nil
		}
		out = u
		return putJSON(tx, bucketUsers, u.Name, u)
	})
	if err != nil {
		return nil, fmt.Errorf("directory account %s: %w", du.Name, err)
	}
	switch {
	case conflict:
		return nil, s.directoryRefused(ctx, du.Name, source, purpose, &DirectoryError{Err: ErrBadCredentials, Known: true, Reason: "a local account has this name"})
	case disabled:
		return nil, s.directoryRefused(ctx, du.Name, source, purpose, &DirectoryError{Err: ErrAccountDisabled, Known: true, Reason: "disabled on the appliance"})
	case out == nil:
		return nil, s.directoryRefused(ctx, du.Name, source, purpose, &DirectoryError{Err: ErrNoDirectoryRole, Known: true, Reason: "mapped roles " + strings.Join(du.Roles, ",") + " do not exist"})
	}
	reason := fmt.Sprintf("%s: groups %s give roles %s", du.Source, strings.Join(du.Groups, "; "), strings.Join(out.Roles, ","))
	if !slices.Equal(before, out.Roles) && before != nil {
		reason += " (were " + strings.Join(before, ",") + ")"
	}
	s.Event(Subject{User: out.Name, Via: purpose}, "login.directory", "account/"+out.Name, "ok", reason, source)
	return out, nil
}

// LoginNegotiate starts a login from a SPNEGO token (Kerberos single sign-on). The token stands in for
// the password: the second factor and dual authorization follow as for any login. It returns
// [ErrNoDirectory] when single sign-on is not configured.
func (s *Service) LoginNegotiate(ctx context.Context, token []byte, source string) (LoginState, error) {
	n, ok := s.directory().(Negotiator)
	if !ok || !n.NegotiateEnabled() {
		return LoginState{}, ErrNoDirectory
	}
	delay, err := s.thr.admit(source, "")
	if err != nil {
		s.Event(Subject{Via: "login.negotiate"}, "login.negotiate", "account/unknown", "refused", "throttled", source)
		return LoginState{}, err
	}
	if err := s.cfg.Sleep(ctx, delay); err != nil {
		return LoginState{}, err
	}
	dctx, cancel := context.WithTimeout(ctx, directoryTimeout)
	du, err := n.Negotiate(dctx, token)
	cancel()
	if err != nil {
		return LoginState{}, s.directoryRefused(ctx, "kerberos ticket", source, "login.negotiate", err)
	}
	u, err := s.directoryAccepted(ctx, du, source, "login.negotiate")
	if err != nil {
		return LoginState{}, err
	}
	return s.beginSecondStep(u, source, "kerberos ticket accepted, second factor next")
}
