// Package web is the appliance's HTTPS server: the first-boot setup page, login with two-step
// verification and dual authorization, the dashboard, users and roles, the audit log, and the JSON API for
// integrations.
//
// It owns the TLS configuration (TLS 1.3, and 1.2 with AEAD suites only, with the key held by the TPM),
// the security headers (HSTS, a strict Content-Security-Policy without inline script), cookies (Secure,
// HttpOnly, SameSite=Strict, __Host- prefixed), CSRF tokens on every state change, request size limits and
// timeouts, and the rendering of server-side html/template pages with a little plain JavaScript.
//
// It must never decide a right itself: every access goes through [authz.Service.Decide]. It must never
// put a secret (password, code, token) in a URL, a log line or an error page, and never show the setup
// code in a page: that is the local display's job ([Config.Display]).
package web
