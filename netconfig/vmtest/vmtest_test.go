package vmtest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestCPIOUnpackedByBusybox(t *testing.T) {
	var b bytes.Buffer
	c := NewCPIO(&b)
	data := bytes.Repeat([]byte("frame"), 1001) // not a multiple of 4: padding matters
	for _, err := range []error{
		c.File("a/b/c.bin", 0o640, data),
		c.Dir("empty", 0o700),
		c.Symlink("a/link", "b/c.bin"),
		c.File("top", 0o755, []byte("x")),
		c.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox (busybox-static): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bb, "cpio", "-i", "-d")
	cmd.Dir, cmd.Stdin = dir, &b
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio -i: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "a", "link"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file through the symlink: %d bytes, %v", len(got), err)
	}
	for name, want := range map[string]os.FileMode{"a/b/c.bin": 0o640, "empty": os.ModeDir | 0o700, "top": 0o755} {
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode(), want)
		}
	}
	if err := NewCPIO(&b).File("../", 0o644, nil); err == nil {
		t.Error("an empty entry name was accepted")
	}
}

func TestModuleOrder(t *testing.T) {
	dep := `kernel/net/8021q/8021q.ko: kernel/net/802/garp.ko kernel/net/802/stp.ko kernel/net/802/mrp.ko kernel/net/llc/llc.ko
kernel/net/802/garp.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/802/mrp.ko:
kernel/net/llc/llc.ko:
kernel/crypto/ghash-generic.ko: kernel/crypto/gf128mul.ko
kernel/crypto/gf128mul.ko:
`
	got, err := ModuleOrder(strings.NewReader(dep), []string{"8021q", "ghash_generic", "stp"})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, p := range got {
		pos[modName(p)] = i
	}
	if len(got) != 7 {
		t.Fatalf("order %q: want 7 modules, each once", got)
	}
	for _, before := range [][2]string{{"llc", "stp"}, {"stp", "garp"}, {"garp", "8021q"}, {"mrp", "8021q"}, {"gf128mul", "ghash_generic"}} {
		if pos[before[0]] >= pos[before[1]] {
			t.Errorf("%s loads after %s: %q", before[0], before[1], got)
		}
	}
	if _, err := ModuleOrder(strings.NewReader(dep), []string{"macsec"}); !errors.Is(err, ErrModule) {
		t.Errorf("missing module: %v", err)
	}
	// The real kernel's table resolves every module the network tests load.
	_, modDir, err := Kernel()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := ModuleOrder(f, []string{"8021q", "macsec", "bridge", "veth", "nf_tables", "gcm"}); err != nil {
		t.Fatal(err)
	}
}

func TestParseConsole(t *testing.T) {
	out := "Booting\r\nNVRVM-BOOTED\r\nNVRVM-MODULE-FAILED kernel/x.ko\r\n=== RUN   TestA\r\n=== RUN   TestA/one\r\n" +
		"    --- PASS: TestA/one (1.00s)\r\n    --- FAIL: TestA/two (0.10s)\r\n--- FAIL: TestA (1.10s)\r\n--- PASS: TestB (0.00s)\r\nNVRVM-EXIT 1\r\n"
	var lines int
	res, err := ParseConsole(strings.NewReader(out), func(string) { lines++ })
	if err != nil {
		t.Fatal(err)
	}
	if !res.Booted || res.Exit != 1 || lines != 10 || len(res.Modules) != 1 {
		t.Fatalf("%+v (%d lines)", res, lines)
	}
	if !res.Subtests["TestA/one"] || res.Subtests["TestA/two"] || res.Passed["TestA"] || !res.Passed["TestB"] {
		t.Errorf("verdicts %+v", res)
	}
	res, _ = ParseConsole(strings.NewReader("Kernel panic\r\n"), nil)
	if res.Booted || res.Exit != -1 {
		t.Errorf("a machine that never booted: %+v", res)
	}
}

// TestBoot boots the machine with the VLAN module and checks, inside it, that the module is loaded and a
// VLAN sub-interface can be made (the host kernel cannot).
func TestBoot(t *testing.T) {
	if !Inside() {
		Run(t, Config{Modules: []string{"veth", "8021q"}, Memory: 256})
		return
	}
	t.Run("vlan", func(t *testing.T) {
		mods, err := os.ReadFile("/proc/modules")
		if err != nil || !bytes.Contains(mods, []byte("8021q ")) {
			t.Fatalf("8021q not loaded (%v):\n%s", err, mods)
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "t0"}, PeerName: "t1"}); err != nil {
			t.Fatal(err)
		}
		t0, err := netlink.LinkByName("t0")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "t0.7", ParentIndex: t0.Attrs().Index}, VlanId: 7}); err != nil {
			t.Fatal(err)
		}
		v, err := netlink.LinkByName("t0.7")
		if err != nil || v.(*netlink.Vlan).VlanId != 7 {
			t.Fatalf("VLAN link %+v: %v", v, err)
		}
	})
}
