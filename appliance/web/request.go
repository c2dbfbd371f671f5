package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/edgenvr/nvr/appliance/authz"
)

// Cookie names. The __Host- prefix makes browsers insist on Secure, Path=/ and no Domain.
const (
	sessionCookie = "__Host-nvr_session"
	loginCookie   = "__Host-nvr_login"
	preCSRFCookie = "__Host-nvr_csrf"
)

// Form limits.
const (
	maxFields     = 64
	maxFieldBytes = 8 << 10
)

var errBadForm = errors.New("malformed form")

// decodeForm parses an application/x-www-form-urlencoded body within the limits.
func decodeForm(body []byte) (url.Values, error) {
	if len(body) > maxBody {
		return nil, fmt.Errorf("%w: body too large", errBadForm)
	}
	if strings.Count(string(body), "&") >= maxFields {
		return nil, fmt.Errorf("%w: too many fields", errBadForm)
	}
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadForm, err)
	}
	for k, vs := range v {
		if len(k) > 64 || len(vs) > 16 {
			return nil, fmt.Errorf("%w: field too large", errBadForm)
		}
		for _, x := range vs {
			if len(x) > maxFieldBytes {
				return nil, fmt.Errorf("%w: field too large", errBadForm)
			}
		}
	}
	return v, nil
}

// form reads the request body as a form (bounded by the handler's MaxBytesReader).
func form(r *http.Request) (url.Values, error) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return nil, fmt.Errorf("%w: content type", errBadForm)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadForm, err)
	}
	return decodeForm(b)
}

// cookieValue returns the value of a cookie if it is present once and looks like one of our tokens.
func cookieValue(r *http.Request, name string) string {
	cs := r.CookiesNamed(name)
	if len(cs) != 1 {
		return ""
	}
	return validToken(cs[0].Value)
}

// validToken returns v if it is base64url of at most 96 characters, else "".
func validToken(v string) string {
	if v == "" || len(v) > 96 {
		return ""
	}
	if _, err := base64.RawURLEncoding.DecodeString(v); err != nil {
		return ""
	}
	return v
}

func setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, Secure: true,
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func clearCookie(w http.ResponseWriter, name string) { setCookie(w, name, "", -1) }

// source is the client's IP address. No forwarding header is trusted: the appliance is reached directly.
func source(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// sameOrigin rejects cross-site state changes: browsers send Sec-Fetch-Site and Origin on POST.
func sameOrigin(r *http.Request) bool {
	if sfs := r.Header.Get("Sec-Fetch-Site"); sfs != "" && sfs != "same-origin" && sfs != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host || u.Scheme != "https" {
			return false
		}
	}
	return true
}

// preCSRF returns the pre-session anti-forgery token, setting its cookie if needed.
func (s *Server) preCSRF(w http.ResponseWriter, r *http.Request) string {
	if v := cookieValue(r, preCSRFCookie); v != "" {
		return v
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return ""
	}
	v := base64.RawURLEncoding.EncodeToString(b)
	setCookie(w, preCSRFCookie, v, 3600)
	return v
}

// checkPreCSRF validates a pre-session form: double-submit token and same origin.
func checkPreCSRF(r *http.Request, f url.Values) bool {
	c := cookieValue(r, preCSRFCookie)
	return sameOrigin(r) && c != "" && subtle.ConstantTimeCompare([]byte(c), []byte(f.Get("csrf"))) == 1
}

// caller is who made a request: a session or an API token.
type caller struct {
	sub     authz.Subject
	session *authz.Session
	token   string // session token, to log out
}

// authenticate finds the caller of a request: a bearer token (service accounts) or a session cookie.
func (s *Server) authenticate(r *http.Request) (*caller, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil, false
		}
		sub, err := s.az.AuthenticateToken(strings.TrimSpace(tok))
		if err != nil {
			return nil, false
		}
		return &caller{sub: sub}, true
	}
	tok := cookieValue(r, sessionCookie)
	if tok == "" {
		return nil, false
	}
	sess, err := s.az.Authenticate(tok)
	if err != nil {
		return nil, false
	}
	return &caller{sub: authz.Subject{User: sess.User, Via: "session", Ref: sess.ID}, session: &sess, token: tok}, true
}

// checkCSRF validates a state change by a session: same origin and the session's token in the form or
// the X-CSRF-Token header. Bearer-token callers send no cookies and need none.
func (c *caller) checkCSRF(r *http.Request, f url.Values) bool {
	if c.session == nil {
		return true
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" && f != nil {
		tok = f.Get("csrf")
	}
	return sameOrigin(r) && c.session.CheckCSRF(tok)
}
