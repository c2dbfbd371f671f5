package bridge

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// xorSealer stands in for the TPM in this unit test of the key file logic; the e2e test seals with swtpm.
type xorSealer struct{ fail bool }

func (s xorSealer) Seal(b []byte) ([]byte, error) {
	out := append([]byte("sealed:"), b...)
	for i := 7; i < len(out); i++ {
		out[i] ^= 0x5a
	}
	return out, nil
}

func (s xorSealer) Unseal(b []byte) ([]byte, error) {
	if s.fail || !bytes.HasPrefix(b, []byte("sealed:")) {
		return nil, errors.New("unseal refused")
	}
	out := append([]byte(nil), b[7:]...)
	for i := range out {
		out[i] ^= 0x5a
	}
	return out, nil
}

// TestCredentials: a credential is derived (nothing secret is stored), survives a restart, rotates,
// and is revoked; the key file is sealed when a sealer is given and cannot be opened without it.
func TestCredentials(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCredentials(dir, xorSealer{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s1, info, err := c.issue("vms", created)
	if err != nil {
		t.Fatal(err)
	}
	if info.Serial != 1 || !strings.HasPrefix(s1, keyPrefix) || len(s1) < 32 {
		t.Fatalf("issued %+v, secret of %d chars", info, len(s1))
	}
	for _, f := range []string{keyFile, credsFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(s1)) || bytes.Contains(b, []byte(strings.TrimPrefix(s1, keyPrefix))) {
			t.Fatalf("%s holds the credential", f)
		}
		if st, _ := os.Stat(filepath.Join(dir, f)); st.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s is readable by others: %v", f, st.Mode())
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, keyFile)); b[0] != keySealed {
		t.Fatal("the key is not sealed")
	}
	c2, err := OpenCredentials(dir, xorSealer{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, ok := c2.secret("vms", created); !ok || got != s1 {
		t.Fatal("the credential changed across a restart")
	}
	if _, err := OpenCredentials(dir, nil, nil, nil); err == nil {
		t.Fatal("a sealed key opened without the TPM")
	}
	if _, err := OpenCredentials(dir, xorSealer{fail: true}, nil, nil); err == nil {
		t.Fatal("a key opened though unsealing failed")
	}
	s2, info, err := c2.issue("vms", created)
	if err != nil || info.Serial != 2 || s2 == s1 {
		t.Fatalf("rotation: serial %d, same secret %v, %v", info.Serial, s2 == s1, err)
	}
	if other, _, _ := c2.issue("other", created); other == s2 {
		t.Fatal("two accounts share a credential")
	}
	if again, _, _ := c2.secret("vms", created.Add(time.Second)); again == s2 {
		t.Fatal("an account created again under the same name inherits the credential")
	}
	if err := c2.revoke("vms"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := c2.secret("vms", created); ok {
		t.Fatal("a revoked credential still verifies")
	}
	if err := c2.revoke("vms"); !errors.Is(err, ErrNoCredential) {
		t.Fatalf("revoking twice: %v", err)
	}
	if got := c2.List(); len(got) != 1 || got[0].User != "other" {
		t.Fatalf("list: %+v", got)
	}
	// Another appliance (another key) derives other credentials.
	c3, err := OpenCredentials(t.TempDir(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s, _, _ := c3.issue("other", created); s == s2 {
		t.Fatal("two appliances derive the same credential")
	}
}

// TestNonce: a nonce is valid for its address within its lifetime only, and cannot be forged.
func TestNonce(t *testing.T) {
	c, err := OpenCredentials(t.TempDir(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC)
	a := &authenticator{creds: c, now: func() time.Time { return now }, rnd: zeroReader{}, nonceTTL: time.Hour}
	n := a.newNonce("192.0.2.7")
	if !a.checkNonce(n, "192.0.2.7") {
		t.Fatal("a fresh nonce is refused")
	}
	if a.checkNonce(n, "192.0.2.8") {
		t.Fatal("a nonce is accepted from another address")
	}
	b := []byte(n)
	b[3] ^= 1
	if a.checkNonce(string(b), "192.0.2.7") {
		t.Fatal("a forged nonce is accepted")
	}
	now = now.Add(61 * time.Minute)
	if a.checkNonce(n, "192.0.2.7") {
		t.Fatal("an expired nonce is accepted")
	}
}

// TestParseRange covers the Range forms of RFC 2326 and ONVIF replay that the bridge serves.
func TestParseRange(t *testing.T) {
	base := time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC)
	for _, tc := range []struct {
		in      string
		want    playRange
		wantErr bool
	}{
		{in: "clock=20261123T101500Z-", want: playRange{Start: base}},
		{in: "clock=20261123T101500.25Z-20261123T101600Z", want: playRange{Start: base.Add(250 * time.Millisecond), End: base.Add(time.Minute)}},
		{in: "clock=20261123T101500Z-;time=20261123T101400Z", want: playRange{Start: base}},
		{in: "npt=0.000-", want: playRange{}},
		{in: "npt=12.5-20", want: playRange{NPT: 12500 * time.Millisecond, NPTEnd: 20 * time.Second}},
		{in: "npt=1:02:03-", want: playRange{NPT: time.Hour + 2*time.Minute + 3*time.Second}},
		{in: "npt=now-", want: playRange{Now: true}},
		{in: "clock=20261123T101600Z-20261123T101500Z", wantErr: true},
		{in: "clock=2026-11-23T10:15:00Z-", wantErr: true},
		{in: "clock=20261123T101500-", wantErr: true},
		{in: "npt=5-3", wantErr: true},
		{in: "npt=1:60:00-", wantErr: true},
		{in: "npt=-5-", wantErr: true},
		{in: "smpte=10:00:00-", wantErr: true},
		{in: "clock=20261123T101500.1234567890Z-", wantErr: true},
		{in: strings.Repeat("x", 300), wantErr: true},
	} {
		got, ok, err := parseRange(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if err == nil && (!ok || !got.Start.Equal(tc.want.Start) || !got.End.Equal(tc.want.End) || got.NPT != tc.want.NPT ||
			got.NPTEnd != tc.want.NPTEnd || got.Now != tc.want.Now) {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if formatClock(base.Add(250*time.Millisecond)) != "20261123T101500.250Z" || formatClock(base) != "20261123T101500Z" {
		t.Error("formatClock")
	}
	for in, want := range map[string]float64{"": 1, "1": 1, "2": 2, "0.5": 0.5, "8": 8} {
		if got, err := parseScale(in); err != nil || got != want {
			t.Errorf("Scale %q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"-1", "0", "16", "nan", "inf", "1e9"} {
		if _, err := parseScale(in); err == nil {
			t.Errorf("Scale %q accepted", in)
		}
	}
	if _, _, err := queryRange("start=20261123T101500Z&x=1"); err == nil {
		t.Error("unknown query parameter accepted")
	}
	if r, ok, err := queryRange("start=20261123T101500Z&end=20261123T101600Z"); err != nil || !ok || !r.End.Equal(base.Add(time.Minute)) {
		t.Errorf("query: %+v %v %v", r, ok, err)
	}
	for p, want := range map[string]target{"/cam1": {camera: "cam1"}, "cam1/live": {camera: "cam1"}, "/cam-2/replay/": {camera: "cam-2", replay: true}} {
		if got, ok := parsePath(p); !ok || got != want {
			t.Errorf("path %q: %+v %v", p, got, ok)
		}
	}
	for _, p := range []string{"", "/", "/../x", "/cam1/other", "/cam 1", "/cam1/replay/x"} {
		if _, ok := parsePath(p); ok {
			t.Errorf("path %q accepted", p)
		}
	}
}
