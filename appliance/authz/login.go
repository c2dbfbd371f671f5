package authz

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	bolt "go.etcd.io/bbolt"
)

// Timeouts of the steps between password and session.
const (
	pendingTTL      = 5 * time.Minute
	pendingAttempts = 5
	approvalTTL     = 10 * time.Minute
	enrolTTL        = 10 * time.Minute
)

// Step is where a login stands.
type Step string

// Login steps.
const (
	StepSecondFactor Step = "second-factor" // enter a TOTP or recovery code, or use a security key
	StepEnrol        Step = "enrol"         // first login: enrol TOTP before going on
	StepApproval     Step = "approval"      // dual authorization: an approver confirms on the same screen
	StepDone         Step = "done"          // the session is issued
)

// LoginState is the answer to each login step.
type LoginState struct {
	Step Step
	User string
	// Pending is the opaque token of an unfinished login (a secret: keep it in a cookie, never a URL).
	Pending string
	// WebAuthn reports whether the user may use a security key at the second-factor step.
	WebAuthn bool
	// Enrol holds the TOTP secret to enrol at StepEnrol.
	Enrol *TOTPEnrolment
	// Session is set at StepDone.
	Session *NewSession
	// RecoveryCodes are set once, right after TOTP enrolment: shown to the user, never stored in clear.
	RecoveryCodes []string
}

// NewSession is a freshly issued session. Token is the secret cookie value.
type NewSession struct {
	Token   string
	Session Session
}

// Session is a server-side session. Its token is kept only as a hash.
type Session struct {
	// ID is a public reference (for the audit log and the revocation list), not the token.
	ID       string
	User     string
	Created  time.Time
	LastSeen time.Time
	Source   string
	// CSRF is the session's anti-forgery token, sent in forms and headers.
	CSRF string
}

type pendingLogin struct {
	user     string
	step     Step
	source   string
	expires  time.Time
	attempts int
	enrol    *TOTPEnrolment
	wa       *webauthn.SessionData
}

func (s *Service) token(n int) (string, error) {
	b := make([]byte, n)
	if _, err := s.readRand(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// dummy returns a hash checked for unknown users, so their answer takes as long as a wrong password's.
func (s *Service) dummy() string {
	s.dummyOnce.Do(func() {
		s.dummyHash, _ = s.hashPassword("not a password of anyone here", s.cfg.Argon2)
	})
	return s.dummyHash
}

// checkPassword verifies a user's password under the throttle. It never says whether the user exists.
func (s *Service) checkPassword(ctx context.Context, name, password, source, purpose string) (*User, error) {
	delay, err := s.thr.admit(source, name)
	if err != nil {
		shown := unknownAccount(name)
		if validName(name) {
			if _, uerr := s.User(name); uerr == nil {
				shown = name
			}
		}
		s.Event(Subject{User: shown, Via: purpose}, purpose, "account/"+shown, "refused", "throttled", source)
		return nil, err
	}
	if err := s.cfg.Sleep(ctx, delay); err != nil {
		return nil, err
	}
	if d := s.directory(); d != nil && !s.isLocal(name) {
		// Not a local account: the directory decides (and fails closed when it cannot be reached).
		if len(password) > MaxPasswordLen || password == "" || !directoryName(name) {
			return nil, s.failedAs(ctx, name, unknownAccount(name), source, purpose, "malformed")
		}
		return s.checkDirectory(ctx, d, name, password, source, purpose)
	}
	if len(password) > MaxPasswordLen || !validName(name) {
		return nil, s.failedAs(ctx, name, unknownAccount(name), source, purpose, "malformed")
	}
	var u *User
	_ = s.db.View(func(tx *bolt.Tx) error {
		u, _ = s.getUser(tx, name)
		return nil
	})
	hash := s.dummy()
	if u != nil && u.Hash != "" {
		hash = u.Hash
	}
	ok, err := verifyPassword(hash, password)
	if err != nil {
		s.log.Error("password hash unreadable", "user", name, "err", err)
	}
	switch {
	case u == nil:
		// A name that is no account may be a password typed into the wrong field: audit only its hash.
		return nil, s.failedAs(ctx, name, unknownAccount(name), source, purpose, "no such account")
	case u.Directory != "":
		// A directory account while no directory is configured: nothing can vouch for it.
		s.Event(Subject{User: name, Via: purpose}, purpose, "account/"+name, "refused", "directory account and no directory configured", source)
		return nil, ErrDirectoryUnavailable
	case !ok:
		return nil, s.failed(ctx, name, source, purpose, "wrong password")
	case u.Disabled:
		return nil, s.failed(ctx, name, source, purpose, "account disabled")
	}
	return u, nil
}

func (s *Service) failed(ctx context.Context, name, source, purpose, reason string) error {
	return s.failedAs(ctx, name, name, source, purpose, reason)
}

// unknownAccount names an attempted account that does not exist, without repeating what was typed.
func unknownAccount(name string) string {
	h := sha256.Sum256([]byte("edgenvr unknown account v1\n" + name))
	return "unknown-" + hex.EncodeToString(h[:6])
}

// failedAs records a failure against the throttle (keyed by name) and the audit log (as shown).
func (s *Service) failedAs(ctx context.Context, name, shown, source, purpose, reason string) error {
	d := s.thr.fail(source, name)
	s.Event(Subject{User: shown, Via: purpose}, purpose, "account/"+shown, "fail", reason, source)
	if err := s.cfg.Sleep(ctx, d); err != nil {
		return err
	}
	return ErrBadCredentials
}

// Login checks a user name and password from source. On success it returns the next step; a session is
// never issued on a password alone.
func (s *Service) Login(ctx context.Context, name, password, source string) (LoginState, error) {
	u, err := s.checkPassword(ctx, name, password, source, "login")
	if err != nil {
		return LoginState{}, err
	}
	if u.Service {
		return LoginState{}, s.failed(ctx, name, source, "login", "service accounts use API tokens")
	}
	return s.beginSecondStep(u, source, "password accepted, second factor next")
}

// beginSecondStep opens the pending login of u, whose first factor (password or Kerberos ticket) is proven.
func (s *Service) beginSecondStep(u *User, source, how string) (LoginState, error) {
	p := &pendingLogin{user: u.Name, step: StepSecondFactor, source: source, expires: s.cfg.Now().Add(pendingTTL)}
	if !u.HasTOTP() && !u.HasWebAuthn() {
		enr, err := s.newTOTP(u.Name)
		if err != nil {
			return LoginState{}, err
		}
		p.step, p.enrol = StepEnrol, &enr
	}
	tok, err := s.token(32)
	if err != nil {
		return LoginState{}, err
	}
	s.mu.Lock()
	s.pending[tokenHash(tok)] = p
	s.mu.Unlock()
	s.Event(Subject{User: u.Name, Via: "login"}, "login.password", "account/"+u.Name, "ok", how, source)
	return LoginState{Step: p.step, User: u.Name, Pending: tok, WebAuthn: u.HasWebAuthn() && s.wa != nil, Enrol: p.enrol}, nil
}

// PendingState returns the state of an unfinished login without advancing it.
func (s *Service) PendingState(pending string) (LoginState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending[tokenHash(pending)]
	if p == nil || s.cfg.Now().After(p.expires) {
		return LoginState{}, ErrExpired
	}
	st := LoginState{Step: p.step, User: p.user, Pending: pending, Enrol: p.enrol}
	if u, err := s.User(p.user); err == nil {
		st.WebAuthn = u.HasWebAuthn() && s.wa != nil
	}
	return st, nil
}

func (s *Service) takePending(pending string, step Step) (*pendingLogin, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := tokenHash(pending)
	p := s.pending[k]
	if p == nil || s.cfg.Now().After(p.expires) {
		delete(s.pending, k)
		return nil, ErrExpired
	}
	if p.step != step {
		return nil, fmt.Errorf("login is at step %s: %w", p.step, ErrDenied)
	}
	return p, nil
}

// secondFactorFailed counts a failed code against the pending login and the throttle.
func (s *Service) secondFactorFailed(ctx context.Context, pending string, p *pendingLogin, source string) error {
	s.mu.Lock()
	p.attempts++
	if p.attempts >= pendingAttempts {
		delete(s.pending, tokenHash(pending))
	}
	s.mu.Unlock()
	return s.failed(ctx, p.user, source, "login.second-factor", "wrong code")
}

// LoginCode completes the second-factor (or enrolment) step with a TOTP code, or at the second-factor
// step with a single-use recovery code.
func (s *Service) LoginCode(ctx context.Context, pending, code, source string) (LoginState, error) {
	s.mu.Lock()
	p := s.pending[tokenHash(pending)]
	s.mu.Unlock()
	if p == nil {
		return LoginState{}, ErrExpired
	}
	p, err := s.takePending(pending, p.step)
	if err != nil {
		return LoginState{}, err
	}
	if p.step != StepSecondFactor && p.step != StepEnrol {
		return LoginState{}, fmt.Errorf("login is at step %s: %w", p.step, ErrDenied)
	}
	// The password is proven: only the source's delay applies here, not the account's.
	if _, err := s.thr.admit(source, ""); err != nil {
		return LoginState{}, err
	}
	now := s.cfg.Now()
	var recovery []string
	ok := false
	how := "totp"
	err = s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, p.user)
		if err != nil {
			return err
		}
		if p.step == StepEnrol {
			if step, good := checkTOTP(p.enrol.Secret, code, now, 0); good {
				codes, hashes, err := s.newRecoveryCodes(10)
				if err != nil {
					return err
				}
				sealed, err := s.sealSeed(u.Name, p.enrol.Secret)
				if err != nil {
					return err
				}
				u.TOTPSecret, u.TOTPLast, u.Recovery, recovery, ok = sealed, step, hashes, codes, true
				how = "totp enrolled"
			}
		} else if u.HasTOTP() {
			seed, err := s.openSeed(u.Name, u.TOTPSecret)
			if err != nil {
				return err
			}
			if step, good := checkTOTP(seed, code, now, u.TOTPLast); good {
				u.TOTPLast, ok = step, true
			} else if useRecovery(u, code) {
				ok, how = true, "recovery code"
			}
		}
		if !ok {
			return nil
		}
		return putJSON(tx, bucketUsers, u.Name, u)
	})
	if err != nil {
		return LoginState{}, err
	}
	if !ok {
		return LoginState{}, s.secondFactorFailed(ctx, pending, p, source)
	}
	st, err := s.afterSecondFactor(pending, p, source, how)
	st.RecoveryCodes = recovery
	return st, err
}

func (s *Service) afterSecondFactor(pending string, p *pendingLogin, source, how string) (LoginState, error) {
	s.thr.success(source, p.user)
	s.Event(Subject{User: p.user, Via: "login"}, "login.second-factor", "account/"+p.user, "ok", how, source)
	u, err := s.User(p.user)
	if err != nil {
		return LoginState{}, err
	}
	if u.DualAuth {
		s.mu.Lock()
		p.step, p.enrol, p.attempts = StepApproval, nil, 0
		p.expires = s.cfg.Now().Add(approvalTTL)
		s.mu.Unlock()
		return LoginState{Step: StepApproval, User: p.user, Pending: pending}, nil
	}
	return s.finish(pending, p, source, "")
}

// finish rotates the pending token into a new session token.
func (s *Service) finish(pending string, p *pendingLogin, source, approver string) (LoginState, error) {
	tok, err := s.token(32)
	if err != nil {
		return LoginState{}, err
	}
	csrf, err := s.token(24)
	if err != nil {
		return LoginState{}, err
	}
	now := s.cfg.Now()
	h := tokenHash(tok)
	sess := &Session{ID: h[:16], User: p.user, Created: now, LastSeen: now, Source: source, CSRF: csrf}
	s.mu.Lock()
	delete(s.pending, tokenHash(pending))
	s.sessions[h] = sess
	s.mu.Unlock()
	reason := "session issued"
	if approver != "" {
		reason += ", approved by " + approver
	}
	s.Event(Subject{User: p.user, Via: "session", Ref: sess.ID}, "login", "account/"+p.user, "ok", reason, source)
	return LoginState{Step: StepDone, User: p.user, Session: &NewSession{Token: tok, Session: *sess}}, nil
}

// verifyApprover checks a second person's password and TOTP code and their right to approve.
func (s *Service) verifyApprover(ctx context.Context, requester, approver, password, code, source string) error {
	if approver == requester {
		s.Event(Subject{User: approver, Via: "approval"}, "approve", "account/"+requester, "fail", "approver is the requester", source)
		return fmt.Errorf("the approver must be another person: %w", ErrDenied)
	}
	u, err := s.checkPassword(ctx, approver, password, source, "approval")
	if err != nil {
		return err
	}
	ok := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, u.Name)
		if err != nil {
			return err
		}
		if !u.HasTOTP() {
			return nil
		}
		seed, err := s.openSeed(u.Name, u.TOTPSecret)
		if err != nil {
			return err
		}
		step, good := checkTOTP(seed, code, s.cfg.Now(), u.TOTPLast)
		if !good {
			return nil
		}
		u.TOTPLast, ok = step, true
		return putJSON(tx, bucketUsers, u.Name, u)
	})
	if err != nil {
		return err
	}
	if !ok {
		return s.failed(ctx, approver, source, "approval", "wrong code")
	}
	s.thr.success(source, approver)
	d := s.Decide(Request{Subject: Subject{User: approver, Via: "approval"}, Action: Approve, Source: source})
	if !d.Allow {
		return fmt.Errorf("%s may not approve: %s: %w", approver, d.Reason, ErrDenied)
	}
	return nil
}

// LoginApprove completes the approval step of a dual-authorization login: approver, a different user
// holding the approve right, confirms with their password and TOTP code on the same screen.
func (s *Service) LoginApprove(ctx context.Context, pending, approver, password, code, source string) (LoginState, error) {
	p, err := s.takePending(pending, StepApproval)
	if err != nil {
		return LoginState{}, err
	}
	if err := s.verifyApprover(ctx, p.user, approver, password, code, source); err != nil {
		return LoginState{}, err
	}
	s.Event(Subject{User: approver, Via: "approval"}, "approve", "login/"+p.user, "ok", "dual authorization of a login", source)
	return s.finish(pending, p, source, approver)
}

// CancelLogin drops an unfinished login.
func (s *Service) CancelLogin(pending string) {
	s.mu.Lock()
	delete(s.pending, tokenHash(pending))
	s.mu.Unlock()
}

// Authenticate returns the session for a token presented by a client, ending it if idle or too old.
func (s *Service) Authenticate(token string) (Session, error) {
	if token == "" || len(token) > 128 {
		return Session{}, ErrExpired
	}
	now := s.cfg.Now()
	s.mu.Lock()
	h := tokenHash(token)
	sess := s.sessions[h]
	if sess == nil {
		s.mu.Unlock()
		return Session{}, ErrExpired
	}
	if now.Sub(sess.LastSeen) > s.cfg.SessionIdle || now.Sub(sess.Created) > s.cfg.SessionMax {
		delete(s.sessions, h)
		ended := *sess
		s.mu.Unlock()
		s.Event(Subject{User: ended.User, Via: "session", Ref: ended.ID}, "session.end", "account/"+ended.User, "ok", "idle or absolute limit reached", "")
		return Session{}, ErrExpired
	}
	sess.LastSeen = now
	out := *sess
	s.mu.Unlock()
	return out, nil
}

// CheckCSRF reports whether tok is the session's anti-forgery token, in constant time.
func (sess Session) CheckCSRF(tok string) bool {
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(sess.CSRF)) == 1
}

// Logout ends the session of token.
func (s *Service) Logout(token, source string) {
	s.mu.Lock()
	sess := s.sessions[tokenHash(token)]
	delete(s.sessions, tokenHash(token))
	s.mu.Unlock()
	if sess != nil {
		s.Event(Subject{User: sess.User, Via: "session", Ref: sess.ID}, "logout", "account/"+sess.User, "ok", "", source)
	}
}

// Sessions lists the live sessions (without tokens), newest first.
func (s *Service) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Session, 0, len(s.sessions))
	for _, v := range s.sessions {
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b Session) int { return b.Created.Compare(a.Created) })
	return out
}

// RevokeSession ends the session with public id (or every session of user if id is empty). The caller
// must have been allowed [ManageUsers]; by is recorded.
func (s *Service) RevokeSession(by Subject, id, user, source string) int {
	s.mu.Lock()
	n := 0
	for k, v := range s.sessions {
		if id != "" && v.ID == id || id == "" && v.User == user {
			delete(s.sessions, k)
			n++
		}
	}
	s.mu.Unlock()
	obj := "session/" + id
	if id == "" {
		obj = "account/" + user
	}
	s.Event(by, "session.revoke", obj, "ok", fmt.Sprintf("%d sessions ended", n), source)
	return n
}

// expire drops ended sessions, pending logins, approvals and setup enrolments.
func (s *Service) expire(now time.Time) {
	var ended []Session
	s.mu.Lock()
	for k, v := range s.sessions {
		if now.Sub(v.LastSeen) > s.cfg.SessionIdle || now.Sub(v.Created) > s.cfg.SessionMax {
			delete(s.sessions, k)
			ended = append(ended, *v)
		}
	}
	for k, v := range s.pending {
		if now.After(v.expires) {
			delete(s.pending, k)
		}
	}
	for k, v := range s.approvals {
		if now.Sub(v.Created) > approvalTTL {
			delete(s.approvals, k)
		}
	}
	for k, v := range s.enrol {
		if now.After(v.expires) {
			delete(s.enrol, k)
		}
	}
	s.mu.Unlock()
	for _, v := range ended {
		s.Event(Subject{User: v.User, Via: "session", Ref: v.ID}, "session.end", "account/"+v.User, "ok", "idle or absolute limit reached", "")
	}
}
