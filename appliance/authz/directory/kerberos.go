package directory

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/jcmturner/gofork/encoding/asn1"
	"strings"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/krberror"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// MaxNegotiateToken bounds a SPNEGO token (the decoded Authorization header). Tickets with a large AD PAC
// reach about 12 KiB; the web server caps headers at 16 KiB anyway.
const MaxNegotiateToken = 12 << 10

// ErrNTLM is the refusal of an NTLM token: the appliance never offers or accepts NTLM.
var ErrNTLM = errors.New("NTLM is not accepted: use Kerberos")

// strong encryption types only: no DES, no RC4.
var strongEtypes = []int32{etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.AES128_CTS_HMAC_SHA1_96,
	etypeID.AES256_CTS_HMAC_SHA384_192, etypeID.AES128_CTS_HMAC_SHA256_128}

// oidNTLMSSP is the SPNEGO mechanism of NTLM (1.3.6.1.4.1.311.2.2.10).
var oidNTLMSSP = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 2, 10}

// loadKeytab parses a keytab and checks it holds a strong key for spn@realm.
func loadKeytab(b []byte, spn, realm string) (*keytab.Keytab, error) {
	kt := keytab.New()
	if err := safeCall(func() error { return kt.Unmarshal(b) }); err != nil {
		return nil, fmt.Errorf("the keytab does not parse: %v", err)
	}
	pn := types.NewPrincipalName(nametype.KRB_NT_SRV_HST, spn)
	for _, et := range strongEtypes {
		if _, _, err := kt.GetEncryptionKey(pn, realm, 0, et); err == nil {
			return kt, nil
		}
	}
	return nil, fmt.Errorf("the keytab has no AES key for %s@%s", spn, realm)
}

// safeCall runs a third-party parser of hostile bytes, turning a panic into an error.
func safeCall(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed input (parser panic: %v)", r)
		}
	}()
	return f()
}

// krb5Config makes the client configuration from validated settings: the realm, its KDCs, AES only,
// TCP first, no DNS lookups.
func krb5Config(realm string, kdcs []string) (*config.Config, error) {
	var b strings.Builder
	b.WriteString("[libdefaults]\n")
	b.WriteString(" default_realm = " + realm + "\n")
	b.WriteString(" dns_lookup_kdc = false\n dns_lookup_realm = false\n udp_preference_limit = 1\n noaddresses = true\n")
	b.WriteString(" default_tkt_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96\n")
	b.WriteString(" default_tgs_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96\n")
	b.WriteString(" permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96\n")
	b.WriteString("[realms]\n " + realm + " = {\n")
	for _, k := range kdcs {
		b.WriteString("  kdc = " + k + "\n")
	}
	b.WriteString(" }\n")
	return config.NewFromString(b.String())
}

// kerberosPassword checks a password by an AS exchange with the KDC, then asks for a ticket to the
// appliance's own service and decrypts it with the keytab: only the real KDC knows that key, so a forged
// KDC answering for the realm cannot vouch for anyone.
func (d *Directory) kerberosPassword(user, password string) error {
	cl := client.NewWithPassword(user, d.s.Realm, password, d.krbConf, client.DisablePAFXFAST(true))
	defer cl.Destroy()
	if err := cl.Login(); err != nil {
		return classifyKerberos(err)
	}
	tkt, _, err := cl.GetServiceTicket(d.s.ServicePrincipal)
	if err != nil {
		return classifyKerberos(err)
	}
	if err := tkt.DecryptEncPart(d.keytab, &d.spn); err != nil {
		return unavailable("the KDC's service ticket does not decrypt with the appliance's keytab: the KDC is not the realm's, or the keytab is stale")
	}
	cn := tkt.DecryptedEncPart.CName
	if len(cn.NameString) != 1 || !strings.EqualFold(cn.NameString[0], user) || !strings.EqualFold(tkt.DecryptedEncPart.CRealm, d.s.Realm) {
		return unavailable("the KDC issued a ticket for another client")
	}
	return nil
}

// classifyKerberos turns a gokrb5 error into a directory error: KDC refusals of the client are wrong
// passwords or disabled accounts; anything else means the KDC is not usable now.
func classifyKerberos(err error) error {
	msg := err.Error()
	var ke krberror.Krberror
	root := ""
	if errors.As(err, &ke) {
		root = ke.RootCause
	}
	has := func(code int32) bool { return strings.Contains(msg, "KRB Error: "+errorcode.Lookup(code)) }
	switch {
	case has(errorcode.KDC_ERR_CLIENT_REVOKED):
		return &authz.DirectoryError{Err: authz.ErrAccountDisabled, Known: true, Reason: "the KDC says the account is disabled or locked"}
	case has(errorcode.KDC_ERR_KEY_EXPIRED):
		return &authz.DirectoryError{Err: authz.ErrAccountDisabled, Known: true, Reason: "the password has expired"}
	case has(errorcode.KDC_ERR_PREAUTH_FAILED), has(errorcode.KRB_AP_ERR_BAD_INTEGRITY):
		return badCredentials(true, "wrong password (KDC)")
	case has(errorcode.KDC_ERR_C_PRINCIPAL_UNKNOWN):
		return badCredentials(false, "no such principal")
	case strings.Contains(msg, "client password/keytab incorrect"), root == krberror.KRBMsgError && strings.Contains(msg, "password"):
		return badCredentials(true, "wrong password (AS reply does not decrypt)")
	case has(errorcode.KDC_ERR_S_PRINCIPAL_UNKNOWN):
		return unavailable("the KDC does not know the appliance's service principal")
	}
	return unavailable("kerberos: %s", firstLine(msg))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// Principal is a client verified from a SPNEGO token.
type Principal struct {
	Name  string // the single name component, such as alice
	Realm string
}

// ParseNegotiateHeader extracts the token of an "Authorization: Negotiate <base64>" header value. It
// refuses other schemes, oversized tokens and NTLM tokens sent under Negotiate.
func ParseNegotiateHeader(v string) ([]byte, error) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Negotiate") {
		if strings.EqualFold(scheme, "NTLM") {
			return nil, ErrNTLM
		}
		return nil, errors.New("not a Negotiate authorization")
	}
	rest = strings.TrimSpace(rest)
	if len(rest) > (MaxNegotiateToken+2)/3*4 {
		return nil, errors.New("the Negotiate token is too large")
	}
	tok, err := decodeB64(rest)
	if err != nil {
		return nil, errors.New("the Negotiate token is not base64")
	}
	return tok, nil
}

// verifyNegotiate checks a SPNEGO (or raw Kerberos GSS-API) token: it must carry a Kerberos AP-REQ for
// the appliance's service principal in the configured realm, decrypt with the keytab, be fresh and not
// replayed. It returns the client principal.
func (d *Directory) verifyNegotiate(tok []byte) (Principal, error) {
	if len(tok) == 0 || len(tok) > MaxNegotiateToken {
		return Principal{}, errors.New("empty or oversized token")
	}
	if bytes.HasPrefix(tok, []byte("NTLMSSP\x00")) {
		return Principal{}, ErrNTLM
	}
	var mech []byte
	err := safeCall(func() error {
		var st spnego.SPNEGOToken
		if err := st.Unmarshal(tok); err != nil {
			// A bare Kerberos GSS-API token (some clients skip SPNEGO).
			var k spnego.KRB5Token
			if k.Unmarshal(tok) != nil {
				return fmt.Errorf("neither SPNEGO nor Kerberos: %v", err)
			}
			mech = tok
			return nil
		}
		if !st.Init || len(st.NegTokenInit.MechTypes) == 0 {
			return errors.New("not a NegTokenInit")
		}
		for _, m := range st.NegTokenInit.MechTypes {
			if m.Equal(oidNTLMSSP) {
				if len(st.NegTokenInit.MechTypes) == 1 {
					return ErrNTLM
				}
			}
		}
		first := st.NegTokenInit.MechTypes[0]
		if !first.Equal(gssapi.OIDKRB5.OID()) && !first.Equal(gssapi.OIDMSLegacyKRB5.OID()) {
			return errors.New("the preferred mechanism is not Kerberos")
		}
		mech = st.NegTokenInit.MechTokenBytes
		return nil
	})
	if err != nil {
		return Principal{}, err
	}
	var p Principal
	err = safeCall(func() error {
		var k spnego.KRB5Token
		if err := k.Unmarshal(mech); err != nil {
			return fmt.Errorf("kerberos token: %v", err)
		}
		if !k.IsAPReq() {
			return errors.New("the Kerberos token is not an AP-REQ")
		}
		if !k.APReq.Ticket.SName.Equal(d.spn) || !strings.EqualFold(k.APReq.Ticket.Realm, d.s.Realm) {
			return fmt.Errorf("the ticket is for %s@%s, not for this appliance", k.APReq.Ticket.SName.PrincipalNameString(), k.APReq.Ticket.Realm)
		}
		ok, creds, err := service.VerifyAPREQ(&k.APReq, d.svc)
		if err != nil || !ok || creds == nil {
			if err == nil {
				err = errors.New("not valid")
			}
			return fmt.Errorf("the ticket was refused: %s", firstLine(err.Error()))
		}
		cn := creds.CName()
		if len(cn.NameString) != 1 {
			return errors.New("the client is a service principal, not a user")
		}
		p = Principal{Name: cn.NameString[0], Realm: creds.Realm()}
		return nil
	})
	if err != nil {
		return Principal{}, err
	}
	if !strings.EqualFold(p.Realm, d.s.Realm) {
		return Principal{}, fmt.Errorf("the client is from realm %s (cross-realm logins are not accepted)", p.Realm)
	}
	return p, nil
}
