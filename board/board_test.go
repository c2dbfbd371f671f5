package board

import (
	"os"
	"strings"
	"testing"
)

func TestProfilesValid(t *testing.T) {
	for _, n := range Names() {
		p, err := Lookup(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Check(); err != nil {
			t.Error(err)
		}
		if len(p.CameraPorts()) == 0 {
			t.Errorf("%s: no camera port", n)
		}
	}
	if _, err := Lookup("nope"); err == nil {
		t.Fatal("unknown board found")
	}
}

// TestX86MatchesImage: the x86 profile and the image's RAUC config must agree on slots and compatible.
func TestX86MatchesImage(t *testing.T) {
	p, _ := Lookup("x86-generic")
	b, err := os.ReadFile("../rootfs/files/etc/rauc/system.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, want := range []string{"compatible=" + p.Boot.Compatible, "device=" + p.Boot.SlotA, "device=" + p.Boot.SlotB,
		"grubenv=" + p.Boot.EnvPath, "bootloader=" + p.Boot.Loader} {
		if !strings.Contains(conf, want) {
			t.Errorf("system.conf lacks %q", want)
		}
	}
}

// TestLeaf: board imports no project package.
func TestLeaf(t *testing.T) {
	for _, f := range []string{"board.go", "display.go", "doc.go"} {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), "github.com/edgenvr/nvr/") {
			t.Fatalf("%s imports a project package", f)
		}
	}
}
