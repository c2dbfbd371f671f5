package camera

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/use-go/onvif/device"
	"github.com/use-go/onvif/xsd"
	"github.com/use-go/onvif/xsd/onvif"
)

// The camera's other accounts. The appliance's own account gets a generated
// password at adoption; every other account on the camera (a factory
// "service" or "user" account, an installer's) would otherwise keep a
// factory or human-known password. The account policy, strict by default:
//
//   - At adoption, at every rotation and on a periodic audit, the camera's
//     accounts are listed (GetUsers).
//   - Every account other than the appliance's own is deleted (DeleteUsers).
//   - Where the camera refuses the deletion (a built-in account), the
//     account gets a generated password that is never stored nor shown
//     (nobody needs it), proven by logging in with it where its level
//     allows a login.
//   - Where even that fails, an alarm is raised and the camera is marked in
//     the inventory ("account X could not be secured").
//   - An account that appeared since the last audit (an indicator of
//     compromise, or an installer's change) raises an alarm and is removed
//     by the same rule.
//   - The only way to keep an account is an administrator's explicit,
//     audited exemption of that one account on that one camera, with a
//     reason (another system uses it). An Administrator account cannot be
//     kept: it could replace the appliance's own password. An exempted
//     account whose level rises is an alarm and loses its exemption's
//     protection.
//
// Every account deleted, secured or left unsecured, every exemption given
// or withdrawn, is written to [Config.Audit]; the inventory keeps what was
// found and done ([Camera.Accounts]), never a password.

// Limits on the accounts a camera may list.
const (
	// maxAccounts bounds the accounts taken from one GetUsers answer; a
	// camera listing more is refused (ErrTooLarge) and the audit fails
	// loudly rather than handling a part of them.
	maxAccounts = 64
	// maxUsernameBytes bounds one listed user name.
	maxUsernameBytes = 128
	// maxAccountHistory bounds the accounts kept in the inventory that the
	// camera no longer lists (deleted ones, mostly).
	maxAccountHistory = 32
	// maxKeepReason bounds an exemption's reason.
	maxKeepReason = 200
)

// ONVIF user levels (tt:UserLevel).
const (
	LevelAdministrator = "Administrator"
	LevelOperator      = "Operator"
	LevelUser          = "User"
	LevelAnonymous     = "Anonymous"
	LevelExtended      = "Extended"
	// LevelUnknown stands for a level outside the ONVIF enumeration.
	LevelUnknown = "unknown"
)

// levelRank orders levels by what they may do; unknown ones rank highest.
func levelRank(l string) int {
	switch l {
	case LevelAnonymous:
		return 0
	case LevelUser:
		return 1
	case LevelOperator:
		return 2
	case LevelAdministrator:
		return 3
	}
	return 4 // Extended or unknown: assume the worst
}

// AccountState says what the appliance did about one camera account.
type AccountState string

// Account states.
const (
	AccountOwn       AccountState = "appliance" // the appliance's own account (generated password, sealed)
	AccountDeleted   AccountState = "deleted"   // deleted from the camera
	AccountSecured   AccountState = "secured"   // the camera refused its deletion; it got a generated password nobody knows
	AccountKept      AccountState = "kept"      // left as is by an administrator's exemption
	AccountUnsecured AccountState = "unsecured" // neither deleted nor secured: an alarm is active
)

// Account is one account found on a camera and what the appliance did
// about it. It never holds a password.
type Account struct {
	Username string       `json:"username"`
	Level    string       `json:"level"`
	State    AccountState `json:"state"`
	// Present: the camera listed it at the last audit.
	Present   bool      `json:"present"`
	FirstSeen time.Time `json:"first_seen"`
	// Changed is when State was last set.
	Changed time.Time `json:"changed"`
	// Detail says why (a camera's refusal, clipped; the exemption's reason).
	Detail string `json:"detail,omitempty"`
}

// KeptAccount is an administrator's exemption of one account on one
// camera from the strict policy.
type KeptAccount struct {
	Username string `json:"username"`
	// Level is the highest level the account may have; a camera reporting
	// it higher voids the exemption (alarm, then the strict rule).
	Level  string    `json:"level"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	Since  time.Time `json:"since"`
}

// KeepRequest asks to exempt one account from the strict policy.
type KeepRequest struct {
	Username string `json:"username"`
	// Level is the account's highest allowed level (default: the level the
	// camera lists now, else User). Administrator is refused.
	Level  string `json:"level,omitempty"`
	Reason string `json:"reason"`
}

// AccountEvent is one audited account action. It never holds a password.
type AccountEvent struct {
	Time    time.Time `json:"time"`
	Camera  string    `json:"camera"`
	Account string    `json:"account"`
	Level   string    `json:"level,omitempty"`
	// Action is delete, secure, appeared, level-raised, keep or enforce.
	Action string `json:"action"`
	// Result is ok or fail.
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
	// By is the administrator for keep and enforce; "appliance" otherwise.
	By string `json:"by"`
	// Cause is adoption, rotation, audit or the administrator's request.
	Cause string `json:"cause"`
}

// ErrPolicy: an account exemption the policy does not allow.
var ErrPolicy = errors.New("camera: not allowed by the account policy")

// actorKey carries the administrator's name in a request's context.
type actorKey struct{}

// WithActor returns ctx naming the administrator on whose behalf the
// manager acts (the web server sets it from the session); exemptions record
// and audit that name.
func WithActor(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, actorKey{}, name)
}

func actorFrom(ctx context.Context) string {
	if s, _ := ctx.Value(actorKey{}).(string); s != "" {
		return s
	}
	return "unknown"
}

// cameraUser is one entry of GetUsers.
type cameraUser struct {
	Username string
	Level    string
}

// parseUsers decodes a GetUsers answer: at most maxAccounts accounts, names
// of at most maxUsernameBytes valid UTF-8 bytes without control characters,
// duplicates dropped, levels outside ONVIF's enumeration as LevelUnknown.
func parseUsers(status int, b []byte) ([]cameraUser, error) {
	var out struct {
		Users []struct {
			Username string `xml:"Username"`
			Level    string `xml:"UserLevel"`
		} `xml:"GetUsersResponse>User"`
	}
	if err := decodeSOAP(status, b, &out); err != nil {
		return nil, err
	}
	if len(out.Users) > maxAccounts {
		return nil, fmt.Errorf("%w: %d accounts listed, at most %d handled", ErrTooLarge, len(out.Users), maxAccounts)
	}
	users := make([]cameraUser, 0, len(out.Users))
	for _, u := range out.Users {
		name := u.Username
		if name == "" || len(name) > maxUsernameBytes || !utf8.ValidString(name) ||
			strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, fmt.Errorf("%w: account name %q", ErrMalformed, clip(name, 64))
		}
		if slices.ContainsFunc(users, func(x cameraUser) bool { return x.Username == name }) {
			continue
		}
		level := strings.TrimSpace(u.Level)
		switch level {
		case LevelAdministrator, LevelOperator, LevelUser, LevelAnonymous, LevelExtended:
		default:
			level = LevelUnknown
		}
		users = append(users, cameraUser{Username: name, Level: level})
	}
	return users, nil
}

func getUsers(ctx context.Context, e *endpoint, cred credentials) ([]cameraUser, error) {
	status, body, err := e.exchange(ctx, "", cred, device.GetUsers{})
	if err != nil {
		return nil, fmt.Errorf("GetUsers: %w", err)
	}
	users, err := parseUsers(status, body)
	if err != nil {
		return nil, fmt.Errorf("GetUsers: %w", authErr(err))
	}
	return users, nil
}

func deleteUser(ctx context.Context, e *endpoint, cred credentials, name string) error {
	if err := e.call(ctx, "", cred, device.DeleteUsers{Username: xsd.String(name)}, nil); err != nil {
		return fmt.Errorf("DeleteUsers: %w", err)
	}
	return nil
}

func setUser(ctx context.Context, e *endpoint, cred credentials, name, password, level string) error {
	req := device.SetUser{User: onvif.User{Username: name, Password: password, UserLevel: onvif.UserLevel(level)}}
	if err := e.call(ctx, "", cred, req, nil); err != nil {
		return fmt.Errorf("SetUser: %w", err)
	}
	return nil
}

// AccountPolicy describes the camera's account policy in words.
func (c Camera) AccountPolicy() string {
	if len(c.KeepAccounts) == 0 {
		return "strict: every account but the appliance's is deleted, or given a password nobody knows"
	}
	names := make([]string, 0, len(c.KeepAccounts))
	for _, k := range c.KeepAccounts {
		names = append(names, fmt.Sprintf("%s (%s, by %s: %s)", k.Username, k.Level, k.By, k.Reason))
	}
	return "strict, except accounts kept by an administrator: " + strings.Join(names, "; ")
}

// AuditAccounts lists one camera's accounts now and applies the account
// policy. A failed audit (the camera unreachable, its list refused) is
// returned, alarmed and marked in the inventory.
func (m *Manager) AuditAccounts(ctx context.Context, id string) error {
	done, err := m.claim(id, "accounts")
	if err != nil {
		return err
	}
	defer done()
	return m.auditAccountsClaimed(ctx, id, "audit")
}

func (m *Manager) auditAccountsClaimed(ctx context.Context, id, cause string) error {
	c, e, cred, err := m.session(id)
	if err != nil {
		return err
	}
	if c.Quarantined {
		return fmt.Errorf("audit accounts %s: %w", id, ErrQuarantined)
	}
	return m.secureAccounts(ctx, id, e, cred, cause)
}

// accountPass is the work of one audit on one account.
type accountPass struct {
	user   cameraUser
	state  AccountState
	detail string
}

// secureAccounts lists the camera's accounts with cred (the appliance's
// own, current) and applies the policy, each request bounded by
// cfg.Timeout. It returns an error only when the accounts could not be
// listed.
func (m *Manager) secureAccounts(ctx context.Context, id string, e *endpoint, cred credentials, cause string) error {
	users, err := m.listUsers(ctx, e, cred)
	if err != nil {
		m.accountAuditFailed(id, err)
		return fmt.Errorf("audit accounts %s: %w", id, err)
	}
	m.mu.Lock()
	cam := m.cams[id]
	if cam == nil {
		m.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	audited := !cam.AccountsAudited.IsZero()
	known := map[string]Account{}
	for _, a := range cam.Accounts {
		known[a.Username] = a
	}
	keep := map[string]KeptAccount{}
	for _, k := range cam.KeepAccounts {
		keep[k.Username] = k
	}
	m.mu.Unlock()

	now := m.cfg.Now()
	var passes []accountPass
	var deleted []string
	for _, u := range users {
		p := accountPass{user: u}
		prev, seen := known[u.Username]
		switch k, kept := keep[u.Username]; {
		case u.Username == cred.Username:
			p.state = AccountOwn
		case kept && levelRank(u.Level) <= levelRank(k.Level):
			p.state, p.detail = AccountKept, "kept by "+k.By+": "+k.Reason
		case cause == "audit" && seen && prev.Present && prev.State == AccountSecured && prev.Level == u.Level:
			// Secured before and unchanged: a periodic audit leaves it; a
			// rotation gives it a new password again.
			p.state, p.detail = AccountSecured, prev.Detail
		default:
			if kept {
				m.raise(Alarm{Camera: id, Kind: AlarmAccountAppeared, Active: true,
					Detail: fmt.Sprintf("kept account %s now has level %s (kept as %s): the exemption no longer covers it; removing it", clip(u.Username, 64), u.Level, k.Level)})
				m.auditEvent(AccountEvent{Camera: id, Account: u.Username, Level: u.Level, Action: "level-raised", Result: "ok", Cause: cause,
					Detail: "kept as " + k.Level})
			} else if audited && (!seen || !prev.Present) {
				m.raise(Alarm{Camera: id, Kind: AlarmAccountAppeared, Active: true,
					Detail: fmt.Sprintf("account %s (%s) appeared on the camera since the last audit; removing it", clip(u.Username, 64), u.Level)})
				m.auditEvent(AccountEvent{Camera: id, Account: u.Username, Level: u.Level, Action: "appeared", Result: "ok", Cause: cause})
			}
			octx, cancel := m.opCtx(ctx)
			err := deleteUser(octx, e, cred, u.Username)
			cancel()
			if err != nil {
				p.state, p.detail = m.secureOne(ctx, id, e, cred, u, cause, err)
			} else {
				p.state = AccountDeleted
				deleted = append(deleted, u.Username)
			}
		}
		passes = append(passes, p)
	}
	// A deletion counts once the camera no longer lists the account.
	if len(deleted) > 0 {
		after, err := m.listUsers(ctx, e, cred)
		for i := range passes {
			p := &passes[i]
			if p.state != AccountDeleted {
				continue
			}
			switch {
			case err != nil:
				p.state, p.detail = AccountUnsecured, "deletion not confirmed: "+err.Error()
				m.auditEvent(AccountEvent{Camera: id, Account: p.user.Username, Level: p.user.Level, Action: "delete", Result: "fail", Cause: cause, Detail: p.detail})
			case slices.ContainsFunc(after, func(x cameraUser) bool { return x.Username == p.user.Username }):
				p.state, p.detail = m.secureOne(ctx, id, e, cred, p.user, cause, errors.New("DeleteUsers answered but the camera still lists the account"))
			default:
				m.auditEvent(AccountEvent{Camera: id, Account: p.user.Username, Level: p.user.Level, Action: "delete", Result: "ok", Cause: cause})
			}
		}
	}
	m.recordAccounts(id, passes, now)
	return nil
}

// secureOne sets a generated password on an account whose deletion failed
// (delErr), proves it where the level allows a login, and forgets it.
func (m *Manager) secureOne(ctx context.Context, id string, e *endpoint, cred credentials, u cameraUser, cause string, delErr error) (AccountState, string) {
	why := "deletion refused: " + clip(delErr.Error(), 160)
	fail := func(err error) (AccountState, string) {
		detail := why + "; new password refused: " + clip(err.Error(), 160)
		m.auditEvent(AccountEvent{Camera: id, Account: u.Username, Level: u.Level, Action: "secure", Result: "fail", Cause: cause, Detail: detail})
		return AccountUnsecured, detail
	}
	pw, err := newPassword(m.cfg.Rand, m.cfg.PasswordLength)
	if err != nil {
		return fail(err)
	}
	level := u.Level
	if level == LevelUnknown {
		level = LevelUser // a level the camera did not name: set the least that logs in
	}
	octx, cancel := m.opCtx(ctx)
	err = setUser(octx, e, cred, u.Username, pw, level)
	cancel()
	if err != nil {
		return fail(err)
	}
	detail := why + "; given a generated password nobody knows"
	if u.Level != LevelAnonymous {
		// Proven like the appliance's own: the new password logs in.
		octx, cancel := m.opCtx(ctx)
		_, err := getDeviceInfo(octx, e, credentials{Username: u.Username, Password: pw})
		cancel()
		if err != nil {
			return fail(fmt.Errorf("SetUser answered but the new password does not log in: %w", err))
		}
	} else {
		detail += " (an Anonymous account cannot log in to prove it)"
	}
	m.auditEvent(AccountEvent{Camera: id, Account: u.Username, Level: u.Level, Action: "secure", Result: "ok", Cause: cause, Detail: why})
	return AccountSecured, detail
}

// listUsers is getUsers bounded by cfg.Timeout.
func (m *Manager) listUsers(ctx context.Context, e *endpoint, cred credentials) ([]cameraUser, error) {
	octx, cancel := m.opCtx(ctx)
	defer cancel()
	return getUsers(octx, e, cred)
}

// recordAccounts writes an audit's outcome into the inventory, raises or
// clears the unsecured-account alarm and saves the registry.
func (m *Manager) recordAccounts(id string, passes []accountPass, now time.Time) {
	m.mu.Lock()
	cam := m.cams[id]
	if cam == nil {
		m.mu.Unlock()
		return
	}
	old := map[string]Account{}
	for _, a := range cam.Accounts {
		old[a.Username] = a
	}
	var list, gone []Account
	var unsecured []string
	for _, p := range passes {
		a, ok := old[p.user.Username]
		if !ok {
			a = Account{Username: p.user.Username, FirstSeen: now}
		}
		delete(old, p.user.Username)
		if a.State != p.state || a.Detail != p.detail {
			a.Changed = now
		}
		a.Level, a.State, a.Detail = p.user.Level, p.state, p.detail
		a.Present = p.state != AccountDeleted
		if p.state == AccountUnsecured {
			unsecured = append(unsecured, "account "+clip(p.user.Username, 64)+" could not be secured")
		}
		list = append(list, a)
	}
	for _, a := range old { // no longer listed by the camera
		if a.Present {
			a.Present, a.Changed = false, now
			if a.State != AccountDeleted {
				a.Detail = strings.TrimSpace(a.Detail + " (no longer on the camera)")
			}
		}
		gone = append(gone, a)
	}
	slices.SortFunc(gone, func(a, b Account) int { return b.Changed.Compare(a.Changed) })
	if len(gone) > maxAccountHistory {
		gone = gone[:maxAccountHistory]
	}
	cam.Accounts = append(list, gone...)
	cam.AccountsAudited = now
	prevWarning := cam.AccountWarning
	cam.AccountWarning = strings.Join(unsecured, "; ")
	warning := cam.AccountWarning
	m.mu.Unlock()
	if err := m.save(); err != nil {
		m.log.Error("save account audit", "camera", id, "err", err)
	}
	switch {
	case warning != "" && warning != prevWarning:
		m.raise(Alarm{Camera: id, Kind: AlarmAccountUnsecured, Active: true, Detail: warning})
	case warning == "" && prevWarning != "":
		m.raise(Alarm{Camera: id, Kind: AlarmAccountUnsecured, Active: false, Detail: "every account on the camera is secured"})
	}
}

// accountAuditFailed marks the camera when its accounts could not be listed.
func (m *Manager) accountAuditFailed(id string, err error) {
	msg := "accounts could not be audited: " + clip(err.Error(), 200)
	m.mu.Lock()
	cam := m.cams[id]
	changed := cam != nil && cam.AccountWarning != msg
	if changed {
		cam.AccountWarning = msg
	}
	m.mu.Unlock()
	if !changed {
		return
	}
	if err := m.save(); err != nil {
		m.log.Error("save account audit", "camera", id, "err", err)
	}
	m.raise(Alarm{Camera: id, Kind: AlarmAccountUnsecured, Active: true, Detail: msg})
}

// auditEvent stamps and hands an account action to the audit sink and the log.
func (m *Manager) auditEvent(ev AccountEvent) {
	if ev.Time.IsZero() {
		ev.Time = m.cfg.Now()
	}
	if ev.By == "" {
		ev.By = "appliance"
	}
	ev.Account = clip(ev.Account, maxUsernameBytes)
	m.log.Info("camera account", "camera", ev.Camera, "account", clip(ev.Account, 64), "action", ev.Action, "result", ev.Result,
		"cause", ev.Cause, "by", ev.By, "detail", ev.Detail)
	if m.cfg.Audit != nil {
		m.cfg.Audit(ev)
	}
}

// checkKeep validates an exemption request against what the camera lists.
func checkKeep(k KeepRequest, own string, listed []Account) (KeptAccount, error) {
	k.Username = strings.TrimSpace(k.Username)
	k.Reason = strings.TrimSpace(k.Reason)
	switch {
	case k.Username == "" || len(k.Username) > maxUsernameBytes:
		return KeptAccount{}, fmt.Errorf("%w: an account name is needed", errBadRequest)
	case k.Username == own:
		return KeptAccount{}, fmt.Errorf("%w: %s is the appliance's own account", errBadRequest, clip(k.Username, 64))
	case k.Reason == "" || len(k.Reason) > maxKeepReason:
		return KeptAccount{}, fmt.Errorf("%w: say why the account is kept (at most %d characters)", errBadRequest, maxKeepReason)
	}
	level := k.Level
	if level == "" {
		level = LevelUser
		for _, a := range listed {
			if a.Username == k.Username && a.Present {
				level = a.Level
			}
		}
	}
	switch level {
	case LevelOperator, LevelUser, LevelAnonymous:
	case LevelAdministrator, LevelExtended, LevelUnknown:
		return KeptAccount{}, fmt.Errorf("%w: an account of level %s cannot be kept: it could replace the appliance's own password", ErrPolicy, level)
	default:
		return KeptAccount{}, fmt.Errorf("%w: level %q", errBadRequest, clip(level, 32))
	}
	return KeptAccount{Username: k.Username, Level: level, Reason: clip(k.Reason, maxKeepReason)}, nil
}

// KeepAccount exempts one account of one camera from the strict policy: an
// administrator's explicit choice (named by [WithActor]), with a reason,
// audited. An Administrator account cannot be kept.
func (m *Manager) KeepAccount(ctx context.Context, id string, k KeepRequest) (Camera, error) {
	done, err := m.claim(id, "accounts")
	if err != nil {
		return Camera{}, err
	}
	defer done()
	m.mu.Lock()
	cam, own := m.cams[id], m.sec[id].Current.Username
	kept, err := checkKeep(k, own, cam.Accounts)
	if err != nil {
		m.mu.Unlock()
		return Camera{}, err
	}
	kept.By, kept.Since = actorFrom(ctx), m.cfg.Now()
	cam.KeepAccounts = slices.DeleteFunc(cam.KeepAccounts, func(x KeptAccount) bool { return x.Username == kept.Username })
	cam.KeepAccounts = append(cam.KeepAccounts, kept)
	out := *cam
	m.mu.Unlock()
	if err := m.save(); err != nil {
		return Camera{}, fmt.Errorf("keep account on %s: %w", id, err)
	}
	m.auditEvent(AccountEvent{Camera: id, Account: kept.Username, Level: kept.Level, Action: "keep", Result: "ok",
		By: kept.By, Cause: "administrator", Detail: kept.Reason})
	return out, nil
}

// EnforceAccount withdraws an exemption: the account falls under the strict
// policy again and the camera is audited at once (the account is deleted or
// secured). The withdrawal is audited.
func (m *Manager) EnforceAccount(ctx context.Context, id, username string) (Camera, error) {
	done, err := m.claim(id, "accounts")
	if err != nil {
		return Camera{}, err
	}
	defer done()
	m.mu.Lock()
	cam := m.cams[id]
	n := len(cam.KeepAccounts)
	cam.KeepAccounts = slices.DeleteFunc(cam.KeepAccounts, func(x KeptAccount) bool { return x.Username == username })
	removed := len(cam.KeepAccounts) != n
	m.mu.Unlock()
	if !removed {
		return Camera{}, fmt.Errorf("%w: account %s of %s is not kept", ErrNotFound, clip(username, 64), id)
	}
	if err := m.save(); err != nil {
		return Camera{}, fmt.Errorf("enforce account on %s: %w", id, err)
	}
	m.auditEvent(AccountEvent{Camera: id, Account: username, Action: "enforce", Result: "ok", By: actorFrom(ctx), Cause: "administrator"})
	aerr := m.auditAccountsClaimed(ctx, id, "administrator")
	out, err := m.Camera(id)
	return out, errors.Join(aerr, err)
}

// auditAccountsDue audits every camera whose accounts were last listed
// longer ago than AccountAuditEvery.
func (m *Manager) auditAccountsDue(ctx context.Context) {
	now := m.cfg.Now()
	due := m.ids(func(c *Camera) bool {
		return !c.Quarantined && now.Sub(c.AccountsAudited) >= m.cfg.AccountAuditEvery
	})
	m.parallel(ctx, due, func(ctx context.Context, id string) error {
		if err := m.AuditAccounts(ctx, id); err != nil && !errors.Is(err, ErrBusy) {
			m.log.Warn("camera account audit failed", "camera", id, "err", err)
		}
		return nil
	})
}
