// Package dirtest runs real directory servers for tests: OpenLDAP's slapd (LDAPS with a CA made by the
// test) and MIT Kerberos's krb5kdc, each as the test's own process on a loopback port, with its database
// in t.TempDir and stopped by PID in t.Cleanup. It is imported by tests only and must never be used by
// the appliance itself.
package dirtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Need fails the test (in CI) or skips it with a message (elsewhere) when a program is missing; make test
// installs them through scripts/deps.sh.
func Need(t testing.TB, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			if _, err := os.Stat(p); err == nil {
				continue
			}
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing: run scripts/deps.sh", p)
			}
			t.Skipf("%s is missing (install slapd ldap-utils krb5-kdc krb5-admin-server krb5-user, or run scripts/deps.sh)", p)
		}
	}
}

// FreePort asks the kernel for a free loopback TCP port (and, for the KDC, checks UDP too).
func FreePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("no free port")
	return 0
}

// CA is a certificate authority made for one test.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA makes a P-256 CA.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &CA{Cert: c, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Issue makes a server certificate and key (PEM) for hosts.
func (ca *CA) Issue(t testing.TB, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

// Directory content of the test LDAP server.
const (
	Suffix      = "dc=example,dc=test"
	RootDN      = "cn=admin,dc=example,dc=test"
	RootPW      = "root-secret-pw"
	ServiceDN   = "cn=nvr-svc,ou=services,dc=example,dc=test"
	ServicePW   = "svc-secret-pw"
	Operators   = "cn=nvr-operators,ou=groups,dc=example,dc=test"
	Viewers     = "cn=nvr-viewers,ou=groups,dc=example,dc=test"
	Admins      = "cn=nvr-admins,ou=groups,dc=example,dc=test"
	Supervisors = "cn=supervisors,ou=groups,dc=example,dc=test" // nested in nvr-admins
	UserPW      = "Directory-Pass-1"
)

// UserDN is the DN of a test user.
func UserDN(uid string) string { return "uid=" + uid + ",ou=people," + Suffix }

// Slapd is a running slapd.
type Slapd struct {
	URL    string // ldaps://127.0.0.1:PORT
	CA     *CA
	Port   int
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
	conf   string
	Stop   func() // stops it (for the "directory down" test); idempotent
	Start  func() // starts it again on the same port
}

// seed is the initial content: users alice (operators), bob (viewers), carol (disabled by
// employeeType, in operators), dave (in supervisors, nested in nvr-admins), erin (no group).
func seed() string {
	var b strings.Builder
	w := func(s string) { b.WriteString(s + "\n") }
	w("dn: " + Suffix + "\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n")
	for _, ou := range []string{"people", "groups", "services"} {
		w("dn: ou=" + ou + "," + Suffix + "\nobjectClass: organizationalUnit\nou: " + ou + "\n")
	}
	w("dn: " + ServiceDN + "\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: nvr-svc\nsn: svc\nuserPassword: " + ServicePW + "\n")
	for _, u := range []struct{ uid, extra string }{{"alice", ""}, {"bob", ""}, {"carol", "employeeType: disabled\n"}, {"dave", ""}, {"erin", ""}} {
		w("dn: " + UserDN(u.uid) + "\nobjectClass: inetOrgPerson\nuid: " + u.uid + "\ncn: " + u.uid + "\nsn: " + u.uid + "\n" + u.extra + "userPassword: " + UserPW + "\n")
	}
	w("dn: " + Operators + "\nobjectClass: groupOfNames\ncn: nvr-operators\nmember: " + UserDN("alice") + "\nmember: " + UserDN("carol") + "\n")
	w("dn: " + Viewers + "\nobjectClass: groupOfNames\ncn: nvr-viewers\nmember: " + UserDN("bob") + "\n")
	w("dn: " + Supervisors + "\nobjectClass: groupOfNames\ncn: supervisors\nmember: " + UserDN("dave") + "\n")
	w("dn: " + Admins + "\nobjectClass: groupOfNames\ncn: nvr-admins\nmember: " + Supervisors + "\n")
	return b.String()
}

// StartSlapd runs slapd serving LDAPS only, on a kernel-chosen loopback port, with the seed content.
func StartSlapd(t testing.TB) *Slapd {
	t.Helper()
	Need(t, "/usr/sbin/slapd", "/usr/sbin/slapadd")
	dir := t.TempDir()
	ca := NewCA(t, "Test directory CA")
	cert, key := ca.Issue(t, "127.0.0.1", "localhost")
	for n, b := range map[string][]byte{"ca.pem": ca.CertPEM, "cert.pem": cert, "key.pem": key, "seed.ldif": []byte(seed())} {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile %[1]s/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile %[1]s/ca.pem
TLSCertificateFile %[1]s/cert.pem
TLSCertificateKeyFile %[1]s/key.pem
security ssf=0
access to attrs=userPassword by anonymous auth by self write by * none
access to * by dn.exact="%[2]s" read by self read by * none
database mdb
maxsize 33554432
suffix "%[3]s"
rootdn "%[4]s"
rootpw %[5]s
directory %[1]s/db
`, dir, ServiceDN, Suffix, RootDN, RootPW)
	confPath := filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/sbin/slapadd", "-f", confPath, "-l", filepath.Join(dir, "seed.ldif")).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v\n%s", err, out)
	}
	s := &Slapd{CA: ca, Port: FreePort(t), dir: dir, conf: confPath}
	s.URL = fmt.Sprintf("ldaps://127.0.0.1:%d", s.Port)
	s.Start = func() { s.start(t) }
	s.Stop = s.stop
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *Slapd) start(t testing.TB) {
	t.Helper()
	// -d 0 keeps slapd in the foreground (no daemonizing), so its PID is ours to stop.
	cmd := exec.Command("/usr/sbin/slapd", "-d", "0", "-h", s.URL+"/", "-f", s.conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("slapd: %v", err)
	}
	s.cmd = cmd
	exited := make(chan struct{})
	s.exited = exited
	go func() { _ = cmd.Wait(); close(exited) }()
	pool := x509.NewCertPool()
	pool.AddCert(s.CA.Cert)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("slapd exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("slapd did not accept LDAPS within 15 s: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling interval of the readiness check
	}
}

func (s *Slapd) stop() {
	if s.cmd == nil {
		return
	}
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Admin opens an LDAPS connection bound as the root DN, for tests that change the directory.
func (s *Slapd) Admin(t testing.TB) *ldap.Conn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(s.CA.Cert)
	c, err := ldap.DialURL(s.URL, ldap.DialWithTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Bind(RootDN, RootPW); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// MoveUser takes uid out of group from and puts it into group to.
func (s *Slapd) MoveUser(t testing.TB, uid, from, to string) {
	t.Helper()
	c := s.Admin(t)
	defer c.Close()
	del := ldap.NewModifyRequest(from, nil)
	del.Delete("member", []string{UserDN(uid)})
	if err := c.Modify(del); err != nil {
		t.Fatalf("remove %s from %s: %v", uid, from, err)
	}
	add := ldap.NewModifyRequest(to, nil)
	add.Add("member", []string{UserDN(uid)})
	if err := c.Modify(add); err != nil {
		t.Fatalf("add %s to %s: %v", uid, to, err)
	}
}

// KDC is a running MIT krb5kdc.
type KDC struct {
	Realm   string
	Addr    string // 127.0.0.1:PORT (TCP and UDP)
	Conf    string // krb5.conf path for kinit (KRB5_CONFIG)
	Keytab  []byte // keys of SPN
	SPN     string // HTTP/nvr.example.test
	Other   string // another service principal in the realm (HTTP/other.example.test)
	dir     string
	profile string
}

// StartKDC creates a realm (EXAMPLE.TEST) with principals alice, bob, carol, dave and erin (password
// UserPW), the appliance's service principal HTTP/host and another one (HTTP/other.example.test), exports
// the appliance's keytab and runs krb5kdc in the foreground.
func StartKDC(t testing.TB, host string) *KDC {
	t.Helper()
	Need(t, "/usr/sbin/krb5kdc", "/usr/sbin/kdb5_util", "/usr/sbin/kadmin.local", "kinit")
	dir := t.TempDir()
	port := FreePort(t)
	k := &KDC{Realm: "EXAMPLE.TEST", Addr: fmt.Sprintf("127.0.0.1:%d", port), SPN: "HTTP/" + host, Other: "HTTP/other.example.test", dir: dir}
	k.Conf = filepath.Join(dir, "krb5.conf")
	k.profile = filepath.Join(dir, "kdc.conf")
	krb5 := fmt.Sprintf(`[libdefaults]
    default_realm = %[1]s
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false
    udp_preference_limit = 1
    noaddresses = true
    default_ccache_name = FILE:%[2]s/ccache
[realms]
    %[1]s = {
        kdc = %[3]s
    }
[domain_realm]
    .example.test = %[1]s
    example.test = %[1]s
`, k.Realm, dir, k.Addr)
	kdc := fmt.Sprintf(`[kdcdefaults]
    kdc_ports = %[3]d
    kdc_tcp_ports = %[3]d
[realms]
    %[1]s = {
        database_name = %[2]s/principal
        key_stash_file = %[2]s/stash
        acl_file = %[2]s/kadm5.acl
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
        max_life = 1h
    }
[logging]
    kdc = FILE:%[2]s/kdc.log
`, k.Realm, dir, port)
	for n, b := range map[string]string{k.Conf: krb5, k.profile: kdc, filepath.Join(dir, "kadm5.acl"): ""} {
		if err := os.WriteFile(n, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k.Run(t, "/usr/sbin/kdb5_util", "create", "-s", "-r", k.Realm, "-P", "master-key-pw")
	for _, u := range []string{"alice", "bob", "carol", "dave", "erin"} {
		k.Admin(t, "addprinc -pw "+UserPW+" "+u)
	}
	k.Admin(t, "addprinc -randkey "+k.SPN)
	k.Admin(t, "addprinc -randkey "+k.Other)
	kt := filepath.Join(dir, "http.keytab")
	k.Admin(t, "ktadd -k "+kt+" "+k.SPN)
	b, err := os.ReadFile(kt)
	if err != nil {
		t.Fatal(err)
	}
	k.Keytab = b
	cmd := exec.Command("/usr/sbin/krb5kdc", "-n", "-r", k.Realm)
	cmd.Env = k.Env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("krb5kdc: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", k.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "kdc.log"))
			t.Fatalf("krb5kdc exited: %s\n%s", out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("krb5kdc did not listen within 15 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of the readiness check
	}
	return k
}

// Env is the environment for MIT tools talking to this realm.
func (k *KDC) Env() []string {
	return append(os.Environ(), "KRB5_CONFIG="+k.Conf, "KRB5_KDC_PROFILE="+k.profile, "KRB5CCNAME=FILE:"+filepath.Join(k.dir, "ccache"))
}

// Run runs an MIT tool with the realm's environment and fails the test if it fails.
func (k *KDC) Run(t testing.TB, prog string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = k.Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Admin runs a kadmin.local query.
func (k *KDC) Admin(t testing.TB, query string) {
	t.Helper()
	k.Run(t, "/usr/sbin/kadmin.local", "-r", k.Realm, "-q", query)
}

// Kinit gets a TGT for user into a fresh credential cache and returns its path.
func (k *KDC) Kinit(t testing.TB, user, password string) string {
	t.Helper()
	cc := filepath.Join(t.TempDir(), "ccache-"+user)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kinit", "-c", "FILE:"+cc, user+"@"+k.Realm)
	cmd.Env = k.Env()
	cmd.Stdin = strings.NewReader(password + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kinit %s: %v\n%s", user, err, out)
	}
	if _, err := os.Stat(cc); err != nil {
		t.Fatalf("kinit wrote no cache: %v", errors.Join(err, errors.New(string(out))))
	}
	return cc
}

// Replace sets attr of the entry dn to values (as the root DN).
func (s *Slapd) Replace(t testing.TB, dn, attr string, values ...string) {
	t.Helper()
	c := s.Admin(t)
	defer c.Close()
	m := ldap.NewModifyRequest(dn, nil)
	m.Replace(attr, values)
	if err := c.Modify(m); err != nil {
		t.Fatalf("modify %s: %v", dn, err)
	}
}
