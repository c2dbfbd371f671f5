package directory

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// adExchange runs an AD-flavoured login against scripted answers and returns the search filters sent.
func adExchange(t *testing.T, d *Directory, answers [][]byte) ([]string, error) {
	t.Helper()
	var data []byte
	for _, a := range answers {
		data = append(data, a...)
	}
	var mu sync.Mutex
	var filters []string
	cs, ss := net.Pipe()
	go fakeLDAPSeen(ss, data, func(p *ber.Packet) {
		if len(p.Children) < 2 || p.Children[1].Tag != ldap.ApplicationSearchRequest {
			return
		}
		f, err := ldap.DecompileFilter(p.Children[1].Children[6])
		if err == nil {
			mu.Lock()
			filters = append(filters, f)
			mu.Unlock()
		}
	})
	c := ldap.NewConn(cs, false)
	c.Start()
	c.SetTimeout(2 * time.Second)
	defer c.Close()
	info, err := d.lookup(c, "alice")
	if err == nil {
		err = d.userBind(c, info, "password")
	}
	if err == nil {
		_, err = d.vouch(info, "ad")
	}
	mu.Lock()
	defer mu.Unlock()
	return filters, err
}

// TestActiveDirectoryRules checks what only an Active Directory can answer (no AD runs here): the
// sAMAccountName search, nested groups in one LDAP_MATCHING_RULE_IN_CHAIN query, the ACCOUNTDISABLE bit
// of userAccountControl, and the "data 533/775" sub-codes of a refused bind.
func TestActiveDirectoryRules(t *testing.T) {
	d := fuzzDirectory(t, KindAD)
	bindOK := chunk(true, ldapResult(ldap.ApplicationBindResponse, 0, ""))
	done := chunk(true, ldapResult(ldap.ApplicationSearchResultDone, 0, ""))
	user := func(uac string) []byte {
		return chunk(false, ldapEntry("CN=Alice,OU=People,DC=example,DC=test", map[string][]string{"sAMAccountName": {"Alice"}, "userAccountControl": {uac}}))
	}
	group := chunk(false, ldapEntry("CN=ops,DC=example,DC=test", nil))

	filters, err := adExchange(t, d, [][]byte{bindOK, user("512"), done, done, group, done, bindOK})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"sAMAccountName=alice", "(employeeType=disabled)", "(member:1.2.840.113556.1.4.1941:=CN=Alice,OU=People,DC=example,DC=test)"}
	all := strings.Join(filters, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("no %q in the filters sent:\n%s", w, all)
		}
	}

	_, err = adExchange(t, d, [][]byte{bindOK, user("514"), done, group, done, bindOK})
	if !errors.Is(err, authz.ErrAccountDisabled) {
		t.Fatalf("userAccountControl 514: %v", err)
	}
	for _, diag := range []string{"80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 533, v4563", "data 775, v4563"} {
		_, err = adExchange(t, d, [][]byte{bindOK, user("512"), done, done, group, done, chunk(true, ldapResult(ldap.ApplicationBindResponse, 49, diag))})
		if !errors.Is(err, authz.ErrAccountDisabled) {
			t.Fatalf("%s: %v", diag, err)
		}
	}
	_, err = adExchange(t, d, [][]byte{bindOK, user("512"), done, done, group, done, chunk(true, ldapResult(ldap.ApplicationBindResponse, 49, "data 52e, v4563"))})
	if !errors.Is(err, authz.ErrBadCredentials) {
		t.Fatalf("data 52e: %v", err)
	}
}
