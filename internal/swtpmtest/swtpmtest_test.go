package swtpmtest

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestStartProcessStop(t *testing.T) {
	sockDir, err := os.MkdirTemp("", "swtpmtest")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "sock")
	p, err := StartProcess(t.TempDir(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p.Device(), sock) {
		t.Errorf("Device() = %q", p.Device())
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// The process has been reaped: its PID no longer names it.
	if err := syscall.Kill(p.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill -0 %d after Stop: %v, want ESRCH", p.PID(), err)
	}
}

func TestStartDevice(t *testing.T) {
	dev := Start(t)
	path, ok := strings.CutPrefix(dev, "swtpm:unix:")
	if !ok {
		t.Fatalf("Start = %q", dev)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket: %v", err)
	}
}
