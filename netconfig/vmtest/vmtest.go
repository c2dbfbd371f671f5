// Package vmtest runs a package's tests inside a throw-away virtual machine: Debian's kernel
// (linux-image-amd64) booted by qemu-system-x86_64 (TCG) from an initramfs built at test time. The
// initramfs holds the package's test binary (built static with CGO_ENABLED=0), busybox, the kernel modules
// the tests need (loaded in modules.dep order), and any programs the tests run, copied with their shared
// libraries. It exists for what the host kernel lacks (VLAN sub-interfaces, bridge VLAN filtering, MACsec).
//
// A test calls Run on the host; Run boots the machine, whose init runs the same test (with EnvInside set)
// and powers off. Run reads the verdict from the serial console and reports every subtest of the run inside
// the machine as a subtest of its own. Inside reports whether the caller already is that inner run.
//
// Only tests import this package. It never touches the host's network or modules: everything it changes
// lives inside the machine, and qemu is stopped by PID when the test ends.
package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvInside is set (to "1") in the environment of the test binary run inside the machine.
const EnvInside = "NVR_VMTEST"

// Inside reports whether this process is the test binary run inside the machine.
func Inside() bool { return os.Getenv(EnvInside) == "1" }

// Config says what the machine holds and how it runs.
type Config struct {
	// Modules are kernel modules to load, by name (e.g. "8021q", "macsec"); their dependencies from
	// modules.dep are loaded first.
	Modules []string
	// ModuleDirs are module directories (relative to /lib/modules/VERSION, e.g. "kernel/net/netfilter")
	// copied whole, so the kernel's on-demand module requests (through busybox modprobe and the
	// modules.alias table) find what the explicit list does not name.
	ModuleDirs []string
	// Programs are host programs (dynamically linked or static) copied to the same path in the machine,
	// with the shared libraries ldd names.
	Programs []string
	// Files maps a path in the machine to a host file copied there (mode kept).
	Files map[string]string
	// Env is added to the environment of the test binary.
	Env map[string]string
	// Memory is the machine's memory in MiB (default 512); CPUs its processor count (default 2).
	Memory, CPUs int
	// Timeout bounds the whole run, boot to power-off (default 4 min); the inner test gets a little less.
	Timeout time.Duration
}

// Sentinel errors callers may branch on.
var (
	ErrNoKernel = errors.New("vmtest: no Debian kernel with modules found (install linux-image-amd64)")
	ErrModule   = errors.New("vmtest: kernel module not found")
)

// Kernel finds the newest /boot/vmlinuz-VERSION that has /lib/modules/VERSION/modules.dep.
func Kernel() (vmlinuz, modDir string, err error) {
	return kernelIn("/boot", "/lib/modules")
}

func kernelIn(boot, mods string) (string, string, error) {
	ks, _ := filepath.Glob(filepath.Join(boot, "vmlinuz-*"))
	sort.Sort(sort.Reverse(sort.StringSlice(ks)))
	for _, k := range ks {
		ver := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		d := filepath.Join(mods, ver)
		if _, err := os.Stat(filepath.Join(d, "modules.dep")); err == nil {
			return k, d, nil
		}
	}
	return "", "", ErrNoKernel
}

// modName is a module's name as modprobe spells it: file name without .ko(.xz|.zst|.gz), dashes as
// underscores.
func modName(p string) string {
	b := filepath.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// ModuleOrder reads a modules.dep and returns the relative paths of the named modules and of everything
// they depend on, each once, dependencies before their users (the order insmod needs).
func ModuleOrder(modulesDep io.Reader, names []string) ([]string, error) {
	deps := map[string][]string{}
	path := map[string]string{}
	sc := bufio.NewScanner(modulesDep)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n := modName(mod)
		path[n] = mod
		deps[n] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	var out []string
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(n string) error
	visit = func(n string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("modules.dep: dependency cycle at %s", n)
		case 2:
			return nil
		}
		p, ok := path[n]
		if !ok {
			return fmt.Errorf("%w: %s", ErrModule, n)
		}
		state[n] = 1
		// modules.dep lists the deepest dependency last: walk it from the end.
		ds := deps[n]
		for i := len(ds) - 1; i >= 0; i-- {
			if err := visit(modName(ds[i])); err != nil {
				return err
			}
		}
		state[n] = 2
		out = append(out, p)
		return nil
	}
	for _, n := range names {
		if err := visit(modName(n)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

var lddPath = regexp.MustCompile(`(?:=>\s*)?(/[^\s]+)\s+\(0x[0-9a-f]+\)`)

// SharedLibs lists the shared libraries (and the dynamic loader) a program needs, as ldd reports them. A
// static program needs none.
func SharedLibs(prog string) ([]string, error) {
	out, err := exec.Command("ldd", prog).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", prog, err, bytes.TrimSpace(out))
	}
	var libs []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", prog, strings.TrimSpace(l))
		}
		if m := lddPath.FindStringSubmatch(l); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

// initScript is the machine's /init: mounts, modules, the test binary, the verdict, power-off.
const initScript = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t tmpfs run /run
/bin/busybox mount -t tmpfs tmp /tmp
/bin/busybox --install -s /bin
echo /sbin/modprobe > /proc/sys/kernel/modprobe
echo NVRVM-BOOTED
for m in $(cat /etc/nvrvm/modules); do
  insmod /lib/modules/$(uname -r)/$m || echo "NVRVM-MODULE-FAILED $m"
done
ip link set lo up
set -a
. /etc/nvrvm/env
set +a
cd /src/pkg
/src/pkg/test.bin -test.v -test.run "$NVRVM_RUN" -test.timeout "$NVRVM_TIMEOUT"
rc=$?
echo "NVRVM-LOADED $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
echo "NVRVM-EXIT $rc"
sync
poweroff -f
echo o > /proc/sysrq-trigger
`

// Build writes the gzip-compressed initramfs for cfg with testBin as the test binary, set to run the tests
// that match run within timeout.
func Build(w io.Writer, cfg Config, testBin, run string, timeout time.Duration) error {
	_, modDir, err := Kernel()
	if err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	c := NewCPIO(zw)
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "root", "etc", "sbin", "usr/bin", "usr/sbin"} {
		if err := c.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := c.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	_ = c.Symlink("var/run", "/run")
	_ = c.Symlink("sbin/modprobe", "/bin/busybox")
	_ = c.Symlink("bin/sh", "busybox")
	copyFile := func(dst, src string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		st, err := os.Stat(src)
		if err != nil {
			return err
		}
		return c.File(dst, uint32(st.Mode().Perm()), b)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("busybox (busybox-static): %w", err)
	}
	if err := copyFile("bin/busybox", busybox); err != nil {
		return err
	}
	if err := c.File("init", 0o755, []byte(initScript)); err != nil {
		return err
	}
	// Modules, in load order, plus modules.dep and the alias tables for the kernel's on-demand requests.
	df, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return err
	}
	order, err := ModuleOrder(df, cfg.Modules)
	df.Close()
	if err != nil {
		return err
	}
	vmMods := "lib/modules/" + filepath.Base(modDir)
	for _, m := range order {
		if err := copyFile(vmMods+"/"+m, filepath.Join(modDir, m)); err != nil {
			return fmt.Errorf("module %s: %w", m, err)
		}
	}
	copied := map[string]bool{}
	for _, m := range order {
		copied[m] = true
	}
	for _, d := range cfg.ModuleDirs {
		err := filepath.WalkDir(filepath.Join(modDir, d), func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.Contains(e.Name(), ".ko") {
				return err
			}
			rel, _ := filepath.Rel(modDir, p)
			if copied[rel] {
				return nil
			}
			copied[rel] = true
			return copyFile(vmMods+"/"+rel, p)
		})
		if err != nil {
			return fmt.Errorf("module directory %s: %w", d, err)
		}
	}
	for _, f := range []string{"modules.dep", "modules.alias", "modules.symbols", "modules.builtin", "modules.softdep"} {
		if err := copyFile(vmMods+"/"+f, filepath.Join(modDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := c.File("etc/nvrvm/modules", 0o644, []byte(strings.Join(order, "\n")+"\n")); err != nil {
		return err
	}
	// Programs and their libraries, each once.
	seen := map[string]bool{}
	for _, p := range cfg.Programs {
		libs, err := SharedLibs(p)
		if err != nil {
			return err
		}
		for _, f := range append([]string{p}, libs...) {
			if seen[f] {
				continue
			}
			seen[f] = true
			if err := copyFile(f, f); err != nil {
				return fmt.Errorf("program %s: %w", f, err)
			}
		}
	}
	dsts := make([]string, 0, len(cfg.Files))
	for d := range cfg.Files {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	for _, d := range dsts {
		if err := copyFile(d, cfg.Files[d]); err != nil {
			return fmt.Errorf("file %s: %w", d, err)
		}
	}
	if err := copyFile("src/pkg/test.bin", testBin); err != nil {
		return err
	}
	env := map[string]string{
		EnvInside:         "1",
		"PATH":            "/usr/sbin:/usr/bin:/sbin:/bin", // iproute2 before busybox applets
		"LD_LIBRARY_PATH": "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu",
		"HOME":            "/root",
		"NVRVM_RUN":       run,
		"NVRVM_TIMEOUT":   timeout.String(),
	}
	for k, v := range cfg.Env {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var eb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&eb, "%s=%s\n", k, shellQuote(env[k]))
	}
	if err := c.File("etc/nvrvm/env", 0o644, []byte(eb.String())); err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Result is what the serial console said.
type Result struct {
	Booted   bool
	Exit     int // the test binary's exit status; -1 if it never said
	Modules  []string
	Subtests map[string]bool // "TestX/sub" → passed
	Passed   map[string]bool // top-level tests that passed
}

var (
	exitRE = regexp.MustCompile(`NVRVM-EXIT (\d+)$`)
	testRE = regexp.MustCompile(`^\s*--- (PASS|FAIL): (\S+) \(`)
)

// ParseConsole reads console output (lines end in \r\n on a serial line) until EOF, passing each line to
// each, and returns the verdict.
func ParseConsole(r io.Reader, each func(string)) (Result, error) {
	res := Result{Exit: -1, Subtests: map[string]bool{}, Passed: map[string]bool{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		if each != nil {
			each(l)
		}
		switch {
		case strings.HasSuffix(l, "NVRVM-BOOTED"):
			res.Booted = true
		case strings.HasPrefix(l, "NVRVM-MODULE-FAILED "):
			res.Modules = append(res.Modules, strings.TrimPrefix(l, "NVRVM-MODULE-FAILED "))
		}
		if m := exitRE.FindStringSubmatch(l); m != nil {
			res.Exit, _ = strconv.Atoi(m[1])
		}
		if m := testRE.FindStringSubmatch(l); m != nil {
			if strings.Contains(m[2], "/") {
				res.Subtests[m[2]] = m[1] == "PASS"
			} else {
				res.Passed[m[2]] = m[1] == "PASS"
			}
		}
	}
	return res, sc.Err()
}

// goTool is the go command that builds the test binary.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// BuildStatic builds a main package (a path relative to the module, like "./cmd/camsim") without cgo into
// dir and returns the binary's path.
func BuildStatic(dir, pkg, moduleRoot string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command(goTool(), "build", "-o", out, pkg)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// Run builds the calling package's test binary and the initramfs, boots the machine, runs the calling test
// inside it and fails t unless it passed there. Each subtest of the inner run becomes a subtest of t with
// the inner verdict.
func Run(t *testing.T, cfg Config) {
	t.Helper()
	if cfg.Memory == 0 {
		cfg.Memory = 512
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 4 * time.Minute
	}
	if d, ok := t.Deadline(); ok && time.Until(d)-10*time.Second < cfg.Timeout {
		cfg.Timeout = time.Until(d) - 10*time.Second
	}
	kernel, _, err := Kernel()
	if err != nil {
		t.Fatal(err)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 (qemu-system-x86): %v", err)
	}
	dir := t.TempDir()
	start := time.Now()
	bin := filepath.Join(dir, "test.bin")
	build := exec.Command(goTool(), "test", "-c", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	run := "^" + regexp.QuoteMeta(strings.Split(t.Name(), "/")[0]) + "$"
	inner := cfg.Timeout - 30*time.Second
	initrd := filepath.Join(dir, "initrd.gz")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if err := Build(f, cfg, bin, run, inner); err != nil {
		f.Close()
		t.Fatalf("initramfs: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(initrd)
	t.Logf("vmtest: test binary and initramfs (%d MiB) built in %v; booting %s", st.Size()>>20, time.Since(start).Round(time.Second), filepath.Base(kernel))

	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	cmd := exec.Command(qemu, "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", strconv.Itoa(cfg.CPUs),
		"-m", strconv.Itoa(cfg.Memory), "-nographic", "-no-reboot", "-nic", "none",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=3")
	cmd.Stdin = nil
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	boot := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	pw.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { _ = cmd.Process.Kill() }) } // by PID; the machine keeps nothing
	t.Cleanup(func() {
		stop()
		<-done
		pr.Close()
	})
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-done:
		}
	}()
	var console bytes.Buffer
	res, err := ParseConsole(pr, func(l string) {
		console.WriteString(l + "\n")
		t.Log("│ " + l)
	})
	if err != nil {
		t.Errorf("reading the console: %v", err)
	}
	took := time.Since(boot).Round(time.Second)
	if ctx.Err() != nil {
		t.Fatalf("vmtest: the machine did not finish within %v", cfg.Timeout)
	}
	if !res.Booted {
		t.Fatalf("vmtest: the machine never reached its init")
	}
	if len(res.Modules) > 0 {
		t.Errorf("vmtest: modules failed to load: %v", res.Modules)
	}
	names := make([]string, 0, len(res.Subtests))
	for n := range res.Subtests {
		names = append(names, n)
	}
	sort.Strings(names)
	prefix := t.Name() + "/"
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) || strings.Contains(strings.TrimPrefix(n, prefix), "/") {
			continue
		}
		ok := res.Subtests[n]
		t.Run(strings.TrimPrefix(n, prefix), func(t *testing.T) {
			if !ok {
				t.Error("failed inside the machine (its output is in the parent's log)")
			}
		})
	}
	top := strings.Split(t.Name(), "/")[0]
	if res.Exit != 0 || !res.Passed[top] {
		t.Fatalf("vmtest: %s inside the machine: exit status %d, passed %v", top, res.Exit, res.Passed[top])
	}
	t.Logf("vmtest: the machine ran %s and passed in %v", top, took)
}
