package web

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/authz/directory"
)

// DirectoryAdmin is the directory login configuration the pages edit; *directory.Manager satisfies it.
type DirectoryAdmin interface {
	// Settings returns the settings without secrets.
	Settings() directory.Settings
	// Update validates, stores and applies new settings; empty secrets keep the stored ones. It returns a
	// description of the change for the audit log.
	Update(directory.Settings) (string, error)
	// TestLookup shows what a login of name would give, without a password.
	TestLookup(ctx context.Context, name string) (authz.DirectoryUser, error)
}

// loginNegotiate is Kerberos single sign-on (SPNEGO, RFC 4559): the browser's ticket replaces the password,
// the second factor and any approval follow. NTLM is never offered: the only challenge sent is
// "Negotiate", and NTLM tokens are refused.
func (s *Server) loginNegotiate(w http.ResponseWriter, r *http.Request) {
	if !s.az.NegotiateEnabled() {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	if !sameOrigin(r) {
		s.fail(w, r, nil, http.StatusForbidden, "single sign-on must start from this appliance's sign-in page")
		return
	}
	showLogin := func(code int, msg string) {
		s.render(w, r, nil, code, "login.html", page{Title: "Sign in", CSRF: s.preCSRF(w, r), Error: msg, Data: loginData{Step: "password", SSO: true}})
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		// The challenge. A browser with a ticket for HTTP/<this host> answers it; one without shows this page.
		w.Header().Set("WWW-Authenticate", "Negotiate")
		showLogin(http.StatusUnauthorized, "single sign-on needs a Kerberos ticket for this appliance (is it in the browser's trusted sites?): sign in with your user name and password")
		return
	}
	tok, err := directory.ParseNegotiateHeader(h)
	if err != nil {
		msg := "single sign-on failed: sign in with your user name and password"
		if errors.Is(err, directory.ErrNTLM) {
			msg = "NTLM is not accepted: single sign-on needs Kerberos; sign in with your user name and password"
		}
		s.az.Event(authz.Subject{Via: "login.negotiate"}, "login.negotiate", "account/unknown", "fail", "malformed authorization: "+err.Error(), source(r))
		showLogin(http.StatusUnauthorized, msg)
		return
	}
	st, err := s.az.LoginNegotiate(r.Context(), tok, source(r))
	if err != nil {
		code, msg := errorFor(err)
		retry(w, err)
		if errors.Is(err, authz.ErrBadCredentials) {
			msg = "the Kerberos ticket was not accepted: sign in with your user name and password"
		}
		showLogin(code, msg)
		return
	}
	setCookie(w, loginCookie, st.Pending, 600)
	http.Redirect(w, r, "/login/step", http.StatusSeeOther)
}

// directoryData is what directory.html shows.
type directoryData struct {
	S          directory.Settings
	HasPW      bool
	HasKeytab  bool
	Mappings   string
	DualGroups string
	KDCs       string
	CanEdit    bool
	Test       *authz.DirectoryUser
	TestName   string
	TestError  string
}

func (s *Server) directoryData(c *caller) directoryData {
	st := s.cfg.Directory.Settings()
	d := directoryData{S: st, HasPW: st.BindPassword != "", HasKeytab: len(st.Keytab) > 0, KDCs: strings.Join(st.KDCs, "\n"),
		DualGroups: strings.Join(st.DualAuthGroups, "\n"), CanEdit: s.az.Visible(c.sub, authz.ManageUsers)}
	var m []string
	for _, x := range st.Mappings {
		m = append(m, x.Group+" = "+x.Role)
	}
	d.Mappings = strings.Join(m, "\n")
	d.S.BindPassword, d.S.Keytab = "", nil
	return d
}

// directoryPage shows the directory login settings (never the bind password or keytab).
func (s *Server) directoryPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ViewConfig}); !ok {
		return
	}
	if s.cfg.Directory == nil {
		s.fail(w, r, c, http.StatusNotFound, "directory login is not available on this appliance")
		return
	}
	s.render(w, r, c, 200, "directory.html", page{Title: "Directory login", Data: s.directoryData(c)})
}

// lines splits a textarea into trimmed, non-empty lines.
func lines(v string) []string {
	var out []string
	for l := range strings.SplitSeq(v, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// directoryForm reads the settings form. Secrets left empty keep the stored ones.
func directoryForm(f url.Values) (directory.Settings, error) {
	st := directory.Settings{
		Enabled: f.Get("enabled") == "on", Kind: f.Get("kind"), URL: strings.TrimSpace(f.Get("url")),
		StartTLS: f.Get("start_tls") == "on", CACertPEM: f.Get("ca_cert_pem"), ServerName: strings.TrimSpace(f.Get("server_name")),
		AllowPlaintext: f.Get("allow_plaintext") == "on", BindDN: strings.TrimSpace(f.Get("bind_dn")), BindPassword: f.Get("bind_password"),
		BaseDN: strings.TrimSpace(f.Get("base_dn")), GroupBaseDN: strings.TrimSpace(f.Get("group_base_dn")),
		UserFilter: strings.TrimSpace(f.Get("user_filter")), NameAttribute: strings.TrimSpace(f.Get("name_attribute")),
		Nested: f.Get("nested") == "on", DisabledFilter: strings.TrimSpace(f.Get("disabled_filter")),
		DualAuthGroups: lines(f.Get("dual_auth_groups")), PasswordVia: f.Get("password_via"), Realm: strings.TrimSpace(f.Get("realm")),
		KDCs: lines(f.Get("kdcs")), ServicePrincipal: strings.TrimSpace(f.Get("service_principal")), SPNEGO: f.Get("spnego") == "on",
	}
	for _, l := range lines(f.Get("mappings")) {
		// The DN itself contains '=': the role is after the last one.
		i := strings.LastIndexByte(l, '=')
		if i <= 0 {
			return st, fmt.Errorf("mapping %q: write one group DN = role per line", l)
		}
		st.Mappings = append(st.Mappings, directory.Mapping{Group: strings.TrimSpace(l[:i]), Role: strings.TrimSpace(l[i+1:])})
	}
	if kt := strings.TrimSpace(f.Get("keytab_b64")); kt != "" {
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(kt), ""))
		if err != nil {
			return st, errors.New("the keytab must be the base64 of the keytab file (base64 -w0 http.keytab)")
		}
		st.Keytab = b
	}
	if t := strings.TrimSpace(f.Get("timeout")); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil {
			return st, errors.New("the timeout must be a duration such as 5s")
		}
		st.Timeout = d
	}
	return st, nil
}

// directoryPost saves new settings: changing who may sign in is user management.
func (s *Server) directoryPost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ManageUsers}); !ok {
		return
	}
	if s.cfg.Directory == nil {
		s.fail(w, r, c, http.StatusNotFound, "directory login is not available on this appliance")
		return
	}
	st, err := directoryForm(f)
	var desc string
	if err == nil {
		desc, err = s.cfg.Directory.Update(st)
	}
	if err != nil {
		s.az.Event(c.sub, "directory.config", "system/directory", "fail", err.Error(), source(r))
		s.render(w, r, c, http.StatusBadRequest, "directory.html", page{Title: "Directory login", Error: err.Error(), Data: s.directoryData(c)})
		return
	}
	s.az.Event(c.sub, "directory.config", "system/directory", "ok", desc, source(r))
	s.render(w, r, c, 200, "directory.html", page{Title: "Directory login", Message: "saved: " + desc, Data: s.directoryData(c)})
}

// directoryTest looks a user up with the saved settings and shows the groups and roles a login would give.
func (s *Server) directoryTest(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ManageUsers}); !ok {
		return
	}
	if s.cfg.Directory == nil {
		s.fail(w, r, c, http.StatusNotFound, "directory login is not available on this appliance")
		return
	}
	name := strings.TrimSpace(f.Get("name"))
	d := s.directoryData(c)
	d.TestName = name
	u, err := s.cfg.Directory.TestLookup(r.Context(), name)
	res, reason := "ok", ""
	if err != nil {
		d.TestError, res, reason = err.Error(), "fail", err.Error()
	} else {
		d.Test = &u
		reason = "groups " + strings.Join(u.Groups, "; ") + " give roles " + strings.Join(u.Roles, ",")
	}
	s.az.Event(c.sub, "directory.test", "directory/"+name, res, reason, source(r))
	s.render(w, r, c, 200, "directory.html", page{Title: "Directory login", Data: d})
}
