//go:build imagetest

package rootfs

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgenvr/nvr/internal/testpeer"
)

// The builds rootfs/imagetest.sh prepares (make image-test).
const (
	testDir     = "../build/imagetest"
	compatible  = "nvr-x86-generic"
	boardName   = "x86-generic"
	badVersion  = "1.1.0"
	goodVersion = "1.2.0"
)

// TestImage boots the x86 disk image (firmware 1.0.0, slot A) in qemu (TCG: no KVM on these machines)
// with swtpm as its TPM, one qemu process across every reboot, and follows it on the serial console:
//
//  1. A boots to nvrd READY and the setup page answers over HTTPS through a forwarded port; the update
//     agent in nvrd marks A good once nvrd is ready and healthy.
//  2. The fleet server (a static file server on the host, 10.0.2.2 from the guest) offers 1.1.0, whose nvrd
//     exits before READY. The agent downloads it, RAUC installs it into slot B, the machine reboots into B
//     on trial; the trial guard reboots each time nvrd keeps failing; when B's three attempts are used up
//     GRUB boots A again, and the agent records 1.1.0 as failed and never fetches it again.
//  3. The fleet offers 1.2.0: installed into B, booted, marked good once nvrd is healthy.
func TestImage(t *testing.T) {
	for _, tool := range []string{"qemu-system-x86_64", "swtpm", "mkfs.ext4", "sfdisk", "rauc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: %v", tool, err)
		}
	}
	disk := filepath.Join(testDir, "a", "disk-amd64.img")
	for _, f := range []string{disk, "../bin/nvr", filepath.Join(testDir, "bad", "rootfs-amd64.squashfs"),
		filepath.Join(testDir, "good", "rootfs-amd64.squashfs")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s: run make image-test (rootfs/imagetest.sh prepares the builds): %v", f, err)
		}
	}
	dir, err := os.MkdirTemp("", "nvrimg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	// The fleet: a copy of the test release (the image trusts its root and bundle certificate), with fresh
	// metadata versions on every run, served on loopback.
	rel := filepath.Join(dir, "release")
	if out, err := exec.Command("cp", "-a", filepath.Join(testDir, "release"), rel).CombinedOutput(); err != nil {
		t.Fatalf("copy release: %v %s", err, out)
	}
	fl := &fleet{t: t, rel: rel, dir: dir}
	fl.publish(badVersion, filepath.Join(testDir, "bad", "rootfs-amd64.squashfs"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fl.handler(http.FileServer(http.Dir(filepath.Join(rel, "repository")))), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	fleetPort := ln.Addr().(*net.TCPAddr).Port

	copyDisk := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("cp", "--sparse=always", disk, copyDisk).CombinedOutput(); err != nil {
		t.Fatalf("copy disk: %v %s", err, out)
	}
	writeDataPartition(t, dir, copyDisk, map[string]string{
		"nvrd.env": fmt.Sprintf("NVR_UPDATE_REPO=http://10.0.2.2:%d/\nNVRD_ARGS=-update-confirm-after 10s -update-interval 10s\n", fleetPort),
		// nvrd exits at once in the bad firmware: three failures are enough to call the boot failed.
		"nvr-trial.env": "NVR_TRIAL_MAX_FAILURES=3\nNVR_TRIAL_DEADLINE=900\n",
	})

	vm := startVM(t, dir, copyDisk)
	start := time.Now()

	// 1. Slot A to READY; the setup page over HTTPS; A marked good.
	vm.waitFor(8*time.Minute, "GRUB boots slot A", "booting slot A")
	vm.waitFor(8*time.Minute, "nvrd.service started (READY=1)", "Started nvrd.service")
	t.Logf("boot to nvrd READY in qemu (TCG): %.1f s", time.Since(start).Seconds())
	checkSetupPage(t, vm.httpsPort)
	vm.waitFor(3*time.Minute, "slot A marked good", `"msg":"booted slot marked good"`)

	// 2. The bad 1.1.0: downloaded, installed into B, tried three times, rolled back to A.
	t0 := time.Now()
	vm.waitFor(10*time.Minute, "1.1.0 installed", `"msg":"installed firmware; rebooting into it on trial"`)
	t.Logf("download and install of the %d-byte 1.1.0 bundle in the guest (TCG, from the poll to installed): %.1f s",
		fl.size(badVersion), time.Since(t0).Seconds())
	for i := 1; i <= 3; i++ {
		vm.waitFor(5*time.Minute, fmt.Sprintf("boot %d of slot B", i), "booting slot B")
		vm.waitFor(5*time.Minute, fmt.Sprintf("trial guard ends B's boot %d", i), "trial-guard: slot B: nvrd.service failed")
	}
	// GRUB's own line ("slot B used up its boot attempts") reaches the serial port through SeaBIOS's serial
	// console, which redraws a text screen and has been seen to drop it; the boot line names the counters.
	vm.waitForRe(5*time.Minute, "GRUB falls back to A after B's three attempts", regexp.MustCompile(`booting slot A \(A_TRY=[1-3] B_TRY=3\)`))
	vm.waitFor(8*time.Minute, "the agent records 1.1.0 as failed", `"msg":"firmware did not become healthy in its boot attempts`)
	vm.waitFor(3*time.Minute, "slot A marked good again", `"msg":"booted slot marked good"`)
	t.Logf("rolled back to A after three failed boots of 1.1.0: %.1f s after the install", time.Since(t0).Seconds())
	// The agent polls again and leaves 1.1.0 alone.
	polls := fl.polls.Load()
	waitCond(t, 2*time.Minute, "the agent's next poll", func() bool { return fl.polls.Load() > polls+1 })
	if n := fl.fetches(badVersion); n != 1 {
		t.Fatalf("the failed 1.1.0 was downloaded %d times; want once", n)
	}

	// 3. The good 1.2.0: installed into B, booted, marked good.
	fl.publish(goodVersion, filepath.Join(testDir, "good", "rootfs-amd64.squashfs"))
	t1 := time.Now()
	vm.waitFor(10*time.Minute, "1.2.0 installed", `"msg":"installed firmware; rebooting into it on trial"`)
	t.Logf("download and install of the %d-byte 1.2.0 bundle in the guest (TCG): %.1f s", fl.size(goodVersion), time.Since(t1).Seconds())
	vm.waitFor(5*time.Minute, "boot of slot B", "booting slot B")
	vm.waitFor(8*time.Minute, "nvrd READY on B", "Started nvrd.service")
	vm.waitFor(3*time.Minute, "1.2.0 confirmed", `"msg":"firmware update confirmed"`)
	if s := vm.since(); !strings.Contains(s, `"version":"`+goodVersion+`"`) {
		t.Fatalf("confirmation does not name %s:\n%s", goodVersion, tail(s, 30))
	}
	checkSetupPage(t, vm.httpsPort)
	t.Logf("update A→B (1.2.0) to slot B marked good: %.1f s; whole run %.1f s", time.Since(t1).Seconds(), time.Since(start).Seconds())
}

// fleet is the test's TUF repository, published with `nvr release`, and counts what the guest fetches.
type fleet struct {
	t        *testing.T
	rel, dir string
	polls    atomic.Int64
	mu       sync.Mutex
	got      map[string]int
	sizes    map[string]int64
}

func (f *fleet) publish(version, squashfs string) {
	t := f.t
	bundle := filepath.Join(f.dir, "nvr-"+version+".raucb")
	for _, args := range [][]string{
		{"release", "bundle", "-dir", f.rel, "-rootfs", squashfs, "-compatible", compatible, "-version", version, "-format", "verity", "-o", bundle},
		{"release", "add", "-dir", f.rel, "-bundle", bundle, "-board", boardName, "-compatible", compatible, "-version", version},
	} {
		if out, err := exec.Command("../bin/nvr", args...).CombinedOutput(); err != nil {
			t.Fatalf("nvr %s: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
	}
	st, err := os.Stat(bundle)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	if f.sizes == nil {
		f.sizes = map[string]int64{}
	}
	f.sizes[version] = st.Size()
	f.mu.Unlock()
	os.Remove(bundle)
}

func (f *fleet) handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/timestamp.json") {
			f.polls.Add(1)
		}
		if strings.HasSuffix(r.URL.Path, ".raucb") {
			f.mu.Lock()
			if f.got == nil {
				f.got = map[string]int{}
			}
			f.got[filepath.Base(r.URL.Path)]++
			f.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func (f *fleet) fetches(version string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for name, c := range f.got {
		if strings.HasSuffix(name, ".nvr-"+version+".raucb") {
			n += c
		}
	}
	return n
}

func (f *fleet) size(version string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sizes[version]
}

// writeDataPartition replaces the disk's data partition (the fourth) with a fresh ext4 holding files under
// etc/ (tmpfiles.d gives /data/nvr its owner at boot).
func writeDataPartition(t *testing.T, dir, disk string, etc map[string]string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk: %v", err)
	}
	var pt struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Start, Size int64
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil || len(pt.PartitionTable.Partitions) != 4 {
		t.Fatalf("partition table: %v %s", err, out)
	}
	ss := pt.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	p := pt.PartitionTable.Partitions[3]
	tree := filepath.Join(dir, "data")
	for _, d := range []string{"etc", "nvr"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range etc {
		if err := os.WriteFile(filepath.Join(tree, "etc", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "data.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "nvr-data", "-d", tree, img, fmt.Sprintf("%dk", p.Size*ss/1024)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if out, err := exec.Command("dd", "if="+img, "of="+disk, fmt.Sprintf("bs=%d", ss), fmt.Sprintf("seek=%d", p.Start),
		"conv=notrunc,sparse", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	os.Remove(img)
}

// vm is one qemu process; the guest reboots inside it.
type vm struct {
	t         *testing.T
	mu        sync.Mutex
	serial    bytes.Buffer
	mark      int // offset of the serial text already matched
	httpsPort int
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]`)

func startVM(t *testing.T, dir, disk string) *vm {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, "tpm"), 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "swtpm.sock")
	tpm := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+filepath.Join(dir, "tpm"),
		"--ctrl", "type=unixio,path="+sock, "--flags", "startup-clear")
	if err := tpm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Process.Kill(); tpm.Wait() })
	waitCond(t, 10*time.Second, "swtpm socket", func() bool { _, err := os.Stat(sock); return err == nil })

	v := &vm{t: t, httpsPort: testpeer.FreePort(t)}
	// The NIC sits behind a PCIe root port so the guest names it enp1s0, the x86 box's client port.
	cmd := exec.Command("qemu-system-x86_64", "-machine", "q35", "-m", "1024", "-smp", "2", "-nographic",
		"-drive", "file="+disk+",format=raw,if=virtio",
		"-chardev", "socket,id=chrtpm,path="+sock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:443", v.httpsPort),
		"-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1", "-device", "virtio-net-pci,netdev=n0,bus=rp1")
	w := writerFunc(func(p []byte) (int, error) { v.mu.Lock(); defer v.mu.Unlock(); return v.serial.Write(p) })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			name := filepath.Join(os.TempDir(), "nvr-image-serial.log")
			os.WriteFile(name, []byte(v.text()), 0o644)
			v.mu.Lock()
			os.WriteFile(name+".raw", v.serial.Bytes(), 0o644)
			v.mu.Unlock()
			t.Logf("serial console saved to %s (with its escape sequences: %s.raw)", name, name)
		}
	})
	return v
}

func (v *vm) text() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return ansi.ReplaceAllString(v.serial.String(), "")
}

// since returns the serial text after the last match.
func (v *vm) since() string {
	s := v.text()
	if v.mark > len(s) {
		return ""
	}
	return s[v.mark:]
}

// waitFor waits until the serial console shows marker after the previous match, and moves past it.
func (v *vm) waitFor(d time.Duration, what, marker string) {
	v.t.Helper()
	v.waitForRe(d, what, regexp.MustCompile(regexp.QuoteMeta(marker)))
}

// waitForRe is waitFor with a regular expression.
func (v *vm) waitForRe(d time.Duration, what string, re *regexp.Regexp) {
	v.t.Helper()
	waitCond(v.t, d, what, func() bool {
		s := v.text()
		rest := s[min(v.mark, len(s)):]
		for _, bad := range []string{"Kernel panic", "grub>", "emergency mode"} {
			if strings.Contains(rest, bad) {
				v.t.Fatalf("boot failed (%s):\n%s", bad, tail(rest, 40))
			}
		}
		loc := re.FindStringIndex(rest)
		if loc == nil {
			return false
		}
		v.mark += loc[1]
		return true
	})
}

// checkSetupPage: the web server answers on the forwarded HTTPS port, sending a fresh appliance to /setup.
// The certificate is the appliance's own (its TLS key lives in the TPM); this test checks reachability, the
// web tests check the rest.
func checkSetupPage(t *testing.T, port int) {
	t.Helper()
	client := &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	base := fmt.Sprintf("https://127.0.0.1:%d/", port)
	var resp *http.Response
	waitCond(t, 2*time.Minute, "HTTPS on the forwarded port", func() bool {
		var err error
		resp, err = client.Get(base)
		return err == nil
	})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(resp.Header.Get("Location"), "/setup") {
		t.Fatalf("GET /: %s → %q, want a redirect to /setup", resp.Status, resp.Header.Get("Location"))
	}
	page, err := client.Get(base + "setup")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(page.Body, 1<<20))
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(string(body)), "<form") {
		t.Fatalf("GET /setup: %s\n%s", page.Status, body)
	}
	if page.TLS == nil || page.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("setup page not over TLS 1.2+: %+v", page.TLS)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func waitCond(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
