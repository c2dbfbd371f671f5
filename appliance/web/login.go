package web

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"

	"github.com/edgenvr/nvr/appliance/authz"
)

type loginData struct {
	Step     string
	Name     string
	WebAuthn bool
	Secret   string
	QR       interface{}
	Recovery []string
	SSO      bool // offer Kerberos single sign-on
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.az.NeedsSetup() {
		http.Redirect(w, r, "/setup", http.StatusSeeOther)
		return
	}
	s.render(w, r, nil, 200, "login.html", page{Title: "Sign in", CSRF: s.preCSRF(w, r), Data: loginData{Step: "password", SSO: s.az.NegotiateEnabled()}})
}

func (s *Server) loginPost(w http.ResponseWriter, r *http.Request) {
	f, err := form(r)
	if err != nil || !checkPreCSRF(r, f) {
		s.fail(w, r, nil, http.StatusForbidden, "the form is stale: reload the page")
		return
	}
	st, err := s.az.Login(r.Context(), f.Get("name"), f.Get("password"), source(r))
	countLogin(&s.stats.logins, err)
	if err != nil {
		code, msg := errorFor(err)
		retry(w, err)
		s.render(w, r, nil, code, "login.html", page{Title: "Sign in", CSRF: s.preCSRF(w, r), Error: msg, Data: loginData{Step: "password", Name: f.Get("name")}})
		return
	}
	setCookie(w, loginCookie, st.Pending, 600)
	http.Redirect(w, r, "/login/step", http.StatusSeeOther)
}

// loginStep shows the page of the current step of an unfinished login.
func (s *Server) loginStep(w http.ResponseWriter, r *http.Request) {
	st, err := s.az.PendingState(cookieValue(r, loginCookie))
	if err != nil {
		clearCookie(w, loginCookie)
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	s.showStep(w, r, 200, st, "")
}

func (s *Server) showStep(w http.ResponseWriter, r *http.Request, code int, st authz.LoginState, msg string) {
	d := loginData{Step: string(st.Step), Name: st.User, WebAuthn: st.WebAuthn}
	if st.Enrol != nil {
		d.Secret, d.QR = st.Enrol.Secret, pngURL(st.Enrol.QRPNG)
	}
	title := map[authz.Step]string{authz.StepSecondFactor: "Two-step verification", authz.StepEnrol: "Set up two-step verification",
		authz.StepApproval: "Approval needed"}[st.Step]
	s.render(w, r, nil, code, "login.html", page{Title: title, CSRF: s.preCSRF(w, r), Error: msg, Data: d})
}

// done sets the session cookie (a new token: the login cookie is dropped) and moves on.
func (s *Server) done(w http.ResponseWriter, r *http.Request, st authz.LoginState) {
	clearCookie(w, loginCookie)
	setCookie(w, sessionCookie, st.Session.Token, 0)
	if len(st.RecoveryCodes) > 0 {
		c := &caller{sub: authz.Subject{User: st.User, Via: "session", Ref: st.Session.Session.ID}, session: &st.Session.Session}
		s.render(w, r, c, 200, "recovery.html", page{Title: "Recovery codes", Data: st.RecoveryCodes})
		return
	}
	http.Redirect(w, r, "/dashboard", http.StatusSeeOther)
}

func (s *Server) pendingForm(w http.ResponseWriter, r *http.Request) (string, map[string][]string, bool) {
	f, err := form(r)
	if err != nil || !checkPreCSRF(r, f) {
		s.fail(w, r, nil, http.StatusForbidden, "the form is stale: reload the page")
		return "", nil, false
	}
	p := cookieValue(r, loginCookie)
	if p == "" {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return "", nil, false
	}
	return p, f, true
}

func (s *Server) stepFailed(w http.ResponseWriter, r *http.Request, pending string, err error) {
	st, perr := s.az.PendingState(pending)
	if perr != nil {
		clearCookie(w, loginCookie)
		code, msg := errorFor(err)
		retry(w, err)
		s.render(w, r, nil, code, "login.html", page{Title: "Sign in", CSRF: s.preCSRF(w, r), Error: msg + "; sign in again", Data: loginData{Step: "password"}})
		return
	}
	code, msg := errorFor(err)
	retry(w, err)
	s.showStep(w, r, code, st, msg)
}

func (s *Server) loginCode(w http.ResponseWriter, r *http.Request) {
	p, f, ok := s.pendingForm(w, r)
	if !ok {
		return
	}
	st, err := s.az.LoginCode(r.Context(), p, firstOf(f["code"]), source(r))
	countLogin(&s.stats.secondFactor, err)
	if err != nil {
		s.stepFailed(w, r, p, err)
		return
	}
	s.advance(w, r, st)
}

func (s *Server) advance(w http.ResponseWriter, r *http.Request, st authz.LoginState) {
	if st.Step == authz.StepDone {
		s.done(w, r, st)
		return
	}
	if len(st.RecoveryCodes) > 0 {
		// Enrolment finished but approval is next: show the codes on the approval page.
		s.render(w, r, nil, 200, "login.html", page{Title: "Approval needed", CSRF: s.preCSRF(w, r),
			Data: loginData{Step: string(st.Step), Name: st.User, Recovery: st.RecoveryCodes}})
		return
	}
	http.Redirect(w, r, "/login/step", http.StatusSeeOther)
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (s *Server) loginApprove(w http.ResponseWriter, r *http.Request) {
	p, f, ok := s.pendingForm(w, r)
	if !ok {
		return
	}
	st, err := s.az.LoginApprove(r.Context(), p, firstOf(f["approver"]), firstOf(f["approver_password"]), firstOf(f["approver_code"]), source(r))
	if err != nil {
		s.stepFailed(w, r, p, err)
		return
	}
	s.done(w, r, st)
}

func (s *Server) loginCancel(w http.ResponseWriter, r *http.Request) {
	p, _, ok := s.pendingForm(w, r)
	if !ok {
		return
	}
	s.az.CancelLogin(p)
	clearCookie(w, loginCookie)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// WebAuthn ceremonies at login are JSON over fetch, with the pre-session CSRF token in a header.
func (s *Server) jsonPending(w http.ResponseWriter, r *http.Request) (string, bool) {
	c := cookieValue(r, preCSRFCookie)
	if !sameOrigin(r) || c == "" || r.Header.Get("X-CSRF-Token") != c {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "stale page: reload"})
		return "", false
	}
	p := cookieValue(r, loginCookie)
	if p == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "sign in again"})
		return "", false
	}
	return p, true
}

func (s *Server) loginWebAuthnBegin(w http.ResponseWriter, r *http.Request) {
	p, ok := s.jsonPending(w, r)
	if !ok {
		return
	}
	opts, err := s.az.LoginWebAuthnBegin(p)
	if err != nil {
		code, msg := errorFor(err)
		if errors.Is(err, authz.ErrNoWebAuthn) {
			msg = err.Error()
		}
		writeJSON(w, code, map[string]string{"error": msg})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(opts)
}

func (s *Server) loginWebAuthnFinish(w http.ResponseWriter, r *http.Request) {
	p, ok := s.jsonPending(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, authz.MaxWebAuthnBody+1))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unreadable body"})
		return
	}
	st, err := s.az.LoginWebAuthnFinish(r.Context(), p, body, source(r))
	if err != nil {
		code, msg := errorFor(err)
		retry(w, err)
		writeJSON(w, code, map[string]string{"error": msg})
		return
	}
	if st.Step == authz.StepDone {
		clearCookie(w, loginCookie)
		setCookie(w, sessionCookie, st.Session.Token, 0)
		writeJSON(w, 200, map[string]string{"next": "/dashboard"})
		return
	}
	writeJSON(w, 200, map[string]string{"next": "/login/step"})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	s.az.Logout(c.token, source(r))
	clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
