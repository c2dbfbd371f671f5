package netconfig

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgenvr/nvr/netconfig/nstest"
)

// TestHostapdKilledClosesPortAndRestarts kills the port's hostapd with SIGKILL while a camera is authorized
// and leased: the port closes at once (the camera's frames are dropped), a restart event is raised, a new
// hostapd comes up and asks the camera to authenticate again (NEW_STA), the camera is let back in, and the
// new hostapd's events drive the gate (EAPOL-Logoff closes the port).
func TestHostapdKilledClosesPortAndRestarts(t *testing.T) {
	if !nstest.InNS(t, "nvr-hapd") {
		return
	}
	var self *nstest.NS
	cam := newCamera(t, "nvr-cam", "cam0")
	var mu sync.Mutex
	var events []AuthEvent
	runtime := t.TempDir()
	m, err := New(ManagerConfig{
		Network: Config{Mode: ModeBridge, Ports: []Port{{Name: "cam0", Auth: true}},
			Address: netip.MustParsePrefix("10.77.0.1/24"), ReconcileEvery: 500 * time.Millisecond},
		StateDir: t.TempDir(), RuntimeDir: runtime,
		OnAuth: func(e AuthEvent) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
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
	certPEM, keyPEM, err := m.CA().IssueCamera("cam1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"ca.pem": m.CA().CertPEM(), "cam.pem": certPEM, "cam.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(cam.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cam.supplicant(t, "tls", fmt.Sprintf("\teap=TLS\n\tidentity=\"cam1\"\n\tca_cert=\"%s/ca.pem\"\n\tclient_cert=\"%s/cam.pem\"\n\tprivate_key=\"%s/cam.key\"\n",
		cam.dir, cam.dir, cam.dir))
	authorized := func() bool {
		for _, a := range m.Network().Firewall().Authorized() {
			if a == "cam0/"+cam.mac {
				return true
			}
		}
		return false
	}
	nstest.WaitFor(t, 60*time.Second, "the camera authorized", authorized)
	ip := cam.dhcp(t, 5)
	if ip == "" {
		t.Fatal("no lease after authentication")
	}
	if !reaches(self, ip, 0) {
		t.Fatal("the appliance does not reach the authorized camera")
	}

	pidFile := filepath.Join(runtime, "hostapd-cam0", "hostapd.pid")
	hostapdPID := func() int {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(cmd), "hostapd") {
			return 0
		}
		return pid
	}
	first := hostapdPID()
	if first == 0 {
		t.Fatalf("no running hostapd named by %s", pidFile)
	}
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	nstest.WaitFor(t, 10*time.Second, "the port to close after hostapd died", func() bool { return !authorized() })
	t.Logf("port closed %v after hostapd was killed", time.Since(killed).Round(time.Millisecond))
	if reaches(self, ip, 0) {
		t.Error("the camera still answers through a port whose authenticator died")
	}
	nstest.WaitFor(t, 30*time.Second, "a new hostapd", func() bool {
		pid := hostapdPID()
		return pid != 0 && pid != first
	})
	mu.Lock()
	restarted := false
	for _, e := range events {
		restarted = restarted || (e.Port == "cam0" && e.Kind == "restart")
	}
	mu.Unlock()
	if !restarted {
		t.Errorf("no restart event: %+v", events)
	}

	// The new hostapd lets the camera in again (it asks the camera for its identity when it starts; a
	// success before the authenticator attached is read from hostapd's station table).
	nstest.WaitFor(t, 60*time.Second, "the camera authorized by the new hostapd", authorized)
	nstest.WaitFor(t, 20*time.Second, "the appliance to reach the camera again", func() bool { return reaches(self, ip, 0) })

	// And its events drive the gate: the camera logs off and its port closes.
	ctrl, err := dialCtrl(filepath.Join(cam.dir, "tls-ctrl", "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	supplicant := func(c string) {
		t.Helper()
		if r, err := ctrl.request(c, 5*time.Second); err != nil || strings.TrimSpace(r) != "OK" {
			t.Fatalf("wpa_supplicant %s: %q %v", c, r, err)
		}
	}
	supplicant("LOGOFF")
	nstest.WaitFor(t, 30*time.Second, "the port to close at EAPOL-Logoff", func() bool { return !authorized() })
	if reaches(self, ip, 0) {
		t.Error("a camera that logged off still answers")
	}
}

// gateLog is a PortGate that records what it was asked.
type gateLog struct {
	mu    sync.Mutex
	calls []string
}

func (g *gateLog) Authorize(port string, mac net.HardwareAddr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, "authorize "+port+" "+mac.String())
	return nil
}

func (g *gateLog) Deauthorize(port string, mac net.HardwareAddr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, "deauthorize "+port+" "+mac.String())
	return nil
}

func (g *gateLog) DeauthorizePort(port string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, "close "+port)
	return nil
}

// ctrlEventCases feed the unit test and seed FuzzCtrlEvent's corpus (testdata/fuzz/FuzzCtrlEvent).
var ctrlEventCases = []struct {
	in   string
	gate string // what the gate is asked, "" for nothing
}{
	{"<3>AP-STA-CONNECTED 02:00:00:00:00:01", "authorize cam0 02:00:00:00:00:01"},
	{"<3>AP-STA-DISCONNECTED 02:00:00:00:00:01", "deauthorize cam0 02:00:00:00:00:01"},
	{"<3>CTRL-EVENT-EAP-FAILURE 02:00:00:00:00:02", "deauthorize cam0 02:00:00:00:00:02"},
	{"<3>CTRL-EVENT-EAP-FAILURE2 02:00:00:00:00:02", "deauthorize cam0 02:00:00:00:00:02"},
	{"<3>CTRL-EVENT-EAP-STARTED 02:00:00:00:00:01", ""},
	{"<3>AP-STA-CONNECTED", ""},
	{"<3>AP-STA-CONNECTED not-a-mac", ""},
	{"<3>AP-STA-CONNECTED 00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", ""}, // 20-byte IPoIB
	{"AP-STA-CONNECTED 02:00:00:00:00:01", ""},                                              // no level: a reply, not an event
	{"<3 AP-STA-CONNECTED 02:00:00:00:00:01", ""},
	{"<>", ""},
	{"<2>   ", ""},
	{"<3>ap-sta-connected 02:00:00:00:00:01", ""},
}

func TestCtrlEvents(t *testing.T) {
	for _, c := range ctrlEventCases {
		g := &gateLog{}
		a := &Authenticator{port: "cam0", gate: g, onEvent: func(AuthEvent) {}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if ev, ok := parseEvent([]byte(c.in)); ok {
			a.handle(ev)
		}
		if got := strings.Join(g.calls, ";"); got != c.gate {
			t.Errorf("%q: gate asked %q, want %q", c.in, got, c.gate)
		}
	}
	long := "<3>AP-STA-CONNECTED " + strings.Repeat("x", 3*maxEvent)
	if ev, ok := parseEvent([]byte(long)); !ok || len(ev.Name)+len(strings.Join(ev.Args, " ")) > maxEvent {
		t.Errorf("a long event was not cut to %d bytes", maxEvent)
	}
}

// FuzzCtrlEvent feeds hostapd control-interface messages (from a process that may be compromised or buggy)
// to the event parser and the port gate: nothing panics, parsed events are bounded, and only an
// AP-STA-CONNECTED event naming one Ethernet address opens the port, to that address alone.
func FuzzCtrlEvent(f *testing.F) {
	for _, c := range ctrlEventCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, ok := parseEvent(b)
		if !ok {
			return
		}
		if ev.Name == "" || strings.ContainsAny(ev.Name, " \t\n") || len(ev.Name) > maxEvent {
			t.Fatalf("bad event name %q", ev.Name)
		}
		n := len(ev.Name)
		for _, a := range ev.Args {
			n += len(a)
		}
		if n > maxEvent {
			t.Fatalf("event of %d bytes, over the bound", n)
		}
		g := &gateLog{}
		a := &Authenticator{port: "cam0", gate: g, onEvent: func(AuthEvent) {}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		a.handle(ev)
		for _, c := range g.calls {
			if !strings.HasPrefix(c, "authorize ") {
				continue
			}
			mac, err := net.ParseMAC(ev.Args[0])
			if ev.Name != "AP-STA-CONNECTED" || err != nil || len(mac) != 6 || c != "authorize cam0 "+mac.String() {
				t.Fatalf("%q opened the port: %s", b, c)
			}
		}
		if len(g.calls) > 1 {
			t.Fatalf("one event made %d gate calls: %q", len(g.calls), g.calls)
		}
	})
}

// TestKillStale: a daemon left by an earlier nvrd (its PID file names it and its command line names our
// configuration file) is stopped; a PID file naming any other process stops nothing.
func TestKillStale(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "hostapd.conf")
	type proc struct {
		pid   int
		state chan *os.ProcessState
	}
	// start runs a shell whose command line names arg0; it is reaped at once when it dies (an earlier
	// nvrd's daemon is not our child either).
	start := func(arg0 string) proc {
		p, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "sleep 60; :", arg0}, &os.ProcAttr{})
		if err != nil {
			t.Fatal(err)
		}
		pr := proc{pid: p.Pid, state: make(chan *os.ProcessState, 1)}
		go func() { st, _ := p.Wait(); pr.state <- st }()
		t.Cleanup(func() { _ = p.Kill() })
		return pr
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	other := start(filepath.Join(dir, "something-else.conf"))
	pidFile := filepath.Join(dir, "hostapd.pid")
	if err := writePIDFile(pidFile, other.pid); err != nil {
		t.Fatal(err)
	}
	killStale(pidFile, conf, log)
	select {
	case <-other.state:
		t.Fatal("killStale stopped a process that is not ours")
	default:
	}
	stale := start(conf)
	if err := writePIDFile(pidFile, stale.pid); err != nil {
		t.Fatal(err)
	}
	killStale(pidFile, conf, log)
	select {
	case st := <-stale.state:
		if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("stale process ended with %v; want SIGKILL", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stale process is still running")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("PID file left behind: %v", err)
	}
}
