package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// ldapClient is the part of *ldap.Conn the lookups use (the fuzz test runs them over a pipe).
type ldapClient interface {
	Bind(username, password string) error
	UnauthenticatedBind(username string) error
	Search(req *ldap.SearchRequest) (*ldap.SearchResult, error)
	SearchWithPaging(req *ldap.SearchRequest, pagingSize uint32) (*ldap.SearchResult, error)
}

// Lookup limits.
const (
	maxGroupDepth  = 8
	maxGroups      = 1024
	groupBatch     = 32
	maxAttrValues  = 4096
	pageSize       = 500
	maxNameBytes   = 64
	adDisabledFlag = 0x2 // userAccountControl ACCOUNTDISABLE
)

// maxLDAPMessage bounds one LDAP message read from a directory. go-ldap reads through asn1-ber, whose
// default limit (2 GiB) would let a hostile or broken server make the appliance allocate that much.
const maxLDAPMessage = 4 << 20

func init() {
	// The limit is process-wide; nothing else in the appliance speaks BER.
	if ber.MaxPacketLengthBytes == 0 || ber.MaxPacketLengthBytes > maxLDAPMessage {
		ber.MaxPacketLengthBytes = maxLDAPMessage
	}
}

// unavailable makes the error of a directory that cannot be used now.
func unavailable(format string, a ...any) error {
	return &authz.DirectoryError{Err: authz.ErrDirectoryUnavailable, Reason: fmt.Sprintf(format, a...)}
}

func badCredentials(known bool, reason string) error {
	return &authz.DirectoryError{Err: authz.ErrBadCredentials, Known: known, Reason: reason}
}

// dial opens a connection to the LDAP server: LDAPS or StartTLS checked against the pinned CA, or
// plaintext where explicitly allowed. Any failure is the directory being unavailable.
func (d *Directory) dial(ctx context.Context) (*ldap.Conn, error) {
	u, _ := url.Parse(d.s.URL) // validated
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = "389"
		if u.Scheme == "ldaps" {
			port = "636"
		}
	}
	addr := net.JoinHostPort(host, port)
	dl := &net.Dialer{Timeout: d.s.Timeout}
	raw, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, unavailable("connect to %s: %v", addr, err)
	}
	deadline := time.Now().Add(d.s.Timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	tc := d.tlsConfig(host)
	var c *ldap.Conn
	if u.Scheme == "ldaps" {
		tl := tls.Client(raw, tc)
		_ = tl.SetDeadline(deadline)
		if err := tl.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, unavailable("TLS with %s: %v", addr, err)
		}
		_ = tl.SetDeadline(time.Time{})
		c = ldap.NewConn(tl, true)
	} else {
		c = ldap.NewConn(raw, false)
	}
	c.Start()
	c.SetTimeout(d.s.Timeout)
	if u.Scheme == "ldap" && d.s.StartTLS {
		if err := c.StartTLS(tc); err != nil {
			c.Close()
			return nil, unavailable("StartTLS with %s: %v", addr, err)
		}
	}
	return c, nil
}

// tlsConfig trusts only the pinned CA.
func (d *Directory) tlsConfig(host string) *tls.Config {
	name := d.s.ServerName
	if name == "" {
		name = host
	}
	return &tls.Config{RootCAs: d.roots, ServerName: name, MinVersion: tls.VersionTLS12}
}

// serviceBind binds as the service account (anonymous if none is set). A refusal is a misconfiguration
// or an outage: the directory is unavailable.
func (d *Directory) serviceBind(c ldapClient) error {
	var err error
	if d.s.BindDN == "" {
		err = c.UnauthenticatedBind("") // RFC 4513 anonymous bind
	} else {
		err = c.Bind(d.s.BindDN, d.s.BindPassword)
	}
	if err != nil {
		return unavailable("the service account bind failed: %s", ldapErr(err))
	}
	return nil
}

// ldapErr renders an LDAP error without anything the client sent.
func ldapErr(err error) string {
	var le *ldap.Error
	if errors.As(err, &le) {
		msg := fmt.Sprintf("LDAP result %d (%s)", le.ResultCode, ldap.LDAPResultCodeMap[le.ResultCode])
		if le.Err != nil && le.ResultCode == ldap.ErrorNetwork {
			msg += ": " + le.Err.Error()
		}
		return msg
	}
	return err.Error()
}

// userPart strips a realm or domain a user may type (alice@EXAMPLE.COM, EXAMPLE\alice). It reports false
// for a realm that is not the configured one, or a name that cannot be an account name.
func (d *Directory) userPart(name string) (string, bool) {
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		if d.s.Realm != "" && !strings.EqualFold(name[i+1:], d.s.Realm) {
			return "", false
		}
		name = name[:i]
	} else if i := strings.IndexByte(name, '\\'); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || len(name) > maxNameBytes {
		return "", false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", false
		}
	}
	return name, true
}

// canonical is the appliance account name of a directory entry: its name attribute, lower case.
var canonicalRe = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// userInfo is what the directory says about a user.
type userInfo struct {
	DN       string
	Name     string
	Groups   []string // DNs of the groups the user is in, nested ones included
	Disabled string   // why the account is disabled, "" if it is not
}

// findUser looks name up with the service account bound. No entry is a bad name; several entries are
// refused too (an ambiguous filter must not pick one at random).
func (d *Directory) findUser(c ldapClient, name string) (*userInfo, error) {
	filter := strings.ReplaceAll(d.s.UserFilter, "{user}", ldap.EscapeFilter(name))
	attrs := []string{d.s.NameAttribute, "userAccountControl", "pwdAccountLockedTime", "memberOf"}
	req := ldap.NewSearchRequest(d.s.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2, int(d.s.Timeout/time.Second), false, filter, attrs, nil)
	res, err := c.Search(req)
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return nil, unavailable("user search: %s", ldapErr(err))
	}
	if res == nil || len(res.Entries) == 0 {
		return nil, badCredentials(false, "no such directory account")
	}
	if len(res.Entries) > 1 || err != nil {
		return nil, badCredentials(false, "the user filter matches several directory entries")
	}
	return d.userFromEntry(res.Entries[0])
}

// userFromEntry reads the account name and the disabled flags of a user entry.
func (d *Directory) userFromEntry(e *ldap.Entry) (*userInfo, error) {
	if e == nil || e.DN == "" || len(e.DN) > maxDNLen {
		return nil, unavailable("the directory returned an entry without a usable DN")
	}
	if _, err := ldap.ParseDN(e.DN); err != nil {
		return nil, unavailable("the directory returned an entry with an invalid DN")
	}
	names := e.GetEqualFoldAttributeValues(d.s.NameAttribute)
	if len(names) != 1 {
		return nil, badCredentials(false, fmt.Sprintf("the entry has %d values of %s", len(names), d.s.NameAttribute))
	}
	name := strings.ToLower(names[0])
	if !canonicalRe.MatchString(name) {
		return nil, badCredentials(false, "the directory account name cannot be an appliance account name")
	}
	u := &userInfo{DN: e.DN, Name: name}
	if uac := e.GetEqualFoldAttributeValues("userAccountControl"); len(uac) > 0 {
		disabled, err := uacDisabled(uac[0])
		if err != nil {
			return nil, unavailable("userAccountControl: %v", err)
		}
		if disabled {
			u.Disabled = "disabled in Active Directory (userAccountControl)"
		}
	}
	if lt := e.GetEqualFoldAttributeValues("pwdAccountLockedTime"); len(lt) > 0 && u.Disabled == "" {
		u.Disabled = "locked by the password policy (pwdAccountLockedTime)"
	}
	return u, nil
}

// uacDisabled reads AD's userAccountControl (a decimal 32-bit value, possibly negative).
func uacDisabled(v string) (bool, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < -1<<31 || n > 1<<32-1 {
		return false, errors.New("not a 32-bit number")
	}
	return uint32(n)&adDisabledFlag != 0, nil
}

// checkDisabledFilter matches the configured disabled filter against the user's own entry.
func (d *Directory) checkDisabledFilter(c ldapClient, u *userInfo) error {
	if d.s.DisabledFilter == "" || u.Disabled != "" {
		return nil
	}
	req := ldap.NewSearchRequest(u.DN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, int(d.s.Timeout/time.Second), false, d.s.DisabledFilter, []string{"1.1"}, nil)
	res, err := c.Search(req)
	if err != nil {
		return unavailable("disabled-account check: %s", ldapErr(err))
	}
	if len(res.Entries) > 0 {
		u.Disabled = "matches the disabled-account filter"
	}
	return nil
}

// groups finds the groups of u: on AD with nesting by LDAP_MATCHING_RULE_IN_CHAIN in one query;
// otherwise level by level, following member, uniqueMember and memberUid links, within bounds.
func (d *Directory) groups(c ldapClient, u *userInfo) error {
	if d.s.Kind == KindAD {
		rule := ""
		if d.s.Nested {
			rule = ":1.2.840.113556.1.4.1941:" // LDAP_MATCHING_RULE_IN_CHAIN
		}
		f := "(&(objectClass=group)(member" + rule + "=" + ldap.EscapeFilter(u.DN) + "))"
		dns, err := d.groupSearch(c, f)
		if err != nil {
			return err
		}
		u.Groups = dns
		return nil
	}
	seen := map[string]bool{}
	frontier := []string{u.DN}
	first := true
	for depth := 0; depth < maxGroupDepth && len(frontier) > 0; depth++ {
		var next []string
		for len(frontier) > 0 {
			n := min(groupBatch, len(frontier))
			batch := frontier[:n]
			frontier = frontier[n:]
			var or strings.Builder
			for _, dn := range batch {
				e := ldap.EscapeFilter(dn)
				or.WriteString("(member=" + e + ")(uniqueMember=" + e + ")")
			}
			if first {
				or.WriteString("(memberUid=" + ldap.EscapeFilter(u.Name) + ")")
			}
			dns, err := d.groupSearch(c, "(&"+defaultGroup+"(|"+or.String()+"))")
			if err != nil {
				return err
			}
			for _, g := range dns {
				k := normDN(g)
				if seen[k] {
					continue
				}
				seen[k] = true
				u.Groups = append(u.Groups, g)
				next = append(next, g)
				if len(u.Groups) > maxGroups {
					return unavailable("the user is in more than %d groups", maxGroups)
				}
			}
		}
		first = false
		if !d.s.Nested {
			break
		}
		frontier = next
	}
	return nil
}

func (d *Directory) groupSearch(c ldapClient, filter string) ([]string, error) {
	req := ldap.NewSearchRequest(d.s.GroupBaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, maxGroups+1, int(d.s.Timeout/time.Second), false, filter, []string{"1.1"}, nil)
	res, err := c.SearchWithPaging(req, pageSize)
	if err != nil {
		return nil, unavailable("group search: %s", ldapErr(err))
	}
	if len(res.Entries) > maxGroups {
		return nil, unavailable("the user is in more than %d groups", maxGroups)
	}
	out := make([]string, 0, len(res.Entries))
	for _, e := range res.Entries {
		if e.DN == "" || len(e.DN) > maxDNLen {
			continue
		}
		if _, err := ldap.ParseDN(e.DN); err != nil {
			continue
		}
		out = append(out, e.DN)
	}
	return out, nil
}

// normDN is a DN's comparison key: parsed, attribute types and values folded; the raw text if unparsable.
func normDN(dn string) string {
	p, err := ldap.ParseDN(dn)
	if err != nil {
		return strings.ToLower(dn)
	}
	var b strings.Builder
	for i, rdn := range p.RDNs {
		if i > 0 {
			b.WriteByte(',')
		}
		parts := make([]string, 0, len(rdn.Attributes))
		for _, a := range rdn.Attributes {
			parts = append(parts, strings.ToLower(a.Type)+"="+strings.ToLower(a.Value))
		}
		slices.Sort(parts)
		b.WriteString(strings.Join(parts, "+"))
	}
	return b.String()
}

// mapRoles maps the user's groups to roles through the configured mappings.
func (d *Directory) mapRoles(groups []string) (roles, matched []string, dual bool) {
	for _, g := range groups {
		k := normDN(g)
		hit := false
		for _, m := range d.mappings {
			if m.key == k {
				hit = true
				if !slices.Contains(roles, m.Role) {
					roles = append(roles, m.Role)
				}
			}
		}
		if slices.Contains(d.dualKeys, k) {
			hit, dual = true, true
		}
		if hit {
			matched = append(matched, g)
		}
	}
	slices.Sort(roles)
	return roles, matched, dual
}

// adBindReason reads the "data NNN" sub-code of an Active Directory bind failure (result 49):
// it tells a disabled, locked or expired account from a wrong password.
func adBindReason(diag string) (disabled bool, why string) {
	i := strings.Index(diag, "data ")
	if i < 0 {
		return false, "wrong password"
	}
	code := diag[i+5:]
	if j := strings.IndexAny(code, ", "); j >= 0 {
		code = code[:j]
	}
	switch strings.ToLower(code) {
	case "533":
		return true, "disabled in Active Directory"
	case "775":
		return true, "locked out in Active Directory"
	case "701", "532":
		return true, "account or password expired in Active Directory"
	case "773":
		return true, "the password must be changed first"
	case "530", "531":
		return true, "not permitted at this time or from this workstation"
	}
	return false, "wrong password"
}

// userBind checks the password by binding as the user.
func (d *Directory) userBind(c ldapClient, u *userInfo, password string) error {
	err := c.Bind(u.DN, password)
	if err == nil {
		return nil
	}
	if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		var le *ldap.Error
		diag := ""
		if errors.As(err, &le) && le.Err != nil {
			diag = le.Err.Error()
		}
		if disabled, why := adBindReason(diag); disabled {
			return &authz.DirectoryError{Err: authz.ErrAccountDisabled, Known: true, Reason: why}
		}
		return badCredentials(true, "wrong password")
	}
	if ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform) || ldap.IsErrorWithCode(err, ldap.LDAPResultInappropriateAuthentication) {
		return &authz.DirectoryError{Err: authz.ErrAccountDisabled, Known: true, Reason: "the directory refuses binds for this account: " + ldapErr(err)}
	}
	return unavailable("user bind: %s", ldapErr(err))
}
