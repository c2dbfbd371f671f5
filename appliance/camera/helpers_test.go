package camera

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/internal/testpeer"
	"github.com/edgenvr/nvr/netconfig/nstest"
	"github.com/edgenvr/nvr/tpm"
	"golang.org/x/sys/unix"
)

const factoryUser, factoryPass = "admin", "factory-Pass-123"

var camsimBin struct {
	once sync.Once
	path string
	err  error
}

// camsimPath builds cmd/camsim once per test binary.
func camsimPath(t testing.TB) string {
	t.Helper()
	camsimBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "nvr-camera-test-")
		if err != nil {
			camsimBin.err = err
			return
		}
		camsimBin.path = filepath.Join(dir, "camsim")
		cmd := exec.Command("go", "build", "-o", camsimBin.path, "./cmd/camsim")
		cmd.Dir = testpeer.Root(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			camsimBin.err = fmt.Errorf("go build camsim: %v\n%s", err, out)
		}
		if out, err := exec.Command(filepath.Join(testpeer.Root(t), "scripts", "clips.sh"), clipDir(t)).CombinedOutput(); err != nil {
			camsimBin.err = fmt.Errorf("scripts/clips.sh: %v\n%s", err, out)
		}
	})
	if camsimBin.err != nil {
		t.Fatal(camsimBin.err)
	}
	return camsimBin.path
}

func clipDir(t testing.TB) string { return filepath.Join(testpeer.Root(t), "build", "clips") }

func TestMain(m *testing.M) {
	code := m.Run()
	if camsimBin.path != "" {
		os.RemoveAll(filepath.Dir(camsimBin.path))
	}
	os.Exit(code)
}

// sim is a running camsim process.
type sim struct {
	Control string `json:"control"`
	RTSP    string `json:"rtsp"`
	ONVIF   []struct {
		Camera string `json:"camera"`
		HTTP   string `json:"http"`
		HTTPS  string `json:"https"`
	} `json:"onvif"`
	state string
	logs  *syncBuffer
}

type simState struct {
	Firmware string `json:"firmware"`
	Serial   string `json:"serial"`
	Users    []struct {
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"users"`
}

func (s *sim) readState(t testing.TB) map[string]simState {
	t.Helper()
	b, err := os.ReadFile(s.state)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]simState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (s *sim) password(t testing.TB, cam string) string {
	t.Helper()
	return s.readState(t)[cam].Users[0].Password
}

// control posts to camsim's control endpoint.
func (s *sim) control(t testing.TB, pathQuery string) {
	t.Helper()
	res, err := http.Post("http://"+s.Control+pathQuery, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("camsim control %s: %d %s", pathQuery, res.StatusCode, b)
	}
}

// startSim runs camsim with n ONVIF cameras (HTTP and HTTPS) and stops it
// by PID when the test ends. extra flags are appended.
func startSim(t testing.TB, n int, extra ...string) *sim {
	t.Helper()
	return startSimIn(t, nil, n, extra...)
}

// startSimIn is startSim inside network namespace ns (nil: the test's own).
func startSimIn(t testing.TB, ns *nstest.NS, n int, extra ...string) *sim {
	t.Helper()
	bin := camsimPath(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(factoryPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &sim{state: filepath.Join(dir, "state.json"), logs: &syncBuffer{}}
	ready := filepath.Join(dir, "ready.json")
	args := append([]string{"-rtsp", "127.0.0.1:0", "-control", "127.0.0.1:0", "-clips", clipDir(t),
		"-user", factoryUser, "-password-file", pw, "-ready-file", ready, "-cameras", fmt.Sprint(n),
		"-onvif", "127.0.0.1:0", "-onvifs", "127.0.0.1:0", "-onvif-state", s.state, "-onvif-reboot", "300ms"}, extra...)
	cmd := exec.Command(bin, args...)
	if ns != nil { // ip netns exec execs camsim: the PID is camsim's
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	waitFor(t, 30*time.Second, "camsim ready file", func() bool {
		select {
		case <-exited:
			t.Fatalf("camsim exited:\n%s", s.logs.String())
		default:
		}
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, s) == nil && len(s.ONVIF) == n
	})
	return s
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testTPM opens a fresh swtpm.
func testTPM(t testing.TB) *tpm.TPM {
	t.Helper()
	dev := swtpmtest.Start(t)
	tp, err := tpm.Open(dev, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// alarmLog collects alarms.
type alarmLog struct {
	mu sync.Mutex
	a  []Alarm
}

func (l *alarmLog) add(a Alarm) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.a = append(l.a, a)
}

func (l *alarmLog) find(cam string, kind AlarmKind, active bool) (Alarm, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.a {
		if a.Camera == cam && a.Kind == kind && a.Active == active {
			return a, true
		}
	}
	return Alarm{}, false
}

// newManager makes a Manager on a fresh directory with the given sealer,
// logging into logs.
func newManager(t testing.TB, dir string, sealer Sealer, logs io.Writer, mod func(*Config)) (*Manager, *alarmLog) {
	t.Helper()
	al := &alarmLog{}
	cfg := Config{Dir: dir, Sealer: sealer, Timeout: 5 * time.Second, CheckEvery: time.Hour, PullWait: 2 * time.Second,
		RebootTimeout: 20 * time.Second, Alarm: al.add}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return m, al
}

// adoptAll adopts every camera of s over HTTPS.
func adoptAll(t testing.TB, ctx context.Context, m *Manager, s *sim) map[string]string {
	t.Helper()
	ids := map[string]string{} // camsim name -> id
	for _, o := range s.ONVIF {
		c, err := m.Adopt(ctx, AdoptRequest{HTTP: o.HTTP, HTTPS: o.HTTPS, Username: factoryUser, Password: factoryPass})
		if err != nil {
			t.Fatalf("adopt %s: %v", o.Camera, err)
		}
		ids[o.Camera] = c.ID
	}
	return ids
}

// runManager runs m until the test ends.
func runManager(t testing.TB, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// nsNet returns a dialer and a packet listener that open their sockets
// inside the network namespace ns (a socket stays in the namespace it was
// made in), so a test can reach cameras in a namespace it created.
func nsNet(t testing.TB, ns *nstest.NS) (DialFunc, ListenPacketFunc) {
	t.Helper()
	path := "/run/netns/" + ns.Name
	in := func(f func()) error {
		target, err := os.Open(path)
		if err != nil {
			return err
		}
		defer target.Close()
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			return err
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			return err
		}
		f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			return err // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		return nil
	}
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		if e := in(func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) }); e != nil {
			return nil, e
		}
		return c, err
	}
	listen := func(ctx context.Context, network, addr string) (c net.PacketConn, err error) {
		if e := in(func() { c, err = (&net.ListenConfig{}).ListenPacket(ctx, network, addr) }); e != nil {
			return nil, e
		}
		return c, err
	}
	return dial, listen
}

// noSecretIn fails if any password appears in text.
func noSecretIn(t testing.TB, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("a camera password appears in %s", what)
		}
	}
}
