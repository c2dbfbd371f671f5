package directory

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"
)

// fuzzDirectory is a Directory with an in-memory keytab and settings that never dial (the fuzz targets
// drive the parsing and decision code directly).
func fuzzDirectory(t testing.TB, kind string) *Directory {
	t.Helper()
	kt := keytab.New()
	if err := kt.AddEntry("HTTP/nvr.example.test", "EXAMPLE.TEST", "fuzz service key", time.Unix(0, 0), 1, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
		t.Fatal(err)
	}
	ktb, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Settings{Enabled: true, Kind: kind, URL: "ldap://127.0.0.1:1", AllowPlaintext: true,
		BindDN: "cn=svc,dc=example,dc=test", BindPassword: "service password", BaseDN: "dc=example,dc=test",
		Nested: true, DisabledFilter: "(employeeType=disabled)", Mappings: []Mapping{{Group: "cn=ops,dc=example,dc=test", Role: "operator"}},
		DualAuthGroups: []string{"cn=dual,dc=example,dc=test"}, SPNEGO: true, Realm: "EXAMPLE.TEST", KDCs: []string{"127.0.0.1:1"},
		ServicePrincipal: "HTTP/nvr.example.test", Keytab: ktb, Timeout: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// FuzzNegotiate feeds hostile Authorization header values and SPNEGO tokens to the appliance's SPNEGO
// code: it must never panic, never accept a token without the service key, and stay within its bounds.
func FuzzNegotiate(f *testing.F) {
	d := fuzzDirectory(f, KindLDAP)
	f.Fuzz(func(t *testing.T, header string, token []byte) {
		if tok, err := ParseNegotiateHeader(header); err == nil && len(tok) > MaxNegotiateToken+3 {
			t.Fatalf("token of %d bytes passed the header limit", len(tok))
		}
		if p, err := d.verifyNegotiate(token); err == nil {
			t.Fatalf("a forged token was accepted for %+v", p)
		}
	})
}

// Chunks of an LDAP fuzz input: [flags][len uint16 BE][LDAPMessage]. flags&1 ends the answer to the
// current request.
func chunk(last bool, pkt *ber.Packet) []byte {
	b := pkt.Bytes()
	out := []byte{0, 0, 0}
	if last {
		out[0] = 1
	}
	binary.BigEndian.PutUint16(out[1:], uint16(len(b)))
	return append(out, b...)
}

// fakeLDAP answers each request read from conn with the next chunks of data, the message ID rewritten to
// the request's, until data runs out; then it closes conn.
func fakeLDAP(conn net.Conn, data []byte) { fakeLDAPSeen(conn, data, nil) }

// fakeLDAPSeen is fakeLDAP that also hands each request to seen.
func fakeLDAPSeen(conn net.Conn, data []byte, seen func(*ber.Packet)) {
	defer conn.Close()
	for len(data) > 0 {
		req, err := ber.ReadPacket(conn)
		if err != nil || len(req.Children) == 0 {
			return
		}
		if seen != nil {
			seen(req)
		}
		id := req.Children[0].Value
		for len(data) >= 3 {
			last := data[0]&1 == 1
			n := int(binary.BigEndian.Uint16(data[1:3]))
			data = data[3:]
			if n > len(data) {
				n = len(data)
			}
			raw := data[:n]
			data = data[n:]
			if p, err := ber.DecodePacketErr(raw); err == nil && len(p.Children) >= 2 {
				// Packet.Bytes encodes the children as appended, so rebuild the message around the new ID.
				q := ber.Encode(p.ClassType, p.TagType, p.Tag, nil, "LDAPMessage")
				q.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "MessageID"))
				for _, c := range p.Children[1:] {
					q.AppendChild(c)
				}
				raw = q.Bytes()
			}
			if _, err := conn.Write(raw); err != nil {
				return
			}
			if last {
				break
			}
		}
	}
}

// FuzzLDAPResponses runs the appliance's LDAP lookups (service bind, user search, disabled checks,
// nested groups, user bind) against a server whose answers are fuzz input: hostile or broken responses
// must end in a refusal or an unavailable directory, never a panic, a hang or a login.
func FuzzLDAPResponses(f *testing.F) {
	dirs := map[bool]*Directory{false: fuzzDirectory(f, KindLDAP), true: fuzzDirectory(f, KindAD)}
	f.Fuzz(func(t *testing.T, ad bool, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		d := dirs[ad]
		cs, ss := net.Pipe()
		done := make(chan struct{})
		go func() { fakeLDAP(ss, data); close(done) }()
		c := ldap.NewConn(cs, false)
		c.Start()
		// Short: an answer the fake server leaves incomplete waits for this timeout.
		c.SetTimeout(25 * time.Millisecond)
		info, err := d.lookup(c, "alice")
		if err == nil {
			err = d.userBind(c, info, "password")
		}
		if err == nil {
			u, verr := d.vouch(info, "fuzz")
			if verr == nil && (len(u.Roles) == 0 || u.Name == "") {
				t.Fatalf("vouched without a role: %+v", u)
			}
		}
		c.Close()
		ss.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("fake server did not stop")
		}
	})
}

// LDAP packets for the seed corpus.
func ldapMsg(op *ber.Packet) *ber.Packet {
	p := ber.NewSequence("LDAPMessage")
	p.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(1), "MessageID"))
	p.AppendChild(op)
	return p
}

func ldapResult(app ber.Tag, code int64, diag string) *ber.Packet {
	r := ber.Encode(ber.ClassApplication, ber.TypeConstructed, app, nil, "result")
	r.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, code, "resultCode"))
	r.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "matchedDN"))
	r.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, diag, "diagnosticMessage"))
	return ldapMsg(r)
}

func ldapEntry(dn string, attrs map[string][]string) *ber.Packet {
	e := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultEntry, nil, "entry")
	e.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, dn, "dn"))
	as := ber.NewSequence("attributes")
	for k, vs := range attrs {
		a := ber.NewSequence("attribute")
		a.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, k, "type"))
		set := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "vals")
		for _, v := range vs {
			set.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, v, "val"))
		}
		a.AppendChild(set)
		as.AppendChild(a)
	}
	e.AppendChild(as)
	return ldapMsg(e)
}

// TestWriteFuzzSeeds writes the committed seed corpora when NVR_WRITE_FUZZ_SEEDS=1 (they are in
// testdata/fuzz; rerun after changing the input format).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("NVR_WRITE_FUZZ_SEEDS") != "1" {
		return
	}
	bindOK := chunk(true, ldapResult(ldap.ApplicationBindResponse, 0, ""))
	done := chunk(true, ldapResult(ldap.ApplicationSearchResultDone, 0, ""))
	cat := func(cs ...[]byte) []byte {
		var out []byte
		for _, c := range cs {
			out = append(out, c...)
		}
		return out
	}
	user := func(attrs map[string][]string) []byte {
		return chunk(false, ldapEntry("uid=alice,ou=people,dc=example,dc=test", attrs))
	}
	group := func(dn string) []byte { return chunk(false, ldapEntry(dn, nil)) }
	ldapSeeds := map[string][]any{
		"ldap-login-ok": {false, cat(bindOK, user(map[string][]string{"uid": {"alice"}}), done, done,
			group("cn=ops,dc=example,dc=test"), group("cn=dual,dc=example,dc=test"), done, done, bindOK)},
		"ldap-disabled": {false, cat(bindOK, user(map[string][]string{"uid": {"alice"}}), chunk(false, ldapEntry("uid=alice,ou=people,dc=example,dc=test", nil)), done, done, bindOK)},
		"ldap-locked":   {false, cat(bindOK, user(map[string][]string{"uid": {"alice"}, "pwdAccountLockedTime": {"000001010000Z"}}), done, done, bindOK)},
		"ldap-two-entries": {false, cat(bindOK, user(map[string][]string{"uid": {"alice"}}),
			chunk(false, ldapEntry("uid=alice2,ou=people,dc=example,dc=test", map[string][]string{"uid": {"alice"}})), done)},
		"ldap-bad-dn": {false, cat(bindOK, chunk(false, ldapEntry("uid=alice,,,=", map[string][]string{"uid": {"alice"}})), done)},
		"ad-login-ok": {true, cat(bindOK, user(map[string][]string{"sAMAccountName": {"Alice"}, "userAccountControl": {"512"}}), done,
			group("CN=ops,DC=example,DC=test"), done, bindOK)},
		"ad-uac-disabled": {true, cat(bindOK, user(map[string][]string{"sAMAccountName": {"alice"}, "userAccountControl": {"514"}}), done, done, bindOK)},
		"ad-bind-533": {true, cat(bindOK, user(map[string][]string{"sAMAccountName": {"alice"}, "userAccountControl": {"-2147483646"}}), done, done,
			chunk(true, ldapResult(ldap.ApplicationBindResponse, 49, "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 533, v4563")))},
		"ad-bind-775": {true, cat(bindOK, user(map[string][]string{"sAMAccountName": {"alice"}}), done, done,
			chunk(true, ldapResult(ldap.ApplicationBindResponse, 49, "data 775,")))},
		"service-bind-refused": {false, chunk(true, ldapResult(ldap.ApplicationBindResponse, 49, ""))},
		"garbage":              {false, []byte{1, 0, 5, 0x30, 0x84, 0xff, 0xff, 0xff}},
	}
	negSeeds := map[string][]any{
		"ntlm":           {"NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAF1YAAAADw==", []byte("NTLMSSP\x00\x01\x00\x00\x00\x07\x82\x08\xa2")},
		"empty":          {"Negotiate ", []byte{}},
		"spnego-garbage": {"Negotiate YIIBAAYGKwYBBQUCoA==", []byte{0x60, 0x82, 0x01, 0x00, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02, 0xa0, 0x00}},
		"negtokenresp":   {"Negotiate oRQwEqADCgEAoQsGCSqGSIb3EgECAg==", []byte{0xa1, 0x14, 0x30, 0x12, 0xa0, 0x03, 0x0a, 0x01, 0x00, 0xa1, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02}},
		"krb5-raw":       {"negotiate YIIB", []byte{0x60, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x01, 0x00}},
	}
	write := func(target string, seeds map[string][]any) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, vals := range seeds {
			s := "go test fuzz v1\n"
			for _, v := range vals {
				switch x := v.(type) {
				case bool:
					s += fmt.Sprintf("bool(%v)\n", x)
				case string:
					s += "string(" + strconv.Quote(x) + ")\n"
				case []byte:
					s += "[]byte(" + strconv.Quote(string(x)) + ")\n"
				}
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzLDAPResponses", ldapSeeds)
	write("FuzzNegotiate", negSeeds)
}

// TestLDAPResponseSeedsReachTheEnd checks the "ldap-login-ok" seed really drives a whole login through the
// fake server (so the fuzzer starts from deep states).
func TestLDAPResponseSeedsReachTheEnd(t *testing.T) {
	d := fuzzDirectory(t, KindLDAP)
	bindOK := chunk(true, ldapResult(ldap.ApplicationBindResponse, 0, ""))
	done := chunk(true, ldapResult(ldap.ApplicationSearchResultDone, 0, ""))
	var data []byte
	for _, c := range [][]byte{bindOK, chunk(false, ldapEntry("uid=alice,ou=people,dc=example,dc=test", map[string][]string{"uid": {"alice"}})), done, done,
		chunk(false, ldapEntry("cn=ops,dc=example,dc=test", nil)), chunk(false, ldapEntry("cn=dual,dc=example,dc=test", nil)), done, done, bindOK} {
		data = append(data, c...)
	}
	cs, ss := net.Pipe()
	go fakeLDAP(ss, data)
	c := ldap.NewConn(cs, false)
	c.Start()
	c.SetTimeout(2 * time.Second)
	defer c.Close()
	info, err := d.lookup(c, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.userBind(c, info, "password"); err != nil {
		t.Fatal(err)
	}
	u, err := d.vouch(info, "fake")
	if err != nil || u.Roles[0] != "operator" || !u.DualAuth {
		t.Fatalf("%+v %v", u, err)
	}
}
