package authz

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzWebAuthnJSON feeds arbitrary bytes to the parsers of browsers' WebAuthn responses.
func FuzzWebAuthnJSON(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA"}}`,
		`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"AAAA","signature":"AAAA","userHandle":null}}`,
		`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIiwiY2hhbGxlbmdlIjoiQUFBQSIsIm9yaWdpbiI6Imh0dHBzOi8vbG9jYWxob3N0In0","attestationObject":"o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YVgl"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseWebAuthnCreation(b)
		_, _ = ParseWebAuthnAssertion(b)
	})
}

// FuzzVerifyLog feeds arbitrary bytes to the audit log verifier (it reads exported, untrusted files).
func FuzzVerifyLog(f *testing.F) {
	f.Add([]byte(`{"e":{"seq":1,"time":"2026-11-23T10:00:00Z","kind":"event","prev":""},"h":"00"}` + "\n"))
	f.Add([]byte(`{"e":{"seq":1,"kind":"checkpoint","checkpoint":{"size":0,"head":"","key":"AAAA","sig":"AAAA"},"prev":""},"h":"x"}` + "\n"))
	f.Add([]byte("\n\n{\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := VerifyLog(bytes.NewReader(b), nil)
		if err == nil && rep.Entries > uint64(bytes.Count(b, []byte("\n"))+1) {
			t.Fatalf("%d entries from %d lines", rep.Entries, bytes.Count(b, []byte("\n"))+1)
		}
		// With anchors (from the evidence log), whatever the file: an anchor never matches what is not there.
		anchors := []ExternalAnchor{{Size: 1, Head: "00", Signed: true}, {Size: 2, Head: strings.Repeat("ab", 32)}, {Size: 1 << 40}}
		rep, err = VerifyLogWith(bytes.NewReader(b), VerifyOptions{Anchors: anchors})
		if err == nil && (rep.OK() || rep.SignedAnchored > rep.Entries || rep.ExternalAnchors > 2) {
			t.Fatalf("anchors beyond the file accepted: %+v", rep)
		}
	})
}

// FuzzParseSchedule feeds arbitrary text to the schedule parser of the roles form.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"", "Mon-Fri 08:00-18:00", "zone Europe/Berlin; Sat 09:00-13:00", "Sun-Sat 00:00-24:00", "Fri-Mon 22:00-23:59", "mon 8-9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sch, err := ParseSchedule(s)
		if err != nil || sch == nil {
			return
		}
		again, err := ParseSchedule(sch.String())
		if err != nil {
			t.Fatalf("round trip of %q: %v", sch.String(), err)
		}
		if again.String() != sch.String() {
			t.Fatalf("round trip changed %q to %q", sch.String(), again.String())
		}
	})
}
