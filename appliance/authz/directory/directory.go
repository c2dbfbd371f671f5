package directory

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Directory checks users against one configured directory. It holds no connection between calls: each
// login dials, binds, looks up and closes, so a directory that went away is noticed at once. Safe for
// concurrent use.
type Directory struct {
	s        Settings
	log      *slog.Logger
	roots    *x509.CertPool
	mappings []mapping
	dualKeys []string

	keytab  *keytab.Keytab
	spn     types.PrincipalName
	krbConf *config.Config
	svc     *service.Settings
}

type mapping struct {
	Mapping
	key string
}

var _ authz.Negotiator = (*Directory)(nil)

// New checks s and prepares a Directory.
func New(s Settings, log *slog.Logger) (*Directory, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if !s.Enabled {
		return nil, fmt.Errorf("%w: directory login is switched off", ErrSettings)
	}
	d := &Directory{s: s, log: log}
	u, _ := url.Parse(s.URL)
	if u.Scheme == "ldaps" || s.StartTLS {
		roots, err := caPool(s.CACertPEM)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSettings, err)
		}
		d.roots = roots
	}
	for _, m := range s.Mappings {
		d.mappings = append(d.mappings, mapping{Mapping: m, key: normDN(m.Group)})
	}
	for _, g := range s.DualAuthGroups {
		d.dualKeys = append(d.dualKeys, normDN(g))
	}
	if s.PasswordVia == PasswordKerberos || s.SPNEGO {
		kt, err := loadKeytab(s.Keytab, s.ServicePrincipal, s.Realm)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSettings, err)
		}
		conf, err := krb5Config(s.Realm, s.KDCs)
		if err != nil {
			return nil, fmt.Errorf("%w: kerberos configuration: %v", ErrSettings, err)
		}
		d.keytab, d.krbConf = kt, conf
		d.spn = types.NewPrincipalName(nametype.KRB_NT_SRV_HST, s.ServicePrincipal)
		d.svc = service.NewSettings(kt, service.KeytabPrincipal(s.ServicePrincipal), service.DecodePAC(false))
	}
	return d, nil
}

// Source names the directory for accounts and the audit log.
func (d *Directory) Source() string {
	if d.s.PasswordVia == PasswordKerberos {
		return "kerberos " + d.s.Realm + " + " + d.s.URL
	}
	return "ldap " + d.s.URL
}

// NegotiateEnabled reports whether SPNEGO single sign-on is configured.
func (d *Directory) NegotiateEnabled() bool { return d.s.SPNEGO && d.keytab != nil }

// Authenticate implements [authz.Directory]: the password is checked by an LDAP bind as the user or by
// the KDC, and the user's groups are read with the service account.
func (d *Directory) Authenticate(ctx context.Context, name, password string) (authz.DirectoryUser, error) {
	if password == "" {
		return authz.DirectoryUser{}, badCredentials(false, "empty password")
	}
	user, ok := d.userPart(name)
	if !ok {
		return authz.DirectoryUser{}, badCredentials(false, "not a name of this directory")
	}
	c, err := d.dial(ctx)
	if err != nil {
		return authz.DirectoryUser{}, err
	}
	defer c.Close()
	info, err := d.lookup(c, user)
	if err != nil {
		return authz.DirectoryUser{}, err
	}
	if d.s.PasswordVia == PasswordKerberos {
		err = d.kerberosPassword(info.Name, password)
	} else {
		err = d.userBind(c, info, password)
	}
	if err != nil {
		return authz.DirectoryUser{}, withName(err, info.Name)
	}
	return d.vouch(info, d.Source())
}

// withName records the canonical name in a refusal, so authz audits the account rather than what was typed.
func withName(err error, name string) error {
	var de *authz.DirectoryError
	if errors.As(err, &de) && de.Known {
		de.Reason += " (" + name + ")"
	}
	return err
}

// lookup binds as the service account and reads the user, their groups and disabled flags.
func (d *Directory) lookup(c ldapClient, user string) (*userInfo, error) {
	if err := d.serviceBind(c); err != nil {
		return nil, err
	}
	info, err := d.findUser(c, user)
	if err != nil {
		return nil, err
	}
	if err := d.checkDisabledFilter(c, info); err != nil {
		return nil, err
	}
	if err := d.groups(c, info); err != nil {
		return nil, err
	}
	return info, nil
}

// vouch turns a looked-up, authenticated user into the answer authz needs, refusing disabled accounts
// and accounts in no mapped group.
func (d *Directory) vouch(info *userInfo, source string) (authz.DirectoryUser, error) {
	if info.Disabled != "" {
		return authz.DirectoryUser{}, &authz.DirectoryError{Err: authz.ErrAccountDisabled, Known: true, Reason: info.Disabled + " (" + info.Name + ")"}
	}
	roles, matched, dual := d.mapRoles(info.Groups)
	if len(roles) == 0 {
		return authz.DirectoryUser{}, &authz.DirectoryError{Err: authz.ErrNoDirectoryRole, Known: true,
			Reason: fmt.Sprintf("%s is in no group mapped to a role (%d groups)", info.Name, len(info.Groups))}
	}
	return authz.DirectoryUser{Name: info.Name, Source: source, DN: info.DN, Groups: matched, Roles: roles, DualAuth: dual}, nil
}

// Negotiate implements [authz.Negotiator]: a SPNEGO token proves the Kerberos principal; the directory
// then says whether the account is enabled and which groups it is in.
func (d *Directory) Negotiate(ctx context.Context, token []byte) (authz.DirectoryUser, error) {
	if !d.NegotiateEnabled() {
		return authz.DirectoryUser{}, &authz.DirectoryError{Err: authz.ErrNoDirectory}
	}
	p, err := d.verifyNegotiate(token)
	if err != nil {
		return authz.DirectoryUser{}, badCredentials(false, "SPNEGO: "+err.Error())
	}
	user, ok := d.userPart(p.Name)
	if !ok {
		return authz.DirectoryUser{}, badCredentials(false, "the principal is no account name")
	}
	c, err := d.dial(ctx)
	if err != nil {
		return authz.DirectoryUser{}, err
	}
	defer c.Close()
	info, err := d.lookup(c, user)
	if err != nil {
		return authz.DirectoryUser{}, err
	}
	return d.vouch(info, "kerberos "+d.s.Realm+" (single sign-on) + "+d.s.URL)
}

// TestLookup looks a user up without a password, for the configuration page: it shows what a login
// would give (groups and roles) or why it would be refused.
func (d *Directory) TestLookup(ctx context.Context, name string) (authz.DirectoryUser, error) {
	user, ok := d.userPart(name)
	if !ok {
		return authz.DirectoryUser{}, badCredentials(false, "not a name of this directory")
	}
	c, err := d.dial(ctx)
	if err != nil {
		return authz.DirectoryUser{}, err
	}
	defer c.Close()
	info, err := d.lookup(c, user)
	if err != nil {
		return authz.DirectoryUser{}, err
	}
	return d.vouch(info, d.Source())
}

// decodeB64 accepts standard base64 with or without padding.
func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	return base64.RawStdEncoding.DecodeString(s)
}
