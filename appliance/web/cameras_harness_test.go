package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/camera"
	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/internal/testpeer"
	"github.com/edgenvr/nvr/tpm"
	"golang.org/x/sys/unix"
)

// The simulated cameras' factory account, as an installer finds it.
const camFactoryUser, camFactoryPass = "admin", "factory-Pass-123"

var camsimBin struct {
	once sync.Once
	path string
	err  error
}

// camsimPath builds cmd/camsim (and the clips it serves) once per test binary.
func camsimPath(t testing.TB) string {
	t.Helper()
	camsimBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "nvr-web-camsim-")
		if err != nil {
			camsimBin.err = err
			return
		}
		camsimBin.path = filepath.Join(dir, "camsim")
		cmd := exec.Command("go", "build", "-o", camsimBin.path, "./cmd/camsim")
		cmd.Dir = testpeer.Root(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			camsimBin.err = fmt.Errorf("go build camsim: %v\n%s", err, out)
			return
		}
		if out, err := exec.Command(filepath.Join(testpeer.Root(t), "scripts", "clips.sh"), camClipDir(t)).CombinedOutput(); err != nil {
			camsimBin.err = fmt.Errorf("scripts/clips.sh: %v\n%s", err, out)
		}
	})
	if camsimBin.err != nil {
		t.Fatal(camsimBin.err)
	}
	return camsimBin.path
}

func camClipDir(t testing.TB) string { return filepath.Join(testpeer.Root(t), "build", "clips") }

// camSim is a running camsim with ONVIF devices (HTTP and HTTPS each).
type camSim struct {
	Control string `json:"control"`
	ONVIF   []struct {
		Camera string `json:"camera"`
		HTTP   string `json:"http"`
		HTTPS  string `json:"https"`
	} `json:"onvif"`
	state string
	logs  *lockedBuffer
}

type camSimState struct {
	Firmware string `json:"firmware"`
	Serial   string `json:"serial"`
	MAC      string `json:"mac"`
	Users    []struct {
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"users"`
}

// State reads camsim's device state file (users, firmware, identity), written on every change.
func (s *camSim) State(t testing.TB) map[string]camSimState {
	t.Helper()
	b, err := os.ReadFile(s.state)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]camSimState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// startCamSim runs camsim with n ONVIF cameras and stops it by PID when the test ends.
func startCamSim(t testing.TB, n int, extra ...string) *camSim {
	t.Helper()
	bin := camsimPath(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(camFactoryPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &camSim{state: filepath.Join(dir, "state.json"), logs: &lockedBuffer{}}
	ready := filepath.Join(dir, "ready.json")
	args := append([]string{"-rtsp", "127.0.0.1:0", "-control", "127.0.0.1:0", "-clips", camClipDir(t),
		"-user", camFactoryUser, "-password-file", pw, "-ready-file", ready, "-cameras", fmt.Sprint(n),
		"-onvif", "127.0.0.1:0", "-onvifs", "127.0.0.1:0", "-onvif-state", s.state, "-onvif-reboot", "300ms"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("camsim exited:\n%s", s.logs.String())
		default:
		}
		if b, err := os.ReadFile(ready); err == nil && json.Unmarshal(b, s) == nil && len(s.ONVIF) == n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("camsim not ready after 30 s:\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// camEnv is a web server with a real camera manager (registry sealed by the same swtpm) and camsim.
type camEnv struct {
	*env
	mgr  *camera.Manager
	sim  *camSim
	mlog *lockedBuffer
}

// startCameraEnv starts swtpm, authz, a camera manager (discovery on iface, "" for none), the web
// server with the camera pages, and camsim with n ONVIF cameras.
func startCameraEnv(t *testing.T, n int, iface string, simArgs ...string) *camEnv {
	t.Helper()
	sim := startCamSim(t, n, simArgs...)
	dev := swtpmtest.Start(t)
	logs, console := &lockedBuffer{}, &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tp, err := tpm.Open(dev, log.With("part", "tpm"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := tp.TLSKey()
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := camera.New(camera.Config{Dir: t.TempDir(), Sealer: tp, Interface: iface, Timeout: 5 * time.Second,
		CheckEvery: time.Hour, PullWait: 2 * time.Second, RebootTimeout: 20 * time.Second}, log.With("part", "camera"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := fmt.Sprintf("https://localhost:%d", ln.Addr().(*net.TCPAddr).Port)
	clk := &clock{}
	az, err := authz.New(authz.Config{DataDir: t.TempDir(), Signer: key, Sealer: tp, Now: clk.Now, Sleep: clk.Sleep, Argon2: testArgon2,
		RPID: "localhost", RPOrigins: []string{origin}}, log.With("part", "authz"))
	if err != nil {
		t.Fatal(err)
	}
	app := &fakeAppliance{}
	srv, err := New(Config{Listener: ln, Authz: az, Key: key, Status: app, Now: clk.Now,
		Cameras: &Cameras{Fleet: mgr, MaxImage: 4 << 20},
		Display: func(code string, exp time.Time) {
			fmt.Fprintf(console, "SETUP CODE %s (valid until %s)\n", code, exp.Format(time.RFC3339))
		}}, log.With("part", "web"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	go func() { done <- srv.Run(ctx) }()
	go func() { done <- az.Run(ctx) }()
	go func() { done <- mgr.Run(ctx) }()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	e := &env{t: t, srv: srv, az: az, clk: clk, app: app, logs: logs, console: console, addr: ln.Addr().String(),
		origin: origin, pool: pool, tlsKey: key, cancel: cancel}
	ce := &camEnv{env: e, mgr: mgr, sim: sim, mlog: logs}
	t.Cleanup(func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
		if err := az.Close(); err != nil {
			t.Errorf("authz close: %v", err)
		}
		if err := key.Close(); err != nil {
			t.Errorf("tls key close: %v", err)
		}
		if err := tp.Close(); err != nil {
			t.Errorf("tpm close: %v", err)
		}
	})
	e.waitFor(10*time.Second, "the server to answer", func() bool {
		resp, err := e.client("").Get(e.origin + "/login")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return ce
}

// camsimImage is a firmware image camsim accepts (or rejects when corrupt), with its vendor checksum.
func camsimImage(version string, corrupt bool) ([]byte, string) {
	payload := []byte("payload of " + version)
	sum := sha256.Sum256(payload)
	if corrupt {
		payload[0] ^= 0xff
	}
	data := append([]byte(fmt.Sprintf("CAMSIM-FIRMWARE 1\nmodel: CamSim-1080\nversion: %s\nsha256: %x\n\n", version, sum)), payload...)
	vs := sha256.Sum256(data)
	return data, hex.EncodeToString(vs[:])
}

// multipartBody builds a multipart form with fields (in order) and an optional image file.
func multipartBody(t testing.TB, fields [][2]string, image []byte) (string, *bytes.Buffer) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range fields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if image != nil {
		fw, err := mw.CreateFormFile("image", "camsim-2.0.0.bin")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write(image); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), &b
}

// do sends a request with the session cookie already in c's jar and the site's Origin.
func (e *env) send(c *http.Client, method, path, contentType string, body io.Reader, hdr map[string]string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.origin+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Origin", e.origin)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// auditHas reports whether the audit log holds an entry of subject's with action, result and a reason
// containing reason.
func (e *env) auditHas(subject, action, result, reason string) bool {
	es, err := e.az.AuditEntries(authz.AuditFilter{Action: action, Result: result, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, en := range es {
		if strings.HasPrefix(en.Subject, subject) && strings.Contains(en.Reason, reason) && en.Source != "" {
			return true
		}
	}
	return false
}
