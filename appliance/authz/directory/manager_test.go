package directory

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgenvr/nvr/appliance/authz/directory/dirtest"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

// TestManagerSealsSecrets stores settings with a real (software) TPM: the settings file holds neither the
// bind password nor the keytab, a restart reads them back, an empty secret on update keeps the stored
// one, and another TPM cannot read them.
func TestManagerSealsSecrets(t *testing.T) {
	s := dirtest.StartSlapd(t)
	open := func() *tpm.TPM {
		tp, err := tpm.Open(swtpmtest.Start(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		return tp
	}
	tp := open()
	path := filepath.Join(t.TempDir(), "directory.json")
	m, err := NewManager(ManagerConfig{Path: path, Sealer: tp}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.NegotiateEnabled() {
		t.Fatal("single sign-on on before any configuration")
	}
	if _, err := m.Update(ldapSettings(s)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(dirtest.ServicePW)) {
		t.Fatal("the bind password is in the settings file")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if got := m.Settings(); got.BindPassword == dirtest.ServicePW || !got.HasBindPassword() {
		t.Fatalf("Settings shows %q", got.BindPassword)
	}

	// A restart: the same TPM unseals; the password works for a login.
	m2, err := NewManager(ManagerConfig{Path: path, Sealer: tp}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := m2.Authenticate(context.Background(), "alice", dirtest.UserPW); err != nil || u.Name != "alice" {
		t.Fatalf("after restart: %+v %v", u, err)
	}
	// The page sends the settings back without the password: it is kept.
	st2 := m2.Settings()
	st2.BindPassword = ""
	st2.Mappings = append(st2.Mappings, Mapping{Group: "cn=extra,ou=groups," + dirtest.Suffix, Role: "auditor"})
	if _, err := m2.Update(st2); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.TestLookup(context.Background(), "alice"); err != nil {
		t.Fatalf("password lost on update: %v", err)
	}
	// Invalid settings are refused and the old ones stay in force.
	bad := m2.Settings()
	bad.URL = "ldap://127.0.0.1:1"
	if _, err := m2.Update(bad); err == nil || !strings.Contains(err.Error(), "clear") {
		t.Fatalf("plaintext accepted: %v", err)
	}
	if _, err := m2.TestLookup(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	// Another TPM cannot open them.
	if _, err := NewManager(ManagerConfig{Path: path, Sealer: open()}, nil); err == nil {
		t.Fatal("another TPM unsealed the directory secrets")
	}
}
