package directory

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/authz/directory/dirtest"
	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/spnego"
)

// ldapSettings are settings for the test slapd: LDAPS with its CA pinned, nested groups walked, disabled
// accounts marked by employeeType.
func ldapSettings(s *dirtest.Slapd) Settings {
	return Settings{
		Enabled: true, Kind: KindLDAP, URL: s.URL, CACertPEM: string(s.CA.CertPEM),
		BindDN: dirtest.ServiceDN, BindPassword: dirtest.ServicePW, BaseDN: "ou=people," + dirtest.Suffix,
		GroupBaseDN: "ou=groups," + dirtest.Suffix, Nested: true, DisabledFilter: "(employeeType=disabled)",
		Mappings: []Mapping{{Group: dirtest.Operators, Role: "operator"}, {Group: dirtest.Viewers, Role: "viewer"},
			{Group: dirtest.Admins, Role: "administrator"}},
		Timeout: 3 * time.Second,
	}
}

func kerberosSettings(s *dirtest.Slapd, k *dirtest.KDC) Settings {
	st := ldapSettings(s)
	st.PasswordVia, st.SPNEGO = PasswordKerberos, true
	st.Realm, st.KDCs, st.ServicePrincipal, st.Keytab = k.Realm, []string{k.Addr}, k.SPN, k.Keytab
	return st
}

func refusedWith(t *testing.T, err, want error) {
	t.Helper()
	var de *authz.DirectoryError
	if !errors.As(err, &de) || !errors.Is(err, want) {
		t.Fatalf("got %v, want a DirectoryError wrapping %v", err, want)
	}
}

func TestLDAPS(t *testing.T) {
	s := dirtest.StartSlapd(t)
	d, err := New(ldapSettings(s), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	u, err := d.Authenticate(ctx, "alice", dirtest.UserPW)
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	if strings.Join(u.Roles, ",") != "operator" || u.Name != "alice" || u.DN != dirtest.UserDN("alice") {
		t.Fatalf("alice: %+v", u)
	}
	// Typed with the realm or domain, the same account.
	if u, err := d.Authenticate(ctx, `EXAMPLE\alice`, dirtest.UserPW); err != nil || u.Name != "alice" {
		t.Fatalf(`EXAMPLE\alice: %+v %v`, u, err)
	}
	// Nested: dave is in supervisors, which is in nvr-admins.
	if u, err := d.Authenticate(ctx, "dave", dirtest.UserPW); err != nil || strings.Join(u.Roles, ",") != "administrator" {
		t.Fatalf("dave: %+v %v", u, err)
	}
	_, err = d.Authenticate(ctx, "alice", "wrong password")
	refusedWith(t, err, authz.ErrBadCredentials)
	_, err = d.Authenticate(ctx, "alice", "")
	refusedWith(t, err, authz.ErrBadCredentials)
	_, err = d.Authenticate(ctx, "nobody", dirtest.UserPW)
	refusedWith(t, err, authz.ErrBadCredentials)
	_, err = d.Authenticate(ctx, "carol", dirtest.UserPW)
	refusedWith(t, err, authz.ErrAccountDisabled)
	_, err = d.Authenticate(ctx, "erin", dirtest.UserPW)
	refusedWith(t, err, authz.ErrNoDirectoryRole)
	// A filter injection finds nobody.
	_, err = d.Authenticate(ctx, "*)(uid=*", dirtest.UserPW)
	refusedWith(t, err, authz.ErrBadCredentials)

	// Moved to another group: other roles at the next login.
	s.MoveUser(t, "alice", dirtest.Operators, dirtest.Viewers)
	if u, err := d.Authenticate(ctx, "alice", dirtest.UserPW); err != nil || strings.Join(u.Roles, ",") != "viewer" {
		t.Fatalf("alice after the move: %+v %v", u, err)
	}

	// Another CA pinned: the server is not trusted, so the directory is unavailable (not a wrong password).
	st := ldapSettings(s)
	st.CACertPEM = string(dirtest.NewCA(t, "Other CA").CertPEM)
	d2, err := New(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d2.Authenticate(ctx, "alice", dirtest.UserPW)
	refusedWith(t, err, authz.ErrDirectoryUnavailable)

	// The directory down: unavailable, quickly.
	s.Stop()
	start := time.Now()
	_, err = d.Authenticate(ctx, "alice", dirtest.UserPW)
	refusedWith(t, err, authz.ErrDirectoryUnavailable)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("refusal took %s", time.Since(start))
	}
}

func TestPlaintextNeedsExplicitConsent(t *testing.T) {
	st := Settings{Enabled: true, URL: "ldap://127.0.0.1:389", BaseDN: "dc=x", Mappings: []Mapping{{Group: "cn=g,dc=x", Role: "viewer"}}}
	if err := st.Validate(); !errors.Is(err, ErrSettings) {
		t.Fatalf("plain ldap:// accepted: %v", err)
	}
	st.AllowPlaintext = true
	if err := st.Validate(); err != nil {
		t.Fatalf("plaintext with consent: %v", err)
	}
	st = Settings{Enabled: true, URL: "ldaps://127.0.0.1", BaseDN: "dc=x", Mappings: []Mapping{{Group: "cn=g,dc=x", Role: "viewer"}}}
	if err := st.Validate(); !errors.Is(err, ErrSettings) {
		t.Fatalf("LDAPS without a pinned CA accepted: %v", err)
	}
}

// krbClient makes a gokrb5 client from a kinit credential cache (the user's own login).
func krbClient(t *testing.T, k *dirtest.KDC, user string) *client.Client {
	return krbClientB(t, k, user)
}

func krbClientB(t testing.TB, k *dirtest.KDC, user string) *client.Client {
	t.Helper()
	cc := k.Kinit(t, user, dirtest.UserPW)
	ccache, err := credentials.LoadCCache(cc)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := config.Load(k.Conf)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.NewFromCCache(ccache, conf, client.DisablePAFXFAST(true))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// negotiateToken is the SPNEGO token a browser would send for spn.
func negotiateToken(t *testing.T, cl *client.Client, spn string) []byte {
	return negotiateTokenB(t, cl, spn)
}

func negotiateTokenB(t testing.TB, cl *client.Client, spn string) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", "https://nvr.example.test/login/negotiate", nil)
	if err := spnego.SetSPNEGOHeader(cl, req, spn); err != nil {
		t.Fatal(err)
	}
	tok, err := ParseNegotiateHeader(req.Header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestKerberos(t *testing.T) {
	s := dirtest.StartSlapd(t)
	k := dirtest.StartKDC(t, "nvr.example.test")
	d, err := New(kerberosSettings(s, k), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("password through the KDC", func(t *testing.T) {
		u, err := d.Authenticate(ctx, "alice@EXAMPLE.TEST", dirtest.UserPW)
		if err != nil || strings.Join(u.Roles, ",") != "operator" || !strings.HasPrefix(u.Source, "kerberos") {
			t.Fatalf("alice: %+v %v", u, err)
		}
		_, err = d.Authenticate(ctx, "alice", "wrong password")
		refusedWith(t, err, authz.ErrBadCredentials)
		_, err = d.Authenticate(ctx, "alice@OTHER.REALM", dirtest.UserPW)
		refusedWith(t, err, authz.ErrBadCredentials)
		// Disabled in the directory even though the KDC accepts the password.
		_, err = d.Authenticate(ctx, "carol", dirtest.UserPW)
		refusedWith(t, err, authz.ErrAccountDisabled)
	})

	t.Run("kinit and SPNEGO", func(t *testing.T) {
		cl := krbClient(t, k, "alice")
		tok := negotiateToken(t, cl, k.SPN)
		if os.Getenv("NVR_WRITE_FUZZ_SEEDS") == "1" {
			// A real token (for a key the fuzz keytab does not have) as a deep seed.
			seed := "go test fuzz v1\nstring(\"Negotiate x\")\n[]byte(" + strconv.Quote(string(tok)) + ")\n"
			if err := os.WriteFile(filepath.Join("testdata", "fuzz", "FuzzNegotiate", "real-ticket"), []byte(seed), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		u, err := d.Negotiate(ctx, tok)
		if err != nil || u.Name != "alice" || strings.Join(u.Roles, ",") != "operator" {
			t.Fatalf("SPNEGO alice: %+v %v", u, err)
		}
		// A ticket for another service of the realm is refused.
		_, err = d.Negotiate(ctx, negotiateToken(t, cl, k.Other))
		refusedWith(t, err, authz.ErrBadCredentials)
		// The same token twice is a replay.
		tok = negotiateToken(t, cl, k.SPN)
		if _, err := d.Negotiate(ctx, tok); err != nil {
			t.Fatal(err)
		}
		_, err = d.Negotiate(ctx, tok)
		refusedWith(t, err, authz.ErrBadCredentials)
	})

	t.Run("NTLM is refused", func(t *testing.T) {
		if _, err := ParseNegotiateHeader("NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAF1YAAAADw=="); !errors.Is(err, ErrNTLM) {
			t.Fatalf("NTLM header: %v", err)
		}
		_, err := d.Negotiate(ctx, []byte("NTLMSSP\x00\x01\x00\x00\x00\x07\x82\x08\xa2"))
		refusedWith(t, err, authz.ErrBadCredentials)
	})

	t.Run("KDC and LDAP down", func(t *testing.T) {
		s.Stop()
		cl := krbClient(t, k, "alice")
		_, err := d.Negotiate(ctx, negotiateToken(t, cl, k.SPN))
		refusedWith(t, err, authz.ErrDirectoryUnavailable)
	})

	t.Run("stale keytab", func(t *testing.T) {
		// A keytab from before a key change no longer verifies tickets for the new key.
		k.Admin(t, "cpw -randkey "+k.SPN)
		cl := krbClient(t, k, "bob")
		_, err = d.Negotiate(ctx, negotiateToken(t, cl, k.SPN))
		refusedWith(t, err, authz.ErrBadCredentials)
	})
}
