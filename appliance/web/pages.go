package web

import (
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

func (s *Server) routes() {
	m := http.NewServeMux()
	m.Handle("GET /static/", staticHandler())
	m.HandleFunc("GET /{$}", s.root)
	m.HandleFunc("GET /setup", s.setupPage)
	m.HandleFunc("POST /setup", s.setupPost)
	m.HandleFunc("POST /setup/confirm", s.setupConfirm)
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.loginPost)
	m.HandleFunc("GET /login/step", s.loginStep)
	m.HandleFunc("POST /login/code", s.loginCode)
	m.HandleFunc("POST /login/approve", s.loginApprove)
	m.HandleFunc("POST /login/cancel", s.loginCancel)
	m.HandleFunc("GET /login/negotiate", s.loginNegotiate)
	m.HandleFunc("POST /login/webauthn/begin", s.loginWebAuthnBegin)
	m.HandleFunc("POST /login/webauthn/finish", s.loginWebAuthnFinish)
	m.HandleFunc("POST /logout", s.with(s.logout))
	m.HandleFunc("GET /dashboard", s.with(s.dashboard))
	m.HandleFunc("GET /cameras/{camera}", s.with(s.cameraPage))
	m.HandleFunc("GET /api/v1/cameras/{camera}/live/stream", s.with(s.liveStream))
	m.HandleFunc("GET /api/v1/cameras/{camera}/playback", s.with(s.playbackStream))
	m.HandleFunc("GET /api/v1/cameras/{camera}/timeline", s.with(s.timeline))
	m.HandleFunc("GET /api/v1/metrics", s.with(s.metrics))
	m.HandleFunc("POST /cameras/{camera}/export", s.with(s.exportPost))
	m.HandleFunc("GET /export", s.with(s.exportPage))
	m.HandleFunc("POST /export", s.with(s.exportSetPost))
	m.HandleFunc("GET /approvals/{id}", s.with(s.approvalPage))
	m.HandleFunc("POST /approvals/{id}", s.with(s.approvalPost))
	m.HandleFunc("POST /approvals/{id}/download", s.with(s.approvalRun))
	m.HandleFunc("POST /cameras/{camera}/delete", s.with(s.deletePost))
	m.HandleFunc("GET /config", s.with(s.configPage))
	m.HandleFunc("GET /config/directory", s.with(s.directoryPage))
	m.HandleFunc("POST /config/directory", s.with(s.directoryPost))
	m.HandleFunc("POST /config/directory/test", s.with(s.directoryTest))
	m.HandleFunc("GET /users", s.with(s.usersPage))
	m.HandleFunc("POST /users", s.with(s.usersPost))
	m.HandleFunc("POST /roles", s.with(s.rolesPost))
	m.HandleFunc("GET /audit", s.with(s.auditPage))
	m.HandleFunc("GET /audit/export", s.with(s.auditExport))
	m.HandleFunc("GET /account", s.with(s.accountPage))
	m.HandleFunc("POST /account/webauthn/begin", s.with(s.webauthnRegisterBegin))
	m.HandleFunc("POST /account/webauthn/finish", s.with(s.webauthnRegisterFinish))
	s.cameraRoutes(m)
	s.apiRoutes(m)
	s.bridgeAPIRoutes(m)
	s.mux = m
}

// page is what every template receives.
type page struct {
	Title   string
	User    string
	CSRF    string
	Nav     map[string]bool
	Error   string
	Message string
	Data    any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, c *caller, code int, name string, p page) {
	if c != nil && c.session != nil {
		p.User, p.CSRF = c.session.User, c.session.CSRF
		p.Nav = map[string]bool{}
		// Navigation shows what the user may open; opening it is decided again (and audited) by the page.
		for _, a := range []authz.Action{authz.ManageUsers, authz.ManageCameras, authz.ReadAudit, authz.ViewConfig} {
			if s.az.Visible(c.sub, a) {
				p.Nav[string(a)] = true
			}
		}
		p.Nav["bridge"] = s.cfg.Bridge != nil
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.tmpl.ExecuteTemplate(w, name, p); err != nil {
		s.log.Error("web: render", "page", name, "err", err)
	}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, c *caller, code int, msg string) {
	if strings.HasPrefix(r.URL.Path, "/api/") || c != nil && c.session == nil {
		writeJSON(w, code, map[string]string{"error": msg})
		return
	}
	s.render(w, r, c, code, "error.html", page{Title: http.StatusText(code), Error: msg})
}

// with requires a signed-in caller and checks CSRF on state changes.
func (s *Server) with(h func(http.ResponseWriter, *http.Request, *caller, url.Values)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.authenticate(r)
		if !ok {
			if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			s.fail(w, r, nil, http.StatusUnauthorized, "sign in first")
			return
		}
		if c.session == nil && !strings.HasPrefix(r.URL.Path, "/api/") {
			s.fail(w, r, c, http.StatusForbidden, "API tokens are for /api/ only")
			return
		}
		var f url.Values
		if r.Method == http.MethodPost {
			var err error
			if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
				if f, err = form(r); err != nil {
					s.fail(w, r, c, http.StatusBadRequest, "malformed form")
					return
				}
			}
			if !c.checkCSRF(r, f) {
				s.fail(w, r, c, http.StatusForbidden, "the form is stale or came from another site: reload the page")
				return
			}
		}
		h(w, r, c, f)
	}
}

// decide asks authz; on denial it answers 403 with the reason.
func (s *Server) decide(w http.ResponseWriter, r *http.Request, c *caller, req authz.Request) (authz.Decision, bool) {
	req.Subject, req.Source = c.sub, source(r)
	d := s.az.Decide(req)
	if !d.Allow {
		s.fail(w, r, c, http.StatusForbidden, "denied: "+d.Reason)
		return d, false
	}
	return d, true
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.az.NeedsSetup():
		http.Redirect(w, r, "/setup", http.StatusSeeOther)
	default:
		if _, ok := s.authenticate(r); ok {
			http.Redirect(w, r, "/dashboard", http.StatusSeeOther)
			return
		}
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	}
}

// ---- setup ----

type setupData struct {
	Step     string
	Enrol    string
	Name     string
	Secret   string
	QR       template.URL
	Recovery []string
}

func (s *Server) setupPage(w http.ResponseWriter, r *http.Request) {
	if !s.az.NeedsSetup() {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	s.render(w, r, nil, 200, "setup.html", page{Title: "First setup", CSRF: s.preCSRF(w, r), Data: setupData{Step: "code"}})
}

func (s *Server) setupPost(w http.ResponseWriter, r *http.Request) {
	f, err := form(r)
	if err != nil || !checkPreCSRF(r, f) {
		s.fail(w, r, nil, http.StatusForbidden, "the form is stale: reload the page")
		return
	}
	csrf := s.preCSRF(w, r)
	again := func(code int, msg string) {
		s.render(w, r, nil, code, "setup.html", page{Title: "First setup", CSRF: csrf, Error: msg, Data: setupData{Step: "code", Name: f.Get("name")}})
	}
	if f.Get("password") != f.Get("password2") {
		again(400, "the two passwords differ")
		return
	}
	id, enr, err := s.az.SetupBegin(r.Context(), f.Get("code"), f.Get("name"), f.Get("password"), source(r))
	if err != nil {
		code, msg := errorFor(err)
		if errors.Is(err, authz.ErrSetupDone) {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		retry(w, err)
		again(code, msg)
		return
	}
	s.render(w, r, nil, 200, "setup.html", page{Title: "First setup: two-step verification", CSRF: csrf,
		Data: setupData{Step: "totp", Enrol: id, Name: f.Get("name"), Secret: enr.Secret, QR: pngURL(enr.QRPNG)}})
}

func (s *Server) setupConfirm(w http.ResponseWriter, r *http.Request) {
	f, err := form(r)
	if err != nil || !checkPreCSRF(r, f) {
		s.fail(w, r, nil, http.StatusForbidden, "the form is stale: reload the page")
		return
	}
	csrf := s.preCSRF(w, r)
	codes, err := s.az.SetupFinish(r.Context(), f.Get("enrol"), f.Get("totp"), source(r))
	if err != nil {
		name, enr, eerr := s.az.SetupEnrolment(f.Get("enrol"))
		if eerr != nil {
			s.render(w, r, nil, 400, "setup.html", page{Title: "First setup", CSRF: csrf, Error: "the setup expired: start again", Data: setupData{Step: "code"}})
			return
		}
		code, msg := errorFor(err)
		retry(w, err)
		s.render(w, r, nil, code, "setup.html", page{Title: "First setup: two-step verification", CSRF: csrf, Error: msg,
			Data: setupData{Step: "totp", Enrol: f.Get("enrol"), Name: name, Secret: enr.Secret, QR: pngURL(enr.QRPNG)}})
		return
	}
	s.render(w, r, nil, 200, "setup.html", page{Title: "Setup complete", Data: setupData{Step: "done", Recovery: codes}})
}

func pngURL(b []byte) template.URL {
	if len(b) == 0 {
		return ""
	}
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(b))
}

// errorFor maps authz errors to a status and a message without secrets.
func errorFor(err error) (int, string) {
	var te *authz.ThrottledError
	switch {
	case errors.As(err, &te):
		return http.StatusTooManyRequests, fmt.Sprintf("too many attempts: wait %s before trying again", te.RetryAfter.Round(time.Second))
	case errors.Is(err, authz.ErrBadCredentials):
		return http.StatusUnauthorized, authz.ErrBadCredentials.Error()
	case errors.Is(err, authz.ErrDirectoryUnavailable):
		return http.StatusServiceUnavailable, authz.ErrDirectoryUnavailable.Error()
	case errors.Is(err, authz.ErrWeakPassword):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, authz.ErrExpired):
		return http.StatusBadRequest, "this step expired: start again"
	case errors.Is(err, authz.ErrDenied):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, authz.ErrNotFound), errors.Is(err, authz.ErrExists), errors.Is(err, authz.ErrLastAdmin):
		return http.StatusBadRequest, err.Error()
	}
	return http.StatusBadRequest, "request refused"
}

func retry(w http.ResponseWriter, err error) {
	var te *authz.ThrottledError
	if errors.As(err, &te) {
		w.Header().Set("Retry-After", fmt.Sprint(int(te.RetryAfter.Seconds()+0.999)))
	}
}

type actOn struct {
	A  authz.Action
	On bool
}

type roleFormData struct {
	CSRF, Name, Cameras, Schedule, MaxAge string
	CamActs, SysActs                      []actOn
	DualExport, DualDelete                bool
}

// roleForm prepares a role (or nil for a new one) for the role form.
func roleForm(v any, csrf string, cam, sys []authz.Action) roleFormData {
	d := roleFormData{CSRF: csrf, MaxAge: "0"}
	r, _ := v.(authz.Role)
	d.Name, d.Schedule, d.DualExport, d.DualDelete = r.Name, r.Schedule.String(), r.DualExport, r.DualDelete
	if r.MaxRecordingAge > 0 {
		d.MaxAge = fmt.Sprintf("%g", r.MaxRecordingAge.Hours())
	}
	var cams []string
	granted := map[authz.Action]bool{}
	for c, acts := range r.Cameras {
		cams = append(cams, c)
		for _, a := range acts {
			granted[a] = true
		}
	}
	slices.Sort(cams)
	d.Cameras = strings.Join(cams, " ")
	for _, a := range cam {
		d.CamActs = append(d.CamActs, actOn{A: a, On: granted[a]})
	}
	for _, a := range sys {
		d.SysActs = append(d.SysActs, actOn{A: a, On: slices.Contains(r.System, a)})
	}
	return d
}

func hasRole(u authz.User, role string) bool { return slices.Contains(u.Roles, role) }
