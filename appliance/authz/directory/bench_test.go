package directory

import (
	"context"
	"testing"

	"github.com/edgenvr/nvr/appliance/authz/directory/dirtest"
)

// BenchmarkLDAPSLogin is one directory password check against slapd: connect, TLS handshake with the
// pinned CA, service bind, user search, disabled check, nested group walk, user bind.
func BenchmarkLDAPSLogin(b *testing.B) {
	s := dirtest.StartSlapd(b)
	d, err := New(ldapSettings(s), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := d.Authenticate(ctx, "dave", dirtest.UserPW); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKerberosPasswordLogin is one password check through the KDC (AS exchange, a service ticket
// checked with the keytab) plus the LDAPS group lookup.
func BenchmarkKerberosPasswordLogin(b *testing.B) {
	s := dirtest.StartSlapd(b)
	k := dirtest.StartKDC(b, "nvr.example.test")
	d, err := New(kerberosSettings(s, k), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := d.Authenticate(ctx, "alice", dirtest.UserPW); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNegotiate is one SPNEGO single sign-on: the token verified with the keytab (replay cache
// included) and the LDAPS lookup. Making each fresh token (client side) is not timed.
func BenchmarkNegotiate(b *testing.B) {
	s := dirtest.StartSlapd(b)
	k := dirtest.StartKDC(b, "nvr.example.test")
	d, err := New(kerberosSettings(s, k), nil)
	if err != nil {
		b.Fatal(err)
	}
	cl := krbClientB(b, k, "alice")
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tok := negotiateTokenB(b, cl, k.SPN)
		b.StartTimer()
		if _, err := d.Negotiate(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
