// Package nstest gives tests network namespaces, veth links and processes inside them, all removed when the
// test ends: processes are stopped by PID, namespaces deleted. It also re-runs a test inside a fresh
// namespace (InNS), so the code under test sees that namespace as its own, as nvrd does on an appliance.
// Only tests import it. It needs root and iproute2; Require installs the peers the network tests use.
package nstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ChildEnv is set in the environment of a test re-run inside a namespace by InNS.
const ChildEnv = "NVR_NSTEST_CHILD"

// tools are the commands the network tests run, with the Debian package that has each.
var tools = map[string]string{
	"ip": "iproute2", "hostapd": "hostapd", "wpa_supplicant": "wpasupplicant", "busybox": "busybox-static",
}

var requireOnce sync.Once

// Require fails the test unless it runs as root, and installs the network peers if any is missing (through
// the repository's scripts/deps.sh, as make test does).
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "" {
			t.Skip("nstest: network namespace tests need root")
		}
		t.Fatal("nstest: network namespace tests need root")
	}
	var err error
	requireOnce.Do(func() {
		for tool := range tools {
			if _, e := exec.LookPath(tool); e != nil {
				out, e := exec.Command(filepath.Join(root(), "scripts", "deps.sh")).CombinedOutput()
				if e != nil {
					err = fmt.Errorf("scripts/deps.sh: %v\n%s", e, out)
				}
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// NS is a network namespace created by a test.
type NS struct {
	Name string
}

func randName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// New creates a network namespace named after prefix, with loopback up, and deletes it when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	n := &NS{Name: randName(prefix)}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", n.Name, err, out)
		}
	})
	n.Exec(t, "ip", "link", "set", "lo", "up")
	return n
}

func (n *NS) cmd(args ...string) *exec.Cmd {
	if n == nil {
		return exec.Command(args[0], args[1:]...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Try runs a command in the namespace (nil: the test's own) and returns its combined output.
func (n *NS) Try(args ...string) (string, error) {
	out, err := n.cmd(args...).CombinedOutput()
	return string(out), err
}

// TryTimeout is Try with a deadline: the command is killed when d passes.
func (n *NS) TryTimeout(d time.Duration, args ...string) (string, error) {
	c := n.cmd(args...)
	var b bytes.Buffer
	c.Stdout, c.Stderr = &b, &b
	if err := c.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return b.String(), err
	case <-time.After(d):
		_ = c.Process.Kill()
		<-done
		return b.String(), fmt.Errorf("timed out after %v", d)
	}
}

// Exec runs a command in the namespace and fails the test if it fails.
func (n *NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Try(args...)
	if err != nil {
		t.Fatalf("%s: %v: %v\n%s", n, args, err, out)
	}
	return out
}

func (n *NS) String() string {
	if n == nil {
		return "netns(self)"
	}
	return "netns " + n.Name
}

// Veth links namespace a (interface an) to namespace b (interface bn); either may be nil for the test's own
// namespace. Both ends are set up. The pair goes with its namespaces.
func Veth(t testing.TB, a *NS, an string, b *NS, bn string) {
	t.Helper()
	args := []string{"ip", "link", "add", an}
	if a != nil {
		args = append(args, "netns", a.Name)
	}
	args = append(args, "type", "veth", "peer", "name", bn)
	if b != nil {
		args = append(args, "netns", b.Name)
	}
	var self *NS
	self.Exec(t, args...)
	a.Exec(t, "ip", "link", "set", an, "up")
	b.Exec(t, "ip", "link", "set", bn, "up")
	if a == nil || b == nil {
		name := an
		if a != nil {
			name = bn
		}
		t.Cleanup(func() { _, _ = self.Try("ip", "link", "del", name) })
	}
}

// Proc is a process a test started; it is stopped by PID when the test ends.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	mu   sync.Mutex
	out  bytes.Buffer
}

type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Start starts a command in the namespace and stops it (SIGTERM, then SIGKILL) when the test ends.
func (n *NS) Start(t testing.TB, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: filepath.Base(args[0]), cmd: n.cmd(args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v in %s: %v", args, n, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	return p
}

// PID is the process's ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Output is what the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to 5 s, then SIGKILL.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// WaitFor polls cond every 50 ms until it holds, failing the test after d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitOutput waits until the process has printed s.
func (p *Proc) WaitOutput(t testing.TB, d time.Duration, s string) {
	t.Helper()
	WaitFor(t, d, fmt.Sprintf("%s to print %q", p.Name, s), func() bool {
		if p.Exited() {
			t.Fatalf("%s exited (%v) before printing %q:\n%s", p.Name, p.err, s, p.Output())
		}
		return strings.Contains(p.Output(), s)
	})
}

// InNS re-runs the calling test inside a fresh network namespace and reports whether the caller is that
// re-run: the caller returns at once on false (the parent only waits for the child's verdict) and does its
// work on true. Whatever the child creates (sockets, links, sysctls, processes) lives in that namespace.
func InNS(t *testing.T, prefix string) bool {
	t.Helper()
	if os.Getenv(ChildEnv) == t.Name() {
		return true
	}
	Require(t)
	ns := New(t, prefix)
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{exe, "-test.run", strings.Join(parts, "/"), "-test.count", "1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout", time.Until(d).Round(time.Second).String())
	}
	c := ns.cmd(args...)
	c.Env = append(os.Environ(), ChildEnv+"="+t.Name())
	var out bytes.Buffer
	c.Stdout = io.MultiWriter(&out, testWriter{t})
	c.Stderr = c.Stdout
	if err := c.Start(); err != nil {
		t.Fatalf("re-run in %s: %v", ns, err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	err = c.Wait()
	waited = true
	if err != nil {
		t.Fatalf("test inside %s failed: %v", ns, err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+parts0(t.Name())) {
		t.Fatalf("test inside %s did not pass (was it found?)", ns)
	}
	return false
}

func parts0(name string) string { return strings.Split(name, "/")[0] }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.t.Log("│ " + l)
	}
	return len(b), nil
}

// InNSBench is InNS for a top-level benchmark: the benchmark runs again inside a fresh namespace (same
// -test.benchtime), its output is logged, and its figures (ns/op and every metric it reported) become the
// caller's. The caller returns at once on false and benchmarks on true.
func InNSBench(b *testing.B, prefix string) bool {
	b.Helper()
	if os.Getenv(ChildEnv) == b.Name() {
		return true
	}
	Require(b)
	ns := New(b, prefix)
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	args := []string{exe, "-test.run", "^$", "-test.bench", "^" + regexp.QuoteMeta(b.Name()) + "$", "-test.count", "1"}
	for _, f := range []string{"test.benchtime", "test.benchmem", "test.timeout"} {
		if fl := flag.Lookup(f); fl != nil {
			args = append(args, "-"+f+"="+fl.Value.String())
		}
	}
	c := ns.cmd(args...)
	c.Env = append(os.Environ(), ChildEnv+"="+b.Name())
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		b.Fatalf("re-run in %s: %v", ns, err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	b.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = c.Process.Kill()
			<-done
		}
	})
	err = <-done
	done <- err // for the clean-up
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		b.Log("│ " + l)
	}
	if err != nil {
		b.Fatalf("benchmark inside %s failed: %v", ns, err)
	}
	metrics, ok := parseBenchLine(out.String(), b.Name())
	if !ok {
		b.Fatalf("benchmark inside %s printed no result", ns)
	}
	b.StopTimer()
	for unit, v := range metrics {
		b.ReportMetric(v, unit)
	}
	return false
}

// parseBenchLine finds name's result line ("BenchmarkX-2  10  123 ns/op  4.5 drops") and returns its
// figures by unit.
func parseBenchLine(out, name string) (map[string]float64, bool) {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || (f[0] != name && !strings.HasPrefix(f[0], name+"-")) {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, false
			}
			m[f[i+1]] = v
		}
		return m, true
	}
	return nil, false
}
