package directory

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Kinds of directory.
const (
	KindAD   = "ad"   // Active Directory: sAMAccountName, userAccountControl, LDAP_MATCHING_RULE_IN_CHAIN
	KindLDAP = "ldap" // OpenLDAP and other RFC 4510 directories: uid, groupOfNames/posixGroup
)

// Ways a password is checked.
const (
	PasswordLDAP     = "ldap"     // a simple bind as the user, over TLS
	PasswordKerberos = "kerberos" // an AS exchange with the KDC, then a service ticket checked with the keytab
)

// ErrSettings marks invalid settings.
var ErrSettings = errors.New("invalid directory settings")

// Mapping maps a directory group (its DN) to an appliance role.
type Mapping struct {
	Group string `json:"group"`
	Role  string `json:"role"`
}

// Settings configure directory login. BindPassword and Keytab are secrets: they are stored sealed and
// never shown again.
type Settings struct {
	// Enabled turns directory login on.
	Enabled bool `json:"enabled"`
	// Kind is KindAD or KindLDAP.
	Kind string `json:"kind"`

	// URL is the LDAP server: ldaps://host:636, or ldap://host:389 with StartTLS (or, only with
	// AllowPlaintext, without TLS).
	URL      string `json:"url"`
	StartTLS bool   `json:"start_tls"`
	// CACertPEM pins the certificate authorities the server's certificate must chain to (the system's
	// roots are not used). ServerName overrides the name checked (default: the URL's host).
	CACertPEM  string `json:"ca_cert_pem"`
	ServerName string `json:"server_name,omitempty"`
	// AllowPlaintext permits ldap:// without TLS: passwords cross the network in clear. For a lab only.
	AllowPlaintext bool `json:"allow_plaintext"`

	// BindDN and BindPassword are the service account that looks users and groups up.
	BindDN       string `json:"bind_dn"`
	BindPassword string `json:"bind_password,omitempty"`
	// BaseDN is where users are searched; GroupBaseDN where groups are (default BaseDN).
	BaseDN      string `json:"base_dn"`
	GroupBaseDN string `json:"group_base_dn,omitempty"`
	// UserFilter finds a user; {user} is replaced by the escaped name. Default by Kind.
	UserFilter string `json:"user_filter,omitempty"`
	// NameAttribute holds the account name (default sAMAccountName for AD, uid otherwise).
	NameAttribute string `json:"name_attribute,omitempty"`
	// Nested follows groups in groups: by LDAP_MATCHING_RULE_IN_CHAIN on AD, by walking member links
	// (at most 8 levels) elsewhere.
	Nested bool `json:"nested"`
	// DisabledFilter, if set, is matched against the user's entry: a match means disabled. On AD the
	// userAccountControl ACCOUNTDISABLE bit and on OpenLDAP pwdAccountLockedTime are always checked.
	DisabledFilter string `json:"disabled_filter,omitempty"`
	// Mappings map groups to roles; a user in none of the groups is refused.
	Mappings []Mapping `json:"mappings"`
	// DualAuthGroups put their members under dual authorization at login.
	DualAuthGroups []string `json:"dual_auth_groups,omitempty"`

	// PasswordVia is PasswordLDAP (default) or PasswordKerberos.
	PasswordVia string `json:"password_via"`
	// Realm, KDCs (host:port) and ServicePrincipal (HTTP/nvr.example.com) for Kerberos; Keytab holds the
	// service principal's keys (the bytes of a keytab file).
	Realm            string   `json:"realm,omitempty"`
	KDCs             []string `json:"kdcs,omitempty"`
	ServicePrincipal string   `json:"service_principal,omitempty"`
	Keytab           []byte   `json:"keytab,omitempty"`
	// SPNEGO offers single sign-on (HTTP Negotiate with Kerberos; never NTLM) on the login page.
	SPNEGO bool `json:"spnego"`

	// Timeout bounds each directory operation (default 5 s).
	Timeout time.Duration `json:"timeout"`
}

// Redacted returns a copy without secrets, for pages and logs.
func (s Settings) Redacted() Settings {
	s.BindPassword = ""
	s.Keytab = nil
	return s
}

// HasBindPassword and HasKeytab say whether the secrets are set, for pages.
func (s Settings) HasBindPassword() bool { return s.BindPassword != "" }

// HasKeytab reports whether a keytab is stored.
func (s Settings) HasKeytab() bool { return len(s.Keytab) > 0 }

// Limits of settings.
const (
	maxKeytab    = 64 << 10
	maxCAPEM     = 64 << 10
	maxMappings  = 256
	maxDNLen     = 1024
	defaultTO    = 5 * time.Second
	maxTimeout   = 60 * time.Second
	maxKDCs      = 8
	defaultGroup = "(|(objectClass=group)(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
)

var (
	realmRe = regexp.MustCompile(`^[A-Z0-9][A-Z0-9.-]{0,253}$`)
	hostRe  = regexp.MustCompile(`^[A-Za-z0-9.-]{1,253}$`)
	spnRe   = regexp.MustCompile(`^[A-Za-z0-9]{1,32}/[A-Za-z0-9.-]{1,253}$`)
	roleRe  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// withDefaults fills the defaults that depend on Kind.
func (s Settings) withDefaults() Settings {
	if s.Kind == "" {
		s.Kind = KindLDAP
	}
	if s.PasswordVia == "" {
		s.PasswordVia = PasswordLDAP
	}
	if s.NameAttribute == "" {
		s.NameAttribute = "uid"
		if s.Kind == KindAD {
			s.NameAttribute = "sAMAccountName"
		}
	}
	if s.UserFilter == "" {
		s.UserFilter = "(&(objectClass=person)(" + s.NameAttribute + "={user}))"
		if s.Kind == KindAD {
			s.UserFilter = "(&(objectCategory=person)(objectClass=user)(sAMAccountName={user}))"
		}
	}
	if s.GroupBaseDN == "" {
		s.GroupBaseDN = s.BaseDN
	}
	if s.Timeout <= 0 {
		s.Timeout = defaultTO
	}
	if s.Timeout > maxTimeout {
		s.Timeout = maxTimeout
	}
	return s
}

// Validate checks the settings and fills defaults. A disabled configuration is valid as long as what is
// filled in parses.
func (s *Settings) Validate() error {
	*s = s.withDefaults()
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrSettings, fmt.Sprintf(format, a...))
	}
	if s.Kind != KindAD && s.Kind != KindLDAP {
		return bad("kind must be %q or %q", KindAD, KindLDAP)
	}
	if s.PasswordVia != PasswordLDAP && s.PasswordVia != PasswordKerberos {
		return bad("passwords are checked by %q or %q", PasswordLDAP, PasswordKerberos)
	}
	if !s.Enabled {
		return nil
	}
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "ldaps" && u.Scheme != "ldap") || u.Hostname() == "" || u.Path != "" && u.Path != "/" || u.User != nil {
		return bad("the server URL must be ldaps://host[:port] or ldap://host[:port]")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad("the server URL has an invalid port")
		}
	}
	tlsOn := u.Scheme == "ldaps" || s.StartTLS
	if u.Scheme == "ldaps" && s.StartTLS {
		return bad("StartTLS is for ldap:// URLs; ldaps:// is TLS already")
	}
	if !tlsOn && !s.AllowPlaintext {
		return bad("ldap:// without StartTLS sends passwords in clear: use ldaps://, StartTLS, or allow plaintext explicitly (lab only)")
	}
	if tlsOn {
		if len(s.CACertPEM) > maxCAPEM {
			return bad("the CA certificate is too large")
		}
		if _, err := caPool(s.CACertPEM); err != nil {
			return bad("%v", err)
		}
	}
	for name, dn := range map[string]string{"bind DN": s.BindDN, "base DN": s.BaseDN, "group base DN": s.GroupBaseDN} {
		if len(dn) > maxDNLen {
			return bad("the %s is too long", name)
		}
		if _, err := ldap.ParseDN(dn); err != nil || dn == "" && name != "bind DN" {
			return bad("the %s is not a DN", name)
		}
	}
	if !strings.Contains(s.UserFilter, "{user}") || len(s.UserFilter) > 1024 {
		return bad("the user filter must contain {user}")
	}
	if _, err := ldap.CompileFilter(strings.ReplaceAll(s.UserFilter, "{user}", "x")); err != nil {
		return bad("the user filter does not parse")
	}
	if s.DisabledFilter != "" {
		if _, err := ldap.CompileFilter(s.DisabledFilter); err != nil || len(s.DisabledFilter) > 1024 {
			return bad("the disabled filter does not parse")
		}
	}
	if !roleRe.MatchString(s.NameAttribute) {
		return bad("the name attribute is invalid")
	}
	if len(s.Mappings) == 0 || len(s.Mappings) > maxMappings || len(s.DualAuthGroups) > maxMappings {
		return bad("map at least one group to a role (at most %d)", maxMappings)
	}
	for _, m := range s.Mappings {
		if _, err := ldap.ParseDN(m.Group); err != nil || m.Group == "" || len(m.Group) > maxDNLen {
			return bad("group %q is not a DN", m.Group)
		}
		if !roleRe.MatchString(m.Role) {
			return bad("role %q is not a role name", m.Role)
		}
	}
	for _, g := range s.DualAuthGroups {
		if _, err := ldap.ParseDN(g); err != nil || g == "" || len(g) > maxDNLen {
			return bad("group %q is not a DN", g)
		}
	}
	if s.PasswordVia == PasswordKerberos || s.SPNEGO {
		if !realmRe.MatchString(s.Realm) {
			return bad("the realm must be upper case, such as EXAMPLE.COM")
		}
		if !spnRe.MatchString(s.ServicePrincipal) {
			return bad("the service principal must look like HTTP/nvr.example.com")
		}
		if len(s.KDCs) == 0 || len(s.KDCs) > maxKDCs {
			return bad("name 1 to %d KDCs as host:port", maxKDCs)
		}
		for _, k := range s.KDCs {
			h, p, err := net.SplitHostPort(k)
			if err != nil || !hostRe.MatchString(h) {
				return bad("KDC %q must be host:port", k)
			}
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return bad("KDC %q has an invalid port", k)
			}
		}
		if len(s.Keytab) == 0 || len(s.Keytab) > maxKeytab {
			return bad("a keytab for %s is needed", s.ServicePrincipal)
		}
		if _, err := loadKeytab(s.Keytab, s.ServicePrincipal, s.Realm); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}

// caPool parses the pinned CA certificates.
func caPool(pemText string) (*x509.CertPool, error) {
	if strings.TrimSpace(pemText) == "" {
		return nil, errors.New("a CA certificate (PEM) is needed to check the server's certificate")
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM([]byte(pemText)) {
		return nil, errors.New("the CA certificate is not PEM")
	}
	return p, nil
}
