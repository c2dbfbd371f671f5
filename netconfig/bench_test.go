package netconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgenvr/nvr/netconfig/nstest"
	"github.com/vishvananda/netlink"
)

// benchPorts is the camera port count of the apply benchmarks.
const benchPorts = 16

// portsNS makes a camera namespace holding the far ends of benchPorts veth pairs (cam0..cam15 here).
func portsNS(b *testing.B) []Port {
	b.Helper()
	far := nstest.New(b, "nvr-bcams")
	var self *nstest.NS
	ports := make([]Port, benchPorts)
	for i := range ports {
		name := fmt.Sprintf("cam%d", i)
		self.Exec(b, "ip", "link", "add", name, "type", "veth", "peer", "name", fmt.Sprintf("eth%d", i), "netns", far.Name)
		self.Exec(b, "ip", "link", "set", name, "up")
		// Every other port under 802.1X, as a mixed installation would be.
		ports[i] = Port{Name: name, Auth: i%2 == 0}
	}
	return ports
}

func benchConfig(ports []Port) Config {
	return Config{Mode: ModeBridge, Ports: ports, Address: netip.MustParsePrefix("10.77.0.1/24"), Client: "client0",
		RTPPorts: [2]uint16{50000, 50999}}
}

// BenchmarkApply16Ports is the time to apply the full configuration for 16 camera ports from nothing: the
// nftables ruleset (both tables, in one transaction), the bridge, 16 isolated ports, the address and the
// sysctls. Between iterations the bridge and the ruleset are removed (not timed).
func BenchmarkApply16Ports(b *testing.B) {
	if !nstest.InNSBench(b, "nvr-bapply") {
		return
	}
	cfg := benchConfig(portsNS(b))
	log := testLogger(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if br, err := netlink.LinkByName("nvrcam"); err == nil {
			if err := netlink.LinkDel(br); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		n, err := NewNetwork(cfg, log, nil)
		if err != nil {
			b.Fatal(err)
		}
		changes, err := n.Apply()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if len(changes) < 2*benchPorts {
			b.Fatalf("apply made only %d changes: %q", len(changes), changes)
		}
		if err := n.Firewall().Remove(); err != nil {
			b.Fatal(err)
		}
		n.Close()
		b.StartTimer()
	}
}

// BenchmarkReconcile16Ports is one reconcile pass over an applied 16-port configuration with nothing to
// repair (what Run does every ReconcileEvery): read back links, sysctls and the ruleset, compare.
func BenchmarkReconcile16Ports(b *testing.B) {
	if !nstest.InNSBench(b, "nvr-brecon") {
		return
	}
	n, err := NewNetwork(benchConfig(portsNS(b)), testLogger(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	if _, err := n.Apply(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		drift, err := n.Reconcile()
		if err != nil || len(drift) != 0 {
			b.Fatalf("reconcile of an applied configuration: %q %v", drift, err)
		}
	}
}

// floodEnv, when set, makes the test binary a UDP flooder (see floodMain) instead of running tests.
const floodEnv = "NVR_NETCONFIG_FLOOD"

// floodMain sends COUNT UDP datagrams of SIZE bytes to ADDR as fast as it can ("ADDR COUNT SIZE") and
// prints how many it sent and how long that took. It is bounded by the count and by 60 s.
func floodMain(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 3 {
		fmt.Fprintln(os.Stderr, "flood: want ADDR COUNT SIZE")
		return 2
	}
	count, err1 := strconv.Atoi(f[1])
	size, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || count <= 0 || count > 10_000_000 || size <= 0 || size > 1400 {
		fmt.Fprintln(os.Stderr, "flood: bad count or size")
		return 2
	}
	c, err := net.Dial("udp4", f[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		return 1
	}
	defer c.Close()
	payload := make([]byte, size)
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	sent, failed := 0, 0
	for sent < count && time.Now().Before(deadline) {
		if _, err := c.Write(payload); err != nil {
			// ENOBUFS or a refusal: count it and go on; the flood is bounded by its count.
			failed++
			if !errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EPERM) {
				fmt.Fprintln(os.Stderr, "flood:", err)
				return 1
			}
		}
		sent++
	}
	fmt.Printf("FLOOD sent=%d failed=%d seconds=%.3f\n", sent, failed, time.Since(start).Seconds())
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFloodDrops floods 1e6 64-byte UDP datagrams from a camera namespace towards a client address
// (routed through the appliance by hand) while the appliance records another camera (camsim in its
// namespace; ingest+record in this process). It reports the flood's rate, the forward drops the ruleset
// counted, and this process's CPU (the recorder) during the flood against an equal quiet window.
func BenchmarkFloodDrops(b *testing.B) {
	if !nstest.InNSBench(b, "nvr-bflood") {
		return
	}
	const packets = 1_000_000
	var self *nstest.NS
	cam := newCamera(b, "nvr-bcam", "cam0")
	rogue := newCamera(b, "nvr-brogue", "cam1")
	client := nstest.New(b, "nvr-bclient")
	nstest.Veth(b, self, "client0", client, "eth0")
	self.Exec(b, "ip", "addr", "add", "192.168.50.1/24", "dev", "client0")
	client.Exec(b, "ip", "addr", "add", "192.168.50.2/24", "dev", "eth0")
	n, err := NewNetwork(Config{Mode: ModeBridge, Ports: []Port{{Name: "cam0"}, {Name: "cam1"}},
		Address: netip.MustParsePrefix("10.77.0.1/24"), Client: "client0"}, testLogger(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	if _, err := n.Apply(); err != nil {
		b.Fatal(err)
	}
	cam.ns.Exec(b, "ip", "addr", "add", "10.77.0.10/24", "dev", "eth0")
	rogue.ns.Exec(b, "ip", "addr", "add", "10.77.0.66/24", "dev", "eth0")
	rogue.ns.Exec(b, "ip", "route", "add", "192.168.50.0/24", "via", "10.77.0.1")

	dir := b.TempDir()
	pwFile := filepath.Join(dir, "pw")
	pw := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	ready := filepath.Join(dir, "ready.json")
	cs := cam.ns.Start(b, buildBin(b, "camsim"), "-rtsp", "10.77.0.10:0", "-cameras", "1", "-clips", clipsDir(b),
		"-user", "admin", "-password-file", pwFile, "-ready-file", ready, "-log-level", "warn")
	var addrs struct{ RTSP string }
	nstest.WaitFor(b, 30*time.Second, "camsim ready", func() bool {
		if cs.Exited() {
			b.Fatalf("camsim exited:\n%s", cs.Output())
		}
		bb, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(bb, &addrs) == nil && addrs.RTSP != ""
	})
	rec := startRecording(b, "bcam", "rtsp://"+addrs.RTSP+"/cam1", "admin", pw)
	nstest.WaitFor(b, 60*time.Second, "the recording to start", func() bool { return rec.rec.Status().Fragments > 2 })

	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// A quiet window first, as long as the flood will roughly take, for the recorder's baseline.
		quiet := 3 * time.Second
		c0, t0 := cpuTime(), time.Now()
		nstest.WaitFor(b, quiet+time.Second, "the quiet window", func() bool { return time.Since(t0) >= quiet })
		idleCPU := float64(cpuTime()-c0) / float64(time.Since(t0))
		before, err := n.Firewall().Counters()
		if err != nil {
			b.Fatal(err)
		}
		st0 := rec.rec.Status()
		c1, t1 := cpuTime(), time.Now()
		b.StartTimer()
		cmd := exec.Command("ip", "netns", "exec", rogue.ns.Name, exe)
		cmd.Env = append(os.Environ(), floodEnv+"=192.168.50.2:9 "+strconv.Itoa(packets)+" 64")
		out, err := cmd.CombinedOutput()
		b.StopTimer()
		wall := time.Since(t1)
		floodCPU := float64(cpuTime()-c1) / float64(wall)
		if err != nil {
			b.Fatalf("flooder: %v\n%s", err, out)
		}
		var sent, failed int
		var secs float64
		if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "FLOOD sent=%d failed=%d seconds=%f", &sent, &failed, &secs); err != nil {
			b.Fatalf("flooder said %q: %v", out, err)
		}
		flooderCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		// Drops are counted in the packet path: read them once they have settled.
		var after map[string]Counter
		nstest.WaitFor(b, 10*time.Second, "the drop counter to settle", func() bool {
			prev := after
			if after, err = n.Firewall().Counters(); err != nil {
				b.Fatal(err)
			}
			return prev != nil && prev[CounterFwdFromCamera] == after[CounterFwdFromCamera]
		})
		drops := after[CounterFwdFromCamera].Packets - before[CounterFwdFromCamera].Packets
		st1 := rec.rec.Status()
		if drops < uint64(sent-failed)*99/100 {
			b.Errorf("only %d of %d flooded datagrams counted as forward drops", drops, sent-failed)
		}
		if !st1.Recording || time.Since(st1.LastWrite) > 3*time.Second || st1.Fragments <= st0.Fragments {
			b.Errorf("recording stalled under the flood: %+v → %+v", st0, st1)
		}
		if reaches(client, "10.77.0.66", 0) {
			b.Error("the client reaches the flooding camera")
		}
		b.Logf("flood: %d datagrams (%d refused by the sender's stack) in %.2f s = %.0f/s; forward drops counted %d; "+
			"recorder CPU %.1f%% during the flood, %.1f%% quiet; flooder CPU %v; fragments recorded during the flood %d (dropped %d → %d)",
			sent, failed, secs, float64(sent)/secs, drops, 100*floodCPU, 100*idleCPU, flooderCPU.Round(time.Millisecond),
			st1.Fragments-st0.Fragments, st0.Dropped, st1.Dropped)
		b.ReportMetric(float64(sent)/secs, "pkts/s")
		b.ReportMetric(float64(drops), "drops")
		b.ReportMetric(100*float64(drops)/float64(sent), "drop%")
		b.ReportMetric(100*floodCPU, "rec-cpu%")
		b.ReportMetric(100*idleCPU, "rec-idle-cpu%")
	}
}
