package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// need fails the test, naming the package to install, when a tool is missing.
func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: scripts/deps.sh installs it (make test) — %v", tool, err)
		}
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// signingCert makes a self-signed P-256 CA certificate and key for RAUC bundles.
func signingCert(t testing.TB, dir, cn string) (cert, key string) {
	t.Helper()
	need(t, "openssl")
	cert, key = filepath.Join(dir, cn+".cert.pem"), filepath.Join(dir, cn+".key.pem")
	run(t, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN="+cn, "-addext", "basicConstraints=critical,CA:TRUE")
	return cert, key
}

// makeBundle builds a real RAUC bundle (plain format: the CI kernel has no device mapper) whose one image
// is payload, and returns its path.
func makeBundle(t testing.TB, dir, cert, key, compatible, version string, payload []byte) string {
	t.Helper()
	need(t, "rauc", "mksquashfs")
	src, err := os.MkdirTemp(dir, "bundle-src-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "root.img"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	man := fmt.Sprintf("[update]\ncompatible=%s\nversion=%s\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=root.img\n", compatible, version)
	if err := os.WriteFile(filepath.Join(src, "manifest.raucm"), []byte(man), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.raucb", compatible, version, time.Now().UnixNano()))
	run(t, "rauc", "bundle", "--cert="+cert, "--key="+key, src, out)
	return out
}

// raucSystem is a RAUC service on a private D-Bus with two file-backed root slots and a GRUB environment.
type raucSystem struct {
	dir, conf, grubenv, slotA, slotB, keyring string
	env                                       []string
	svc                                       *exec.Cmd
	t                                         testing.TB
}

const testCompatible = "nvr-test"

func startRAUC(t testing.TB, keyring string) *raucSystem {
	t.Helper()
	need(t, "rauc", "dbus-daemon", "grub-editenv")
	// Unix socket paths are short: keep the bus outside the long test temp path.
	dir, err := os.MkdirTemp("", "rauc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &raucSystem{dir: dir, t: t, keyring: keyring,
		conf: filepath.Join(dir, "system.conf"), grubenv: filepath.Join(dir, "grubenv"),
		slotA: filepath.Join(dir, "slotA"), slotB: filepath.Join(dir, "slotB")}
	for _, f := range []string{s.slotA, s.slotB} {
		if err := os.WriteFile(f, bytes.Repeat([]byte{'A'}, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	g := GRUBEnv{Path: s.grubenv}
	if err := g.Set(context.Background(), map[string]string{"ORDER": "A B", "A_OK": "1", "B_OK": "1", "A_TRY": "0", "B_TRY": "0"}); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`[system]
compatible=%s
bootloader=grub
grubenv=%s
statusfile=%s/status.raucs
mountprefix=%s/mnt

[keyring]
path=%s

[slot.rootfs.0]
device=%s
type=raw
bootname=A

[slot.rootfs.1]
device=%s
type=raw
bootname=B
`, testCompatible, s.grubenv, dir, dir, keyring, s.slotA, s.slotB)
	if err := os.MkdirAll(filepath.Join(dir, "mnt"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	busConf := fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=%s/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="root"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy></busconfig>`, dir)
	if err := os.WriteFile(filepath.Join(dir, "bus.conf"), []byte(busConf), 0o600); err != nil {
		t.Fatal(err)
	}
	bus := exec.Command("dbus-daemon", "--config-file="+filepath.Join(dir, "bus.conf"), "--nofork", "--nopidfile")
	if err := bus.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Process.Kill(); bus.Wait() })
	waitFor(t, 10*time.Second, "D-Bus socket", func() bool {
		c, err := net.Dial("unix", filepath.Join(dir, "bus"))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	s.env = []string{"DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + filepath.Join(dir, "bus")}
	s.boot("A")
	return s
}

// boot (re)starts the RAUC service as if the machine had booted the slot with that bootname.
func (s *raucSystem) boot(bootname string) {
	t := s.t
	t.Helper()
	if s.svc != nil {
		s.svc.Process.Kill()
		s.svc.Wait()
	}
	var log bytes.Buffer
	svc := exec.Command("rauc", "service", "--conf="+s.conf, "--override-boot-slot="+bootname)
	svc.Env = append(os.Environ(), s.env...)
	svc.Stdout, svc.Stderr = &log, &log
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	s.svc = svc
	t.Cleanup(func() {
		if svc.ProcessState == nil {
			svc.Process.Kill()
			svc.Wait()
		}
	})
	r := s.installer()
	waitFor(t, 15*time.Second, "RAUC service", func() bool {
		st, err := r.Status(context.Background())
		return err == nil && st.Booted == bootname
	})
}

func (s *raucSystem) installer() RAUC {
	return RAUC{Conf: s.conf, Env: s.env, Timeout: 30 * time.Second}
}

// snapshot is a digest of everything an update may change: both slots and the boot environment.
func (s *raucSystem) snapshot() string {
	h := sha256.New()
	for _, f := range []string{s.slotA, s.slotB, s.grubenv} {
		b, err := os.ReadFile(f)
		if err != nil {
			s.t.Fatal(err)
		}
		h.Write(b)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
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

// fleet is a TUF repository made by Repo and served by a static file server on loopback.
type fleet struct {
	repo *Repo
	srv  *httptest.Server
	now  time.Time
}

func newFleet(t testing.TB, now time.Time, opts RepoOptions) *fleet {
	t.Helper()
	dir := t.TempDir()
	f := &fleet{now: now}
	f.repo = &Repo{Dir: dir, KeyDirs: []string{filepath.Join(dir, "keys")}, Now: func() time.Time { return f.now }}
	if err := f.repo.Init(opts); err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(http.FileServer(http.Dir(filepath.Join(dir, "repository"))))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fleet) root(t testing.TB) []byte {
	t.Helper()
	b, err := f.repo.RootJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
