package netconfig

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/netconfig/nstest"
)

// bins builds camsim once per test process.
var bins struct {
	once sync.Once
	dir  string
	err  error
}

func buildBin(t testing.TB, name string) string {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "netconfig-bin-")
		if bins.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", bins.dir+"/", "./cmd/camsim")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, name)
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(floodEnv); spec != "" {
		os.Exit(floodMain(spec))
	}
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

func clipsDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(repoRoot(), "build", "clips")
	if out, err := exec.Command(filepath.Join(repoRoot(), "scripts", "clips.sh"), dir).CombinedOutput(); err != nil {
		t.Fatalf("scripts/clips.sh: %v\n%s", err, out)
	}
	return dir
}

// camera is a camera namespace with its supplicant files.
type camera struct {
	ns  *nstest.NS
	dir string
	mac string
}

func newCamera(t testing.TB, prefix, port string) *camera {
	cam := &camera{ns: nstest.New(t, prefix), dir: t.TempDir()}
	var self *nstest.NS
	nstest.Veth(t, self, port, cam.ns, "eth0")
	cam.mac = strings.TrimSpace(cam.ns.Exec(t, "cat", "/sys/class/net/eth0/address"))
	script := "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\"; echo \"LEASE $ip\";; esac\n"
	if err := os.WriteFile(filepath.Join(cam.dir, "udhcpc.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return cam
}

// supplicant starts wpa_supplicant (wired) in the camera with the given network block.
func (c *camera) supplicant(t testing.TB, name, network string) *nstest.Proc {
	conf := filepath.Join(c.dir, name+".conf")
	body := fmt.Sprintf("ctrl_interface=%s\nap_scan=0\neapol_version=2\nnetwork={\n\tkey_mgmt=IEEE8021X\n\teapol_flags=0\n%s}\n",
		filepath.Join(c.dir, name+"-ctrl"), network)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return c.ns.Start(t, "wpa_supplicant", "-D", "wired", "-i", "eth0", "-c", conf)
}

// dhcp runs busybox udhcpc once and returns the leased address ("" if none came).
func (c *camera) dhcp(t testing.TB, tries int) string {
	out, _ := c.ns.TryTimeout(30*time.Second, "busybox", "udhcpc", "-i", "eth0", "-s", filepath.Join(c.dir, "udhcpc.sh"),
		"-n", "-q", "-f", "-t", fmt.Sprint(tries), "-T", "1", "-A", "1")
	for _, l := range strings.Split(out, "\n") {
		if ip, ok := strings.CutPrefix(strings.TrimSpace(l), "LEASE "); ok {
			return ip
		}
	}
	return ""
}

func reaches(ns *nstest.NS, ip string, port int) bool {
	if _, err := ns.TryTimeout(5*time.Second, "busybox", "ping", "-c", "1", "-W", "1", ip); err == nil {
		return true
	}
	if port > 0 {
		out, err := ns.TryTimeout(5*time.Second, "busybox", "sh", "-c", fmt.Sprintf("echo x | busybox nc -w 2 %s %d && echo CONNECTED", ip, port))
		if err == nil && strings.Contains(out, "CONNECTED") {
			return true
		}
	}
	return false
}

// TestCameraNetworkAcceptance is issue 7's acceptance test: an appliance namespace (this test, re-run inside
// it), a client namespace and two camera namespaces over veth; hostapd, wpa_supplicant, busybox udhcpc,
// camsim and nvrd are the real peers.
func TestCameraNetworkAcceptance(t *testing.T) {
	if !nstest.InNS(t, "nvr-appl") {
		return
	}
	var self *nstest.NS
	cam1 := newCamera(t, "nvr-cam1", "cam0")
	cam2 := newCamera(t, "nvr-cam2", "cam1")
	client := nstest.New(t, "nvr-client")
	nstest.Veth(t, self, "client0", client, "eth0")
	self.Exec(t, "ip", "addr", "add", "192.168.50.1/24", "dev", "client0")
	client.Exec(t, "ip", "addr", "add", "192.168.50.2/24", "dev", "eth0")
	// A client who knows the camera subnet and routes it through the appliance by hand.
	client.Exec(t, "ip", "route", "add", "10.77.0.0/24", "via", "192.168.50.1")

	state, runtime := t.TempDir(), t.TempDir()
	peapPassword := "peap-" + fmt.Sprint(time.Now().UnixNano())
	var evMu sync.Mutex
	var authEvents []AuthEvent
	m, err := New(ManagerConfig{
		Network: Config{
			Mode:           ModeBridge,
			Ports:          []Port{{Name: "cam0", Auth: true}, {Name: "cam1", Auth: true}},
			Address:        netip.MustParsePrefix("10.77.0.1/24"),
			Client:         "client0",
			ReconcileEvery: 500 * time.Millisecond,
		},
		StateDir:   state,
		RuntimeDir: runtime,
		PEAP:       []PEAPUser{{Identity: "cam2", Password: peapPassword}},
		OnAuth: func(e AuthEvent) {
			evMu.Lock()
			authEvents = append(authEvents, e)
			evMu.Unlock()
		},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// Camera 1: EAP-TLS with a certificate from the appliance's camera CA.
	certPEM, keyPEM, err := m.CA().IssueCamera("cam1", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"ca.pem": m.CA().CertPEM(), "cam.pem": certPEM, "cam.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(cam1.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cam1.supplicant(t, "tls", fmt.Sprintf("\teap=TLS\n\tidentity=\"cam1\"\n\tca_cert=\"%s/ca.pem\"\n\tclient_cert=\"%s/cam.pem\"\n\tprivate_key=\"%s/cam.key\"\n",
		cam1.dir, cam1.dir, cam1.dir))
	// Camera 2: PEAP with a wrong password first.
	if err := os.WriteFile(filepath.Join(cam2.dir, "ca.pem"), m.CA().CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	peap := func(pw string) string {
		return fmt.Sprintf("\teap=PEAP\n\tidentity=\"cam2\"\n\tpassword=\"%s\"\n\tca_cert=\"%s/ca.pem\"\n\tphase2=\"auth=MSCHAPV2\"\n", pw, cam2.dir)
	}
	bad := cam2.supplicant(t, "peap-bad", peap("wrong-password"))

	authorized := func(port, mac string) bool {
		for _, a := range m.Network().Firewall().Authorized() {
			if a == port+"/"+mac {
				return true
			}
		}
		return false
	}
	nstest.WaitFor(t, 60*time.Second, "camera 1 authorized by EAP-TLS", func() bool { return authorized("cam0", cam1.mac) })
	ip1 := cam1.dhcp(t, 5)
	if ip1 == "" {
		t.Fatal("camera 1 got no DHCP lease after authenticating")
	}
	t.Logf("camera 1 (%s) authorized on cam0, leased %s", cam1.mac, ip1)
	leased := false
	for _, l := range m.Leases() {
		leased = leased || (l.MAC == cam1.mac && l.IP == ip1)
	}
	if !leased {
		t.Errorf("lease of camera 1 not in the lease table: %+v", m.Leases())
	}

	// Camera 2 with a wrong password: EAPOL flows (the observer sees its identity), nothing else does.
	nstest.WaitFor(t, 30*time.Second, "camera 2's EAPOL seen on cam1", func() bool {
		s, ok := m.Sightings()[cam2.mac]
		return ok && s.Port == "cam1" && s.Identity == "cam2"
	})
	if ip := cam2.dhcp(t, 3); ip != "" {
		t.Fatalf("camera 2 without valid credentials got a lease: %s", ip)
	}
	cam2.ns.Exec(t, "ip", "addr", "add", "10.77.0.222/24", "dev", "eth0")
	if reaches(cam2.ns, "10.77.0.1", 0) {
		t.Fatal("an unauthenticated camera reaches the appliance")
	}
	if authorized("cam1", cam2.mac) {
		t.Fatal("camera 2 authorized with a wrong password")
	}
	ctr, err := m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if ctr[CounterUnauth].Packets == 0 {
		t.Errorf("unauthenticated frames not counted: %+v", ctr)
	}
	bad.Stop()
	cam2.ns.Exec(t, "ip", "addr", "flush", "dev", "eth0")

	// Camera 2 with the right PEAP password (the fallback) is let in.
	cam2.supplicant(t, "peap", peap(peapPassword))
	nstest.WaitFor(t, 60*time.Second, "camera 2 authorized by PEAP-MSCHAPv2", func() bool { return authorized("cam1", cam2.mac) })
	ip2 := cam2.dhcp(t, 5)
	if ip2 == "" || ip2 == ip1 {
		t.Fatalf("camera 2 lease %q (camera 1 has %s)", ip2, ip1)
	}

	// Record camera 1: camsim inside its namespace, nvrd in the appliance namespace.
	camsimDir := t.TempDir()
	pwFile := filepath.Join(camsimDir, "pw")
	camPW := "cam-" + fmt.Sprint(time.Now().UnixNano())
	if err := os.WriteFile(pwFile, []byte(camPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(camsimDir, "ready.json")
	cs := cam1.ns.Start(t, buildBin(t, "camsim"), "-rtsp", ip1+":0", "-cameras", "1", "-clips", clipsDir(t), "-user", "admin",
		"-password-file", pwFile, "-ready-file", ready, "-log-level", "warn")
	var addrs struct{ RTSP string }
	nstest.WaitFor(t, 30*time.Second, "camsim ready", func() bool {
		if cs.Exited() {
			t.Fatalf("camsim exited:\n%s", cs.Output())
		}
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &addrs) == nil && addrs.RTSP != ""
	})
	_, portStr, _ := strings.Cut(addrs.RTSP, ":")
	var rtspPort int
	fmt.Sscan(portStr, &rtspPort)
	// The recording pipeline runs in this process, hence in the appliance namespace.
	rec := startRecording(t, "cam1", "rtsp://"+addrs.RTSP+"/cam1", "admin", camPW)
	nstest.WaitFor(t, 90*time.Second, "a closed segment of camera 1", func() bool { return rec.rec.Status().Segments > 0 })

	// Isolation: the client reaches no camera (even with its hand-made route), cameras reach neither each
	// other nor the client.
	checkIsolation := func(when string) {
		t.Helper()
		for _, c := range []struct {
			from *nstest.NS
			what string
			ip   string
			port int
		}{
			{client, "client → camera 1", ip1, rtspPort},
			{client, "client → camera 2", ip2, 0},
			{client, "client → appliance's camera address", "10.77.0.1", 0},
			{cam1.ns, "camera 1 → camera 2", ip2, 0},
			{cam2.ns, "camera 2 → camera 1", ip1, rtspPort},
			{cam1.ns, "camera 1 → client", "192.168.50.2", 0},
		} {
			if reaches(c.from, c.ip, c.port) {
				t.Errorf("%s: %s (%s) is reachable", when, c.what, c.ip)
			}
		}
	}
	cam1.ns.Exec(t, "ip", "route", "add", "192.168.50.0/24", "via", "10.77.0.1")
	checkIsolation("after setup")
	ctr, err = m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if ctr[CounterFwdToCamera].Packets == 0 || ctr[CounterFwdFromCamera].Packets == 0 {
		t.Errorf("forward drops not counted: %+v", ctr)
	}

	// A rule deleted by hand comes back.
	handle := ruleHandle(t, self, "inet", "forward", "nvr:to-cam")
	self.Exec(t, "nft", "delete", "rule", "inet", "nvr", "forward", "handle", handle)
	nstest.WaitFor(t, 20*time.Second, "reconcile to restore the deleted rule", func() bool {
		d, err := m.Network().Firewall().Drift()
		return err == nil && len(d) == 0 && m.Drifts() > 0
	})
	checkIsolation("after reconcile")
	if !authorized("cam0", cam1.mac) {
		t.Error("reconcile lost camera 1's authorization")
	}
	if st := rec.rec.Status(); !st.Recording || time.Since(st.LastWrite) > 5*time.Second {
		t.Errorf("camera 1 no longer recorded: %+v", st)
	}
	evMu.Lock()
	defer evMu.Unlock()
	var kinds []string
	for _, e := range authEvents {
		kinds = append(kinds, e.Port+":"+e.Kind)
	}
	t.Logf("802.1X events: %v", kinds)
}
