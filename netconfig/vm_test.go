package netconfig

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/netconfig/nstest"
	"github.com/edgenvr/nvr/netconfig/vmtest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vmModules are the kernel modules the VM tests load: links, the VLAN and MACsec drivers with MACsec's
// cipher (gcm(aes)), and what the nftables ruleset uses (libcrc32c, under nf_tables, needs a crc32c first).
var vmModules = []string{"veth", "8021q", "bridge", "macsec", "gcm", "ctr", "ghash_generic", "crc32c_generic",
	"nf_tables", "nft_ct", "nft_fib_inet", "nft_objref", "nft_meta_bridge"}

// TestKernelFeaturesInVM runs what the host kernel lacks (VLAN sub-interfaces, bridge VLAN filtering, MACsec)
// inside qemu on Debian's kernel: on the host it builds the machine and boots it; inside, the subtests run.
func TestKernelFeaturesInVM(t *testing.T) {
	if !vmtest.Inside() {
		nstest.Require(t)
		dir := t.TempDir()
		camsim, err := vmtest.BuildStatic(dir, "./cmd/camsim", repoRoot())
		if err != nil {
			t.Fatal(err)
		}
		vmtest.Run(t, vmtest.Config{
			Modules: vmModules,
			// Whatever else nf_tables asks for on demand.
			ModuleDirs: []string{"kernel/net/netfilter", "kernel/net/bridge/netfilter", "kernel/net/ipv4/netfilter",
				"kernel/net/ipv6/netfilter"},
			Programs: []string{"/usr/sbin/ip", "/usr/sbin/bridge", "/usr/sbin/wpa_supplicant"},
			Files: map[string]string{
				"/usr/bin/camsim": camsim,
				// The machine's camera serves the 720p clip as its main stream: TCG is slow.
				"/clips/h264-1080p.h264": filepath.Join(clipsDir(t), "h264-720p.h264"),
			},
			Env:     map[string]string{"NVRVM_CLIPS": "/clips"},
			Memory:  768,
			Timeout: 4 * time.Minute,
		})
		return
	}
	// IPv6 off by default in every namespace made from here on: a camera on a MACsec link sends nothing
	// in clear, and router solicitations would only clutter the captures.
	for _, p := range []string{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/all/disable_ipv6"} {
		if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile("/proc/sys/net/core/devconf_inherit_init_net", []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("vlan", testVLANInVM)
	t.Run("macsec", testMACsecInVM)
	t.Run("macsec-wrong-key", testMACsecWrongKeyInVM)
}

// runManager runs a Manager until the test ends, then removes its ruleset (the machine is shared by the
// subtests).
func runManager(t *testing.T, cfg ManagerConfig) *Manager {
	t.Helper()
	cfg.StateDir, cfg.RuntimeDir = t.TempDir(), t.TempDir()
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
		if err := m.Network().Firewall().Remove(); err != nil {
			t.Errorf("remove ruleset: %v", err)
		}
	})
	return m
}

// lease runs busybox udhcpc on ifname in ns and returns the leased address ("" if none came).
func lease(t *testing.T, ns *nstest.NS, ifname string, tries int) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	body := "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\"; echo \"LEASE $ip\";; esac\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	out, _ := ns.TryTimeout(60*time.Second, "busybox", "udhcpc", "-i", ifname, "-s", script, "-n", "-q", "-f",
		"-t", fmt.Sprint(tries), "-T", "2", "-A", "1")
	for _, l := range strings.Split(out, "\n") {
		if ip, ok := strings.CutPrefix(strings.TrimSpace(l), "LEASE "); ok {
			return ip
		}
	}
	return ""
}

func pings(ns *nstest.NS, ip string) bool {
	_, err := ns.TryTimeout(10*time.Second, "busybox", "ping", "-c", "1", "-W", "2", ip)
	return err == nil
}

// capture reads every frame on an interface, both directions, through an AF_PACKET socket.
type capture struct {
	fd   int
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	types   map[uint16]int // ether type → frames
	inSrc   map[string]int // source MAC of received frames → frames
	clear   int            // frames holding a plaintext marker
	odd     []string       // the first frames of an unexpected ether type, for the log
	marker  []byte
	readErr error
}

func startCapture(t *testing.T, ifname string, marker []byte) *capture {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	c := &capture{fd: fd, stop: make(chan struct{}), done: make(chan struct{}), types: map[uint16]int{},
		inSrc: map[string]int{}, marker: marker}
	go c.run()
	t.Cleanup(c.Stop)
	return c
}

func (c *capture) run() {
	defer close(c.done)
	defer unix.Close(c.fd)
	buf := make([]byte, 65536)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		if n < 14 {
			continue
		}
		f := buf[:n]
		c.mu.Lock()
		et := uint16(f[12])<<8 | uint16(f[13])
		c.types[et]++
		if et != 0x88e5 && et != EtherTypeEAPOL && len(c.odd) < 8 {
			c.odd = append(c.odd, fmt.Sprintf("%s → %s type %#04x: % x", net.HardwareAddr(f[6:12]), net.HardwareAddr(f[:6]), et, f[14:min(n, 80)]))
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype != unix.PACKET_OUTGOING {
			c.inSrc[net.HardwareAddr(f[6:12]).String()]++
		}
		if len(c.marker) > 0 && bytes.Contains(f, c.marker) {
			c.clear++
		}
		c.mu.Unlock()
	}
}

// Stop ends the capture (idempotent).
func (c *capture) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *capture) snapshot() (types map[uint16]int, inSrc map[string]int, clear int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	types, inSrc = map[uint16]int{}, map[string]int{}
	for k, v := range c.types {
		types[k] = v
	}
	for k, v := range c.inSrc {
		inSrc[k] = v
	}
	return types, inSrc, c.clear, c.readErr
}

func macOf(t *testing.T, ns *nstest.NS, ifname string) string {
	t.Helper()
	return strings.TrimSpace(ns.Exec(t, "cat", "/sys/class/net/"+ifname+"/address"))
}

// testVLANInVM: the camera network on VLAN 100 of a trunk, applied by netconfig. A switch namespace with a
// VLAN-filtering bridge has three access ports: the camera on VLAN 100, a rogue device on VLAN 200 and a
// device on the untagged native VLAN. Only the camera gets a lease and reaches the appliance, only its
// frames arrive on the camera VLAN interface, untagged IP on the trunk is dropped and counted, and a VLAN
// interface deleted by hand comes back.
func testVLANInVM(t *testing.T) {
	var self *nstest.NS
	sw := nstest.New(t, "sw")
	cam := nstest.New(t, "cam")
	rogue := nstest.New(t, "rogue")
	native := nstest.New(t, "native")
	nstest.Veth(t, self, "trunk0", sw, "up0")
	nstest.Veth(t, sw, "p1", cam, "eth0")
	nstest.Veth(t, sw, "p2", rogue, "eth0")
	nstest.Veth(t, sw, "p3", native, "eth0")
	sw.Exec(t, "ip", "link", "add", "sw", "type", "bridge", "vlan_filtering", "1", "vlan_default_pvid", "0")
	for _, p := range []string{"up0", "p1", "p2", "p3"} {
		sw.Exec(t, "ip", "link", "set", p, "master", "sw")
	}
	sw.Exec(t, "ip", "link", "set", "sw", "up")
	for _, v := range [][]string{
		{"up0", "100"}, {"up0", "200"}, {"up0", "1", "pvid", "untagged"}, // the trunk: 100 and 200 tagged, 1 native
		{"p1", "100", "pvid", "untagged"}, {"p2", "200", "pvid", "untagged"}, {"p3", "1", "pvid", "untagged"},
	} {
		sw.Exec(t, append([]string{"bridge", "vlan", "add", "dev", v[0], "vid", v[1]}, v[2:]...)...)
	}
	t.Logf("switch VLANs:\n%s", sw.Exec(t, "bridge", "vlan", "show"))

	m := runManager(t, ManagerConfig{Network: Config{Mode: ModeVLAN, Trunk: "trunk0", VLAN: 100,
		Address: netip.MustParsePrefix("10.77.0.1/24"), ReconcileEvery: 300 * time.Millisecond}})
	vif := m.Network().CameraInterface()
	hasAddr := func() bool {
		l, err := netlink.LinkByName(vif)
		if err != nil {
			return false
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		return err == nil && len(addrs) == 1 && addrs[0].IP.Equal(net.IPv4(10, 77, 0, 1))
	}
	nstest.WaitFor(t, 30*time.Second, "the camera VLAN interface with its address", hasAddr)
	l, _ := netlink.LinkByName(vif)
	if v, ok := l.(*netlink.Vlan); !ok || v.VlanId != 100 {
		t.Fatalf("%s is %T, not VLAN 100", vif, l)
	}
	capt := startCapture(t, vif, nil)
	trunkMAC := macOf(t, self, "trunk0")

	camIP := lease(t, cam, "eth0", 5)
	if !strings.HasPrefix(camIP, "10.77.0.") {
		t.Fatalf("the camera on VLAN 100 got no lease (%q)", camIP)
	}
	// The camera side may reach the appliance for DHCP and replies only: the appliance pings the camera.
	if !pings(self, camIP) {
		t.Fatal("the appliance does not reach the camera on VLAN 100")
	}
	t.Logf("camera on VLAN 100 leased %s", camIP)
	before, err := m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		ns   *nstest.NS
		what string
		ip   string
	}{{rogue, "device on VLAN 200", "10.77.0.201"}, {native, "untagged device", "10.77.0.202"}} {
		if ip := lease(t, o.ns, "eth0", 2); ip != "" {
			t.Errorf("%s got a lease: %s", o.what, ip)
		}
		// It knows the appliance's addresses and sends to them anyway: nothing comes back.
		o.ns.Exec(t, "ip", "addr", "add", o.ip+"/24", "dev", "eth0")
		o.ns.Exec(t, "ip", "neigh", "replace", "10.77.0.1", "lladdr", trunkMAC, "dev", "eth0")
		if pings(o.ns, "10.77.0.1") {
			t.Errorf("%s reaches the appliance", o.what)
		}
	}
	after, err := m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after[CounterDead].Packets <= before[CounterDead].Packets {
		t.Errorf("untagged IP on the trunk not dropped and counted: %+v → %+v", before[CounterDead], after[CounterDead])
	}
	capt.Stop()
	_, srcs, _, err := capt.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	camMAC := macOf(t, cam, "eth0")
	if srcs[camMAC] == 0 {
		t.Errorf("no frame of the camera (%s) seen on %s: %v", camMAC, vif, srcs)
	}
	for mac := range srcs {
		if mac != camMAC {
			t.Errorf("a frame from %s (not the camera) arrived on the camera VLAN: %v (rogue %s, native %s)",
				mac, srcs, macOf(t, rogue, "eth0"), macOf(t, native, "eth0"))
		}
	}

	// Drift: the VLAN interface deleted by hand is put back with its address, and the camera reaches the
	// appliance again.
	self.Exec(t, "ip", "link", "del", vif)
	nstest.WaitFor(t, 30*time.Second, "reconcile to recreate "+vif, hasAddr)
	nstest.WaitFor(t, 30*time.Second, "the appliance to reach the camera again", func() bool { return pings(self, camIP) })
}

var macsecLinkRE = regexp.MustCompile(`^\d+: ([^:@]+)@eth0:`)

// testMACsecInVM: a camera port with MKA (wpa_supplicant, macsec_linux, pre-shared CAK) on both ends. The
// camera gets its lease over MACsec, camsim in the camera namespace is recorded by ingest+record in the
// appliance, and a capture on the port's raw link shows nothing but MACsec and EAPOL-MKA frames, with no
// RTSP in clear.
func testMACsecInVM(t *testing.T) {
	var self *nstest.NS
	cam := nstest.New(t, "mcam")
	// The link comes up only once neither end can speak IPv6 in clear (a MACsec camera sends nothing
	// outside MACsec but MKA; netconfig does the same for the appliance's port).
	self.Exec(t, "ip", "link", "add", "cam0", "type", "veth", "peer", "name", "eth0", "netns", cam.Name)
	cam.Exec(t, "busybox", "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6")
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/cam0/disable_ipv6", []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cam.Exec(t, "ip", "link", "set", "eth0", "up")
	self.Exec(t, "ip", "link", "set", "cam0", "up")
	t.Logf("appliance port cam0 %s, camera eth0 %s", macOf(t, self, "cam0"), macOf(t, cam, "eth0"))
	capt := startCapture(t, "cam0", []byte("RTSP/1.0"))
	key := MACsecKey{CAK: make([]byte, 16), CKN: make([]byte, 16)}
	if _, err := rand.Read(key.CAK); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(key.CKN); err != nil {
		t.Fatal(err)
	}
	m := runManager(t, ManagerConfig{Network: Config{Mode: ModeBridge, Ports: []Port{{Name: "cam0", MACsec: &key}},
		Address: netip.MustParsePrefix("10.77.0.1/24"), ReconcileEvery: 300 * time.Millisecond}})

	// The camera's end: the same CAK and CKN; the appliance (priority 0) is the key server.
	dir := t.TempDir()
	conf := filepath.Join(dir, "wpa.conf")
	body := fmt.Sprintf("eapol_version=3\nap_scan=0\nnetwork={\n\tkey_mgmt=NONE\n\teapol_flags=0\n\tmacsec_policy=1\n"+
		"\tmacsec_integ_only=0\n\tmka_priority=255\n\tmka_cak=%s\n\tmka_ckn=%s\n}\n", hex.EncodeToString(key.CAK), hex.EncodeToString(key.CKN))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	supp := cam.Start(t, "wpa_supplicant", "-D", "macsec_linux", "-i", "eth0", "-c", conf)

	start := time.Now()
	var camIf string
	nstest.WaitFor(t, 60*time.Second, "MKA to create the camera's MACsec interface", func() bool {
		if supp.Exited() {
			t.Fatalf("camera wpa_supplicant exited:\n%s", supp.Output())
		}
		out, _ := cam.Try("ip", "-o", "link", "show", "type", "macsec")
		for _, l := range strings.Split(out, "\n") {
			if mm := macsecLinkRE.FindStringSubmatch(l); mm != nil {
				camIf = mm[1]
				return true
			}
		}
		return false
	})
	nstest.WaitFor(t, 60*time.Second, "the appliance's MACsec interface in the camera bridge", func() bool {
		name := macsecOf("cam0")
		if name == "" {
			return false
		}
		l, err := netlink.LinkByName(name)
		br, berr := netlink.LinkByName(m.Network().CameraInterface())
		return err == nil && berr == nil && l.Attrs().MasterIndex == br.Attrs().Index
	})
	cam.Exec(t, "ip", "link", "set", camIf, "up")
	t.Logf("MKA up in %v: camera %s, appliance %s", time.Since(start).Round(100*time.Millisecond), camIf, macsecOf("cam0"))

	camIP := ""
	nstest.WaitFor(t, 90*time.Second, "a lease over MACsec", func() bool {
		camIP = lease(t, cam, camIf, 3)
		return camIP != ""
	})
	if !pings(self, camIP) {
		t.Fatal("the appliance does not reach the camera over MACsec")
	}
	t.Logf("camera leased %s over %s", camIP, camIf)

	// camsim in the camera namespace, recorded through the MACsec link.
	pw := "cam-" + hex.EncodeToString(key.CKN[:4])
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "ready.json")
	cs := cam.Start(t, "camsim", "-rtsp", camIP+":0", "-cameras", "1", "-clips", os.Getenv("NVRVM_CLIPS"), "-user", "admin",
		"-password-file", pwFile, "-ready-file", ready, "-log-level", "warn")
	var addrs struct{ RTSP string }
	nstest.WaitFor(t, 60*time.Second, "camsim ready", func() bool {
		if cs.Exited() {
			t.Fatalf("camsim exited:\n%s", cs.Output())
		}
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &addrs) == nil && addrs.RTSP != ""
	})
	rec := startRecording(t, "mcam", "rtsp://"+addrs.RTSP+"/cam1", "admin", pw)
	nstest.WaitFor(t, 90*time.Second, "a closed segment recorded over MACsec", func() bool { return rec.rec.Status().Segments > 0 })
	st := rec.rec.Status()
	t.Logf("recorded over MACsec: %+v", st)

	capt.Stop()
	types, _, clear, err := capt.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("frames on the raw link by ether type: %v", types)
	capt.mu.Lock()
	for _, o := range capt.odd {
		t.Logf("unexpected frame: %s", o)
	}
	capt.mu.Unlock()
	for et, n := range types {
		if et != 0x88e5 && et != EtherTypeEAPOL {
			t.Errorf("%d frames of ether type %#04x on the MACsec port's raw link", n, et)
		}
	}
	if types[0x88e5] < 100 || types[EtherTypeEAPOL] == 0 {
		t.Errorf("want MACsec frames (the recording) and EAPOL-MKA frames: %v", types)
	}
	if clear > 0 {
		t.Errorf("%d frames on the raw link carry RTSP in clear", clear)
	}
}

// macsecPort makes a camera port name in the appliance, its other end eth0 in a new namespace, both up with
// IPv6 off (see testMACsecInVM).
func macsecPort(t *testing.T, name, nsPrefix string) *nstest.NS {
	t.Helper()
	var self *nstest.NS
	ns := nstest.New(t, nsPrefix)
	self.Exec(t, "ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	ns.Exec(t, "busybox", "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6")
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.Exec(t, "ip", "link", "set", "eth0", "up")
	self.Exec(t, "ip", "link", "set", name, "up")
	return ns
}

func randomKey(t *testing.T) MACsecKey {
	t.Helper()
	k := MACsecKey{CAK: make([]byte, 16), CKN: make([]byte, 16)}
	if _, err := rand.Read(k.CAK); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(k.CKN); err != nil {
		t.Fatal(err)
	}
	return k
}

// startCameraMKA runs a camera's wpa_supplicant (MKA, macsec_linux) on eth0 of ns with key.
func startCameraMKA(t *testing.T, ns *nstest.NS, key MACsecKey) *nstest.Proc {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "wpa.conf")
	body := fmt.Sprintf("eapol_version=3\nap_scan=0\nnetwork={\n\tkey_mgmt=NONE\n\teapol_flags=0\n\tmacsec_policy=1\n"+
		"\tmacsec_integ_only=0\n\tmka_priority=255\n\tmka_cak=%s\n\tmka_ckn=%s\n}\n", hex.EncodeToString(key.CAK), hex.EncodeToString(key.CKN))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return ns.Start(t, "wpa_supplicant", "-D", "macsec_linux", "-i", "eth0", "-c", conf)
}

// testMACsecWrongKeyInVM: the negative case of a MACsec camera port. Three ports: mk0 with the right camera
// (the time its MKA takes to secure the port is the yardstick), mk1 with a camera holding another CAK under
// the port's CKN, mk2 with a camera holding another CAK and CKN. wpa_supplicant makes each port's MACsec
// interface as soon as MKA runs, peer or not; what a wrong key never gets is a receive secure channel. So,
// within max(20 s, 3× the good port's time): mk1 and mk2 never get a receive secure channel (the kernel, read
// with ip macsec) and their raw ports never join the camera bridge; the rogue cameras get no lease, in clear
// or over MACsec interfaces of their own; their clear-text DHCP, ARP and IP and their MACsec frames reach
// neither the bridge nor the appliance (a capture on the bridge, the dead-port drop counter, the SecY's
// unknown-channel drops); and netconfig reports mk1 and mk2 not secured with the rogue camera as the peer,
// mk0 secured.
func testMACsecWrongKeyInVM(t *testing.T) {
	var self *nstest.NS
	good := macsecPort(t, "mk0", "mkok")
	rogueCAK := macsecPort(t, "mk1", "mkcak")
	rogueCKN := macsecPort(t, "mk2", "mkckn")
	k0, k1, k2 := randomKey(t), randomKey(t), randomKey(t)
	m := runManager(t, ManagerConfig{Network: Config{Mode: ModeBridge,
		Ports:   []Port{{Name: "mk0", MACsec: &k0}, {Name: "mk1", MACsec: &k1}, {Name: "mk2", MACsec: &k2}},
		Address: netip.MustParsePrefix("10.77.0.1/24"), ReconcileEvery: 300 * time.Millisecond}})
	br := m.Network().CameraInterface()
	nstest.WaitFor(t, 30*time.Second, "the camera bridge", func() bool {
		_, err := netlink.LinkByName(br)
		return err == nil
	})
	brCapt := startCapture(t, br, nil)

	wrongCAK := MACsecKey{CAK: randomKey(t).CAK, CKN: k1.CKN}
	wrongBoth := randomKey(t)
	start := time.Now()
	procs := map[string]*nstest.Proc{
		"mk0": startCameraMKA(t, good, k0),
		"mk1": startCameraMKA(t, rogueCAK, wrongCAK),
		"mk2": startCameraMKA(t, rogueCKN, wrongBoth),
	}
	alive := func() {
		for port, p := range procs {
			if p.Exited() {
				t.Fatalf("camera wpa_supplicant on %s exited:\n%s", port, p.Output())
			}
		}
	}
	inBridge := func(name string) bool {
		l, err := netlink.LinkByName(name)
		b, berr := netlink.LinkByName(br)
		return err == nil && berr == nil && l.Attrs().MasterIndex == b.Attrs().Index
	}
	// The kernel's word, independent of netconfig's: does the port's MACsec interface have a receive SC?
	rxsc := func(port string) bool {
		x := macsecOf(port)
		if x == "" {
			return false
		}
		out, _ := self.Try("ip", "macsec", "show", x)
		return strings.Contains(out, "RXSC:")
	}
	// Checked all along the window: no secure channel on mk1 or mk2, and their raw ports stay out of the bridge.
	var violations []string
	rogueUp := func() {
		for _, p := range []string{"mk1", "mk2"} {
			if rxsc(p) {
				violations = append(violations, fmt.Sprintf("%s: a receive secure channel at %v", p, time.Since(start)))
			}
			if inBridge(p) {
				violations = append(violations, fmt.Sprintf("%s: raw port in the bridge at %v", p, time.Since(start)))
			}
		}
	}
	nstest.WaitFor(t, 60*time.Second, "the right camera's secure channel, its MACsec interface in the camera bridge", func() bool {
		alive()
		rogueUp()
		x := macsecOf("mk0")
		return x != "" && inBridge(x) && rxsc("mk0")
	})
	okAfter := time.Since(start)
	window := max(20*time.Second, 3*okAfter)
	t.Logf("MKA with the right key secured mk0 in %v; watching the wrong-key ports for %v", okAfter.Round(100*time.Millisecond), window)
	t.Logf("mk1 after %v: %s", time.Since(start).Round(100*time.Millisecond), self.Exec(t, "ip", "macsec", "show", macsecOf("mk1")))

	before, err := m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	rogues := map[string]*nstest.NS{"mk1": rogueCAK, "mk2": rogueCKN}
	rogueMACs := map[string]string{}
	rogueMACsec := map[string]bool{}
	for i, port := range []string{"mk1", "mk2"} {
		ns := rogues[port]
		rogueMACs[port] = macOf(t, ns, "eth0")
		// DHCP discover in clear on the raw link.
		if ip := lease(t, ns, "eth0", 2); ip != "" {
			t.Errorf("rogue camera on %s got a lease: %s", port, ip)
		}
		// Its own MACsec interface, if its wpa_supplicant made one, gets nowhere either.
		out, _ := ns.Try("ip", "-o", "link", "show", "type", "macsec")
		for _, l := range strings.Split(out, "\n") {
			if mm := macsecLinkRE.FindStringSubmatch(l); mm != nil {
				t.Logf("rogue camera on %s has its own MACsec interface %s", port, mm[1])
				ns.Exec(t, "ip", "link", "set", mm[1], "up")
				if ip := lease(t, ns, mm[1], 2); ip != "" {
					t.Errorf("rogue camera on %s got a lease over its MACsec interface: %s", port, ip)
				}
			}
		}
		// A SecY of its own with a key it chose (what a camera with another CAK ends up sending): ARP and
		// IP protected with a secure channel the port never agreed.
		key := make([]byte, 16)
		if _, err := rand.Read(key); err != nil {
			t.Fatal(err)
		}
		ns.Exec(t, "ip", "link", "add", "link", "eth0", "msec9", "type", "macsec", "port", "9", "encrypt", "on")
		ns.Exec(t, "ip", "macsec", "add", "msec9", "tx", "sa", "0", "pn", "1", "on", "key", "01", hex.EncodeToString(key))
		ns.Exec(t, "ip", "addr", "add", fmt.Sprintf("10.77.0.%d/24", 211+i), "dev", "msec9")
		ns.Exec(t, "ip", "link", "set", "msec9", "up")
		if pings(ns, "10.77.0.1") {
			t.Errorf("rogue camera on %s reaches the appliance over a MACsec channel of its own", port)
		}
		ns.Exec(t, "ip", "link", "del", "msec9")
		rogueMACsec[port] = true
		// ARP for the appliance in clear, then IP straight to the port's MAC address.
		ip := fmt.Sprintf("10.77.0.%d", 201+i)
		ns.Exec(t, "ip", "addr", "add", ip+"/24", "dev", "eth0")
		if pings(ns, "10.77.0.1") {
			t.Errorf("rogue camera on %s reaches the appliance (ARP)", port)
		}
		ns.Exec(t, "ip", "neigh", "replace", "10.77.0.1", "lladdr", macOf(t, self, port), "dev", "eth0")
		if pings(ns, "10.77.0.1") {
			t.Errorf("rogue camera on %s reaches the appliance", port)
		}
	}
	// The rest of the window: poll until it ends.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < window {
		alive()
		rogueUp()
		<-tick.C
	}
	rogueUp()
	for _, v := range violations {
		t.Error(v)
	}
	t.Logf("no secure channel on the wrong-key ports %v after the start (the right key took %v)",
		time.Since(start).Round(100*time.Millisecond), okAfter.Round(100*time.Millisecond))

	for _, l := range m.Leases() {
		for port, mac := range rogueMACs {
			if strings.EqualFold(l.MAC, mac) {
				t.Errorf("a lease for the rogue camera on %s: %+v", port, l)
			}
		}
	}
	after, err := m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after[CounterDead].Packets <= before[CounterDead].Packets {
		t.Errorf("clear-text IP on the wrong-key ports not dropped and counted: %+v → %+v", before[CounterDead], after[CounterDead])
	}
	t.Logf("dead-port drops: %d → %d", before[CounterDead].Packets, after[CounterDead].Packets)
	brCapt.Stop()
	_, srcs, _, err := brCapt.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for port, mac := range rogueMACs {
		if srcs[mac] > 0 {
			t.Errorf("%d frames of the rogue camera on %s arrived in the camera bridge", srcs[mac], port)
		}
	}

	states := m.MACsecStates()
	t.Logf("MACsec port states: %+v", states)
	if len(states) != 3 {
		t.Fatalf("want 3 MACsec port states: %+v", states)
	}
	for _, st := range states {
		switch st.Port {
		case "mk0":
			if !st.Secured || st.Interface == "" {
				t.Errorf("mk0 (right key) not reported secured: %+v", st)
			}
		default:
			if st.Secured {
				t.Errorf("%s (wrong key) reported secured: %+v", st.Port, st)
			}
			if rogueMACsec[st.Port] && st.RejectedFrames == 0 {
				t.Errorf("%s: the rogue camera's MACsec frames not counted as rejected: %+v", st.Port, st)
			}
			if !slices.Contains(st.Peers, rogueMACs[st.Port]) {
				t.Errorf("%s: the rogue camera %s not reported as a peer: %+v", st.Port, rogueMACs[st.Port], st)
			}
		}
	}
}
