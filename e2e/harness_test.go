// Package e2e runs the appliance's binaries against real peers: camsim and GStreamer's RTSP server as
// cameras, swtpm as the TPM, ffprobe as the judge of what was exported.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/internal/testpeer"
)

// bins holds the binaries built once for the whole run.
var bins struct {
	once sync.Once
	dir  string
	err  error
}

// command returns the path of a command built from cmd/NAME.
func command(t testing.TB, name string) string {
	t.Helper()
	bins.once.Do(func() {
		dir, err := os.MkdirTemp("", "nvr-e2e-bin-")
		if err != nil {
			bins.err = err
			return
		}
		bins.dir = dir
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/nvrd", "./cmd/nvr", "./cmd/camsim")
		cmd.Dir = testpeer.Root(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			bins.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// clips returns the directory of camsim's clips, making them if needed.
func clips(t testing.TB) string {
	t.Helper()
	root := testpeer.Root(t)
	dir := filepath.Join(root, "build", "clips")
	cmd := exec.Command(filepath.Join(root, "scripts", "clips.sh"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/clips.sh: %v\n%s", err, out)
	}
	return dir
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proc is a background process started by a test and stopped by PID.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	mu   sync.Mutex
	out  bytes.Buffer
}

func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan struct{})}
	w := &lockedWriter{mu: &p.mu, w: &p.out}
	p.cmd.Stdout = w
	p.cmd.Stderr = w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// output returns what the process printed so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	if p.cmd.Process != nil && !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM and waits up to d for a clean exit.
func (p *proc) stop(t testing.TB, d time.Duration) {
	t.Helper()
	if p.exited() {
		t.Fatalf("process had already exited: %v\n%s", p.err, tail(p.output(), 3000))
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("process exited with %v\n%s", p.err, tail(p.output(), 3000))
		}
	case <-time.After(d):
		p.kill()
		t.Fatalf("process did not stop within %v of SIGTERM\n%s", d, tail(p.output(), 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// camsim is a running simulated camera set.
type camsim struct {
	*proc
	RTSP, Control string
	Password      string
	readyFile     string
}

const cameraUser = "admin"

func startCamsim(t testing.TB, cameras int, extra ...string) *camsim {
	t.Helper()
	dir := t.TempDir()
	pw := "cam-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-Xq9"
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "ready.json")
	args := append([]string{"-rtsp", "127.0.0.1:0", "-cameras", strconv.Itoa(cameras), "-clips", clips(t),
		"-user", cameraUser, "-password-file", pwFile, "-ready-file", ready, "-log-level", "warn"}, extra...)
	p := start(t, command(t, "camsim"), args...)
	var addrs struct{ RTSP, Control string }
	waitFor(t, 30*time.Second, "camsim ready", func() bool {
		if p.exited() {
			t.Fatalf("camsim exited: %v\n%s", p.err, p.output())
		}
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &addrs) == nil && addrs.RTSP != ""
	})
	return &camsim{proc: p, RTSP: addrs.RTSP, Control: addrs.Control, Password: pw, readyFile: ready}
}

// frames returns how many frames camsim has sent per camera.
func (c *camsim) frames(t testing.TB) map[string]uint64 {
	t.Helper()
	resp, err := http.Get("http://" + c.Control + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st map[string]struct{ Frames uint64 }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for k, v := range st {
		out[k] = v.Frames
	}
	return out
}

func (c *camsim) fault(t testing.TB, query string) {
	t.Helper()
	resp, err := http.Post("http://"+c.Control+"/fault?"+query, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fault %s: %s %s", query, resp.Status, b)
	}
}

// appliance is an nvrd under test with its data directory and TPM.
type appliance struct {
	t     testing.TB
	data  string
	tpm   string
	creds string
	args  []string
	cur   *proc
	logs  []*proc // every nvrd run, for log checks
}

func newAppliance(t testing.TB, data string, cams map[string]string, password string, extra ...string) *appliance {
	t.Helper()
	if data == "" {
		data = filepath.Join(t.TempDir(), "data")
	}
	a := &appliance{t: t, data: data, tpm: swtpmtest.Start(t)}
	if password != "" {
		a.creds = filepath.Join(t.TempDir(), "creds")
		if err := os.WriteFile(a.creds, []byte("* "+cameraUser+" "+password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a.args = []string{"-data", data, "-tpm", a.tpm, "-log-format", "json", "-listen", "127.0.0.1:0"}
	if a.creds != "" {
		a.args = append(a.args, "-camera-credentials", a.creds)
	}
	for name, url := range cams {
		a.args = append(a.args, "-camera", name+"="+url)
	}
	a.args = append(a.args, extra...)
	return a
}

// start runs nvrd and waits until it records (recovery done and pipelines started).
func (a *appliance) start() *proc {
	a.t.Helper()
	p := start(a.t, command(a.t, "nvrd"), a.args...)
	a.cur = p
	a.logs = append(a.logs, p)
	waitFor(a.t, 60*time.Second, "nvrd recording", func() bool {
		if p.exited() {
			a.t.Fatalf("nvrd exited: %v\n%s", p.err, tail(p.output(), 4000))
		}
		return strings.Contains(p.output(), `"msg":"recording"`)
	})
	return p
}

// webURL waits for nvrd's "web server listening" record and returns its URL ("https://HOST:PORT/").
func (a *appliance) webURL(t testing.TB) string {
	t.Helper()
	var u string
	waitFor(t, 30*time.Second, "web server listening", func() bool {
		if ev := a.events("web server listening"); len(ev) > 0 {
			u, _ = ev[0]["url"].(string)
		}
		return u != ""
	})
	return u
}

var setupCodeRE = regexp.MustCompile(`SETUP CODE ([A-Z0-9-]+)`)

// setupCode waits for the one-time setup code on nvrd's console display and returns it.
func setupCode(t testing.TB, nvrd *proc) string {
	t.Helper()
	waitFor(t, 30*time.Second, "the setup code on the console", func() bool { return setupCodeRE.MatchString(nvrd.output()) })
	return setupCodeRE.FindStringSubmatch(nvrd.output())[1]
}

// events returns the JSON log records of every nvrd run whose msg is msg.
func (a *appliance) events(msg string) []map[string]any {
	var out []map[string]any
	for _, p := range a.logs {
		sc := bufio.NewScanner(strings.NewReader(p.output()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
				out = append(out, m)
			}
		}
	}
	return out
}

// allLogs returns everything every nvrd run printed.
func (a *appliance) allLogs() string {
	var b strings.Builder
	for _, p := range a.logs {
		b.WriteString(p.output())
	}
	return b.String()
}

// nvr runs the nvr command and returns its output and exit code.
func (a *appliance) nvr(args ...string) (string, int) {
	a.t.Helper()
	cmd := exec.Command(command(a.t, "nvr"), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		a.t.Fatalf("nvr %v: %v", args, err)
	}
	return string(out), 0
}

func (a *appliance) fsck() (string, int) { return a.nvr("fsck", "-data", a.data) }

func (a *appliance) mustFsckClean() string {
	a.t.Helper()
	out, code := a.fsck()
	if code != 0 {
		a.t.Fatalf("nvr fsck: exit %d\n%s", code, out)
	}
	return out
}

// export exports a camera's whole recording to a file and returns its path and nvr's output.
func (a *appliance) export(camera string, from, to time.Time) (string, string, int) {
	a.t.Helper()
	out := filepath.Join(a.t.TempDir(), camera+".mp4")
	text, code := a.nvr("export", "-data", a.data, "-tpm", a.tpm, "-camera", camera,
		"-from", from.Format(time.RFC3339Nano), "-to", to.Format(time.RFC3339Nano), "-o", out)
	return out, text, code
}

// probe is what ffprobe says of an exported file.
type probe struct {
	Codec         string
	Width, Height int
	Frames        int
	PTS           []float64 // presentation times of every frame, seconds
}

func ffprobe(t testing.TB, path string) probe {
	t.Helper()
	cmd := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
		"stream=codec_name,width,height:frame=pts_time", "-of", "json", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, stderr.String())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Fatalf("ffprobe %s reported errors:\n%s", path, tail(s, 2000))
	}
	var res struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Width     int
			Height    int
		}
		Frames []struct {
			PTSTime string `json:"pts_time"`
		}
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ffprobe json: %v", err)
	}
	if len(res.Streams) != 1 {
		t.Fatalf("ffprobe: %d video streams", len(res.Streams))
	}
	p := probe{Codec: res.Streams[0].CodecName, Width: res.Streams[0].Width, Height: res.Streams[0].Height, Frames: len(res.Frames)}
	for _, f := range res.Frames {
		v, err := strconv.ParseFloat(f.PTSTime, 64)
		if err != nil {
			t.Fatalf("ffprobe: frame pts %q", f.PTSTime)
		}
		p.PTS = append(p.PTS, v)
	}
	return p
}

// maxGap returns the largest step between consecutive frame times.
func (p probe) maxGap() float64 {
	g := 0.0
	for i := 1; i < len(p.PTS); i++ {
		g = max(g, p.PTS[i]-p.PTS[i-1])
	}
	return g
}

// startGst starts GStreamer's RTSP server and returns its stream URL.
func startGst(t testing.TB) string {
	t.Helper()
	return testpeer.StartGst(t, "h264", 0).URL
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
