package web

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

// BridgeCredentials connects the bridge page (/bridge) and API (/api/v1/bridge) to the RTSP(S) bridge's
// credential store; the appliance fills it (appliance/bridgewire.go). Nil means the bridge is off. It takes
// no decision: the handlers here decide (authz) and audit, then call it.
type BridgeCredentials interface {
	// Issue creates or rotates the bridge credential of account u and returns it, to be shown once. An
	// account that may not hold one gets an error wrapping [ErrBridgeRefused], whose message says why.
	Issue(u authz.User) (secret string, c BridgeCredential, err error)
	// Revoke deletes user's credential ([ErrNoBridgeCredential] if there is none).
	Revoke(user string) error
	// Get returns user's credential, without its secret.
	Get(user string) (BridgeCredential, bool)
	// List returns every issued credential, without secrets, by user.
	List() []BridgeCredential
	// Listeners returns the bridge's bound listeners (none until it listens).
	Listeners() []BridgeListener
}

// BridgeCredential describes a bridge credential without its secret.
type BridgeCredential struct {
	User   string    `json:"user"`
	Serial uint64    `json:"serial"`
	Issued time.Time `json:"issued"`
	// State is empty while the credential is in order, else what is wrong with it: the account is deleted,
	// disabled or may not hold one ("account deleted", ...: the bridge refuses its next request), or no
	// role of the account grants the bridge right any more (the bridge still opens the account's cameras
	// with it until it is revoked; it cannot be renewed).
	State string `json:"state,omitempty"`
}

// BridgeListener is one listener of the bridge: Scheme "rtsp" or "rtsps", Addr its bound host:port.
type BridgeListener struct {
	Scheme string `json:"scheme"`
	Addr   string `json:"addr"`
}

// Errors of a [BridgeCredentials] the handlers branch on.
var (
	ErrNoBridgeCredential = errors.New("no bridge credential")
	ErrBridgeRefused      = errors.New("bridge credential refused")
)

// Audit actions of bridge credentials (the bridge package writes the same ones for its own calls).
const (
	auditBridgeIssue  = "bridge.credential.issue"
	auditBridgeRevoke = "bridge.credential.revoke"
)

// bridgeError is a refusal with the status and message to answer (no secret in it).
type bridgeError struct {
	code int
	msg  string
}

func (e *bridgeError) Error() string { return e.msg }

// mayHoldBridge decides whether holder may hold a bridge credential: one decision on the bridge right
// (authz.UseBridge), audited. It opens no camera: the bridge decides camera.live or camera.playback for
// every stream it serves.
func (s *Server) mayHoldBridge(r *http.Request, holder authz.Subject) (bool, string) {
	d := s.az.Decide(authz.Request{Subject: holder, Source: source(r), Action: authz.UseBridge})
	if d.Allow {
		return true, ""
	}
	return false, d.Reason + " (the right to take video out over the RTSP bridge)"
}

// issueBridge issues (or rotates) the bridge credential of name, or of the caller when name is empty or
// theirs. The holder needs the bridge right (authz.UseBridge): a caller issues their own if their roles
// grant it; an administrator (the users right) issues one for a service account whose roles grant it.
// Nobody issues one for another person: a credential that acts as a person is only ever seen by that
// person. Every outcome is audited.
func (s *Server) issueBridge(r *http.Request, c *caller, name string) (string, BridgeCredential, error) {
	src := source(r)
	self := name == "" || name == c.sub.User
	if self {
		name = c.sub.User
		if ok, why := s.mayHoldBridge(r, c.sub); !ok {
			return "", BridgeCredential{}, &bridgeError{http.StatusForbidden, "denied: " + why}
		}
	} else if d := s.az.Decide(authz.Request{Subject: c.sub, Source: src, Action: authz.ManageUsers}); !d.Allow {
		return "", BridgeCredential{}, &bridgeError{http.StatusForbidden, "denied: " + d.Reason}
	}
	u, err := s.az.User(name)
	if err != nil {
		return "", BridgeCredential{}, &bridgeError{http.StatusNotFound, "no such account"}
	}
	if !self && !u.Service {
		s.az.Event(c.sub, auditBridgeIssue, "user/"+name, "refused", "another person's credential", src)
		return "", BridgeCredential{}, &bridgeError{http.StatusForbidden,
			"a person issues their own bridge credential, signed in: nobody else may see it"}
	}
	if !self {
		// The service account holds it: its roles must grant the right ("token" is a service account's
		// only door).
		if ok, why := s.mayHoldBridge(r, authz.Subject{User: name, Via: "token"}); !ok {
			return "", BridgeCredential{}, &bridgeError{http.StatusForbidden, "denied for " + name + ": " + why}
		}
	}
	secret, info, err := s.cfg.Bridge.Issue(u)
	switch {
	case errors.Is(err, ErrBridgeRefused):
		s.az.Event(c.sub, auditBridgeIssue, "user/"+name, "refused", err.Error(), src)
		return "", BridgeCredential{}, &bridgeError{http.StatusForbidden, err.Error()}
	case err != nil:
		s.log.Error("web: bridge credential", "user", name, "err", err)
		s.az.Event(c.sub, auditBridgeIssue, "user/"+name, "fail", "the credential store failed", src)
		return "", BridgeCredential{}, &bridgeError{http.StatusInternalServerError, "the credential could not be issued"}
	}
	s.az.Event(c.sub, auditBridgeIssue, "user/"+name, "ok", fmt.Sprintf("serial %d", info.Serial), src)
	return secret, info, nil
}

// revokeBridge revokes the bridge credential of name (the caller's own when empty). Revoking one's own
// needs no right (it only takes access away); anyone else's needs the users right. Audited.
func (s *Server) revokeBridge(r *http.Request, c *caller, name string) error {
	src := source(r)
	if name == "" {
		name = c.sub.User
	}
	if name != c.sub.User {
		if d := s.az.Decide(authz.Request{Subject: c.sub, Source: src, Action: authz.ManageUsers}); !d.Allow {
			return &bridgeError{http.StatusForbidden, "denied: " + d.Reason}
		}
	}
	err := s.cfg.Bridge.Revoke(name)
	switch {
	case errors.Is(err, ErrNoBridgeCredential):
		return &bridgeError{http.StatusNotFound, "no bridge credential for " + name}
	case err != nil:
		s.log.Error("web: revoke bridge credential", "user", name, "err", err)
		s.az.Event(c.sub, auditBridgeRevoke, "user/"+name, "fail", "the credential store failed", src)
		return &bridgeError{http.StatusInternalServerError, "the credential could not be revoked"}
	}
	s.az.Event(c.sub, auditBridgeRevoke, "user/"+name, "ok", "", src)
	return nil
}

// bridgeAccountGone revokes the bridge credential of an account just deleted or disabled on the users
// page (the bridge refuses such accounts anyway; this also forgets the credential, so enabling the
// account again does not bring it back).
func (s *Server) bridgeAccountGone(r *http.Request, c *caller, name, why string) {
	if s.cfg.Bridge == nil {
		return
	}
	if _, ok := s.cfg.Bridge.Get(name); !ok {
		return
	}
	if err := s.cfg.Bridge.Revoke(name); err != nil && !errors.Is(err, ErrNoBridgeCredential) {
		s.log.Error("web: revoke bridge credential", "user", name, "err", err)
		s.az.Event(c.sub, auditBridgeRevoke, "user/"+name, "fail", why, source(r))
		return
	}
	s.az.Event(c.sub, auditBridgeRevoke, "user/"+name, "ok", why, source(r))
}

// listBridge returns every credential if the caller holds the users right (decided and audited only when
// the navigation says they might: a viewer's page views do not fill the audit log with refusals).
func (s *Server) listBridge(r *http.Request, c *caller) ([]BridgeCredential, bool) {
	if !s.az.Visible(c.sub, authz.ManageUsers) {
		return nil, false
	}
	if d := s.az.Decide(authz.Request{Subject: c.sub, Source: source(r), Action: authz.ManageUsers}); !d.Allow {
		return nil, false
	}
	return s.cfg.Bridge.List(), true
}

// bridgeURL is a listener's base URL as a client reaching this request's host would use it.
func bridgeURL(l BridgeListener, r *http.Request) string {
	host, port, err := net.SplitHostPort(l.Addr)
	if err != nil {
		return l.Scheme + "://" + l.Addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
	}
	return l.Scheme + "://" + net.JoinHostPort(host, port)
}

type bridgeData struct {
	User      string
	MayIssue  bool // the caller's roles grant the bridge right (display only: issuing decides again)
	Mine      *BridgeCredential
	Secret    string // the credential just issued, shown once
	For       string // whose credential Secret is
	URLs      []string
	Admin     bool
	All       []BridgeCredential
	ReplayNow string
}

func (s *Server) bridgeShow(w http.ResponseWriter, r *http.Request, c *caller, code int, errMsg, msg, secret, forUser string) {
	d := bridgeData{User: c.sub.User, Secret: secret, For: forUser, MayIssue: s.az.Visible(c.sub, authz.UseBridge),
		ReplayNow: s.cfg.Now().Add(-10 * time.Minute).UTC().Format("20060102T150405Z")}
	if m, ok := s.cfg.Bridge.Get(c.sub.User); ok {
		d.Mine = &m
	}
	for _, l := range s.cfg.Bridge.Listeners() {
		d.URLs = append(d.URLs, bridgeURL(l, r))
	}
	d.All, d.Admin = s.listBridge(r, c)
	s.render(w, r, c, code, "bridge.html", page{Title: "RTSP bridge", Error: errMsg, Message: msg, Data: d})
}

func (s *Server) bridgePage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if s.cfg.Bridge == nil {
		s.fail(w, r, c, http.StatusServiceUnavailable, "the RTSP bridge is off on this appliance")
		return
	}
	s.bridgeShow(w, r, c, http.StatusOK, "", "", "", "")
}

// bridgePost issues or revokes a credential ("op" issue or revoke; "name" another account's, for an
// administrator). The new credential is in the answer's page only: never in a URL (no redirect), never
// logged, never stored.
func (s *Server) bridgePost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	if s.cfg.Bridge == nil {
		s.fail(w, r, c, http.StatusServiceUnavailable, "the RTSP bridge is off on this appliance")
		return
	}
	name := f.Get("name")
	var err error
	msg, secret, who := "", "", ""
	switch f.Get("op") {
	case "issue":
		var info BridgeCredential
		secret, info, err = s.issueBridge(r, c, name)
		who = info.User
		msg = "bridge credential issued: copy it now, it is shown only once"
	case "revoke":
		err = s.revokeBridge(r, c, name)
		msg = "bridge credential revoked"
	default:
		err = &bridgeError{http.StatusBadRequest, "unknown operation"}
	}
	if err != nil {
		code := http.StatusBadRequest
		var be *bridgeError
		if errors.As(err, &be) {
			code = be.code
		}
		s.bridgeShow(w, r, c, code, err.Error(), "", "", "")
		return
	}
	s.bridgeShow(w, r, c, http.StatusOK, "", msg, secret, who)
}

// ---- API ----

func (s *Server) bridgeAPIRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /bridge", s.with(s.bridgePage))
	m.HandleFunc("POST /bridge", s.with(s.bridgePost))
	m.HandleFunc("GET /api/v1/bridge", s.with(s.apiBridge))
	m.HandleFunc("POST /api/v1/bridge/credentials/{user}", s.with(s.apiBridgeIssue))
	m.HandleFunc("POST /api/v1/bridge/credentials/{user}/revoke", s.with(s.apiBridgeRevoke))
}

func (s *Server) apiBridgeOff(w http.ResponseWriter) bool {
	if s.cfg.Bridge == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the RTSP bridge is off on this appliance"})
		return true
	}
	return false
}

func apiBridgeError(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	var be *bridgeError
	if errors.As(err, &be) {
		code = be.code
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// apiBridge answers the bridge's URLs, the caller's credential (null if none) and, for an administrator,
// every credential.
func (s *Server) apiBridge(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if s.apiBridgeOff(w) {
		return
	}
	out := map[string]any{"user": c.sub.User, "urls": []string{}, "credential": nil}
	var urls []string
	for _, l := range s.cfg.Bridge.Listeners() {
		urls = append(urls, bridgeURL(l, r))
	}
	if urls != nil {
		out["urls"] = urls
	}
	if m, ok := s.cfg.Bridge.Get(c.sub.User); ok {
		out["credential"] = m
	}
	if all, ok := s.listBridge(r, c); ok {
		if all == nil {
			all = []BridgeCredential{}
		}
		out["credentials"] = all
	}
	writeJSON(w, http.StatusOK, out)
}

// apiBridgeIssue issues (or rotates) the credential of {user}: the caller's own, or a service account's for
// an administrator. The answer carries the credential, once.
func (s *Server) apiBridgeIssue(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if s.apiBridgeOff(w) {
		return
	}
	secret, info, err := s.issueBridge(r, c, r.PathValue("user"))
	if err != nil {
		apiBridgeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": info.User, "serial": info.Serial, "issued": info.Issued, "credential": secret})
}

func (s *Server) apiBridgeRevoke(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if s.apiBridgeOff(w) {
		return
	}
	if err := s.revokeBridge(r, c, r.PathValue("user")); err != nil {
		apiBridgeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"revoked": r.PathValue("user")})
}
