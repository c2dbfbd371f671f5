package netconfig

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/edgenvr/nvr/netconfig/nstest"
	"github.com/vishvananda/netlink"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestApplyBridgeIdempotentAndReconciled applies a bridge configuration in a fresh namespace, checks the
// kernel state, applies again (nothing changes), then breaks it by hand with the nft and ip tools and
// watches Reconcile put it back with the counters kept.
func TestApplyBridgeIdempotentAndReconciled(t *testing.T) {
	if !nstest.InNS(t, "nvr-apply") {
		return
	}
	cam := nstest.New(t, "nvr-cam")
	var self *nstest.NS
	nstest.Veth(t, self, "cam0", cam, "eth0")
	nstest.Veth(t, self, "cam1", cam, "eth1")
	nstest.Veth(t, self, "stray0", cam, "eth2")
	cfg := Config{
		Mode:    ModeBridge,
		Ports:   []Port{{Name: "cam0", Auth: true}, {Name: "cam1"}},
		Address: netip.MustParsePrefix("10.77.0.1/24"),
	}
	n, err := NewNetwork(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	// A stale state from an earlier run: the stray port in the bridge, forwarding on, a foreign address.
	self.Exec(t, "ip", "link", "add", "nvrcam", "type", "bridge")
	self.Exec(t, "ip", "link", "set", "stray0", "master", "nvrcam")
	self.Exec(t, "ip", "addr", "add", "10.9.9.9/24", "dev", "nvrcam")
	self.Exec(t, "sysctl", "-w", "net.ipv4.ip_forward=1")

	changes, err := n.Apply()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first apply: %q", changes)
	for _, want := range []string{"stray0 released", "stray address 10.9.9.9/24", "ip_forward set to 0", "cam0 isolated", "cam1 isolated"} {
		if !strings.Contains(strings.Join(changes, "\n"), want) {
			t.Errorf("first apply did not report %q", want)
		}
	}
	br, err := netlink.LinkByName("nvrcam")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"cam0", "cam1"} {
		l, err := netlink.LinkByName(p)
		if err != nil {
			t.Fatal(err)
		}
		pi, err := netlink.LinkGetProtinfo(l)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index || !pi.Isolated {
			t.Errorf("%s: master %d (bridge %d), isolated %v", p, l.Attrs().MasterIndex, br.Attrs().Index, pi.Isolated)
		}
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("ip_forward = %q", b)
	}
	again, err := n.Apply()
	if err != nil || len(again) != 0 {
		t.Fatalf("second apply changed %q (err %v)", again, err)
	}
	if d, err := n.Firewall().Drift(); err != nil || len(d) != 0 {
		t.Fatalf("drift right after apply: %q %v", d, err)
	}
	if err := n.Firewall().Authorize("cam0", mustMAC("02:00:00:00:00:01")); err != nil {
		t.Fatal(err)
	}
	if d, err := n.Firewall().Drift(); err != nil || len(d) != 0 {
		t.Fatalf("drift after authorize: %q %v", d, err)
	}
	ruleset := self.Exec(t, "nft", "list", "ruleset")
	for _, want := range []string{`table inet nvr`, `table bridge nvr`, `"cam0" . 02:00:00:00:00:01`} {
		if !strings.Contains(ruleset, want) {
			t.Errorf("nft list ruleset lacks %q:\n%s", want, ruleset)
		}
	}

	// Drop something through the bridge so a counter moves, then break things by hand.
	self.Exec(t, "ip", "link", "set", "cam1", "nomaster")
	self.Exec(t, "sysctl", "-w", "net.ipv4.ip_forward=1")
	handle := ruleHandle(t, self, "inet", "forward", "nvr:to-cam")
	self.Exec(t, "nft", "delete", "rule", "inet", "nvr", "forward", "handle", handle)
	self.Exec(t, "nft", "add", "rule", "inet", "nvr", "input", "accept")
	self.Exec(t, "nft", "delete", "element", "bridge", "nvr", "authports", `{ "cam0" }`)
	drift, err := n.Reconcile()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reconcile: %q", drift)
	all := strings.Join(drift, "\n")
	for _, want := range []string{"chain inet forward rules", "chain inet input rules", "set bridge authports", "cam1 added to nvrcam", "ip_forward set to 0"} {
		if !strings.Contains(all, want) {
			t.Errorf("reconcile did not report %q", want)
		}
	}
	if d, err := n.Firewall().Drift(); err != nil || len(d) != 0 {
		t.Fatalf("drift after reconcile: %q %v", d, err)
	}
	if !strings.Contains(self.Exec(t, "nft", "list", "set", "bridge", "nvr", "authorized"), "02:00:00:00:00:01") {
		t.Error("authorization lost by reconcile")
	}
	// The ruleset outlives the Network: closing removes nothing.
	n.Close()
	if !strings.Contains(self.Exec(t, "nft", "list", "tables"), "inet nvr") {
		t.Error("table gone after Close")
	}
}

func ruleHandle(t *testing.T, ns *nstest.NS, family, chain, tag string) string {
	t.Helper()
	// nft shows our rules' tags only as raw user data: find the rule by its place in the chain.
	listing := ns.Exec(t, "nft", "-a", "list", "chain", family, "nvr", chain)
	var handles []string
	for _, l := range strings.Split(listing, "\n") {
		if i := strings.Index(l, "# handle "); i >= 0 && !strings.Contains(l, "chain ") {
			handles = append(handles, strings.TrimSpace(l[i+len("# handle "):]))
		}
	}
	ids := map[string]int{"nvr:from-cam": 0, "nvr:to-cam": 1, "nvr:other": 2}
	i, ok := ids[tag]
	if !ok || i >= len(handles) {
		t.Fatalf("rule %s not found in:\n%s", tag, listing)
	}
	return handles[i]
}
