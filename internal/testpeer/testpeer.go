// Package testpeer starts real third-party peers for tests (GStreamer's RTSP server as a camera nobody here
// wrote) and stops them by PID when the test ends. Only tests import it.
package testpeer

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Root returns the repository's root directory.
func Root(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testpeer: cannot locate the source tree")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FreePort returns a TCP port on 127.0.0.1 that the kernel just handed out and that is free again, for
// peers that cannot listen on port 0 and report the port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// GstServer is a running GStreamer RTSP server.
type GstServer struct {
	URL  string
	Port int
	cmd  *exec.Cmd
}

// Stop ends the server now (SIGKILL) and waits for it.
func (g *GstServer) Stop() {
	if g.cmd == nil || g.cmd.Process == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGKILL)
	_ = g.cmd.Wait()
	g.cmd = nil
}

// StartGst starts GStreamer's RTSP server (testdata/gst-rtsp-server.py, run by Debian's /usr/bin/python3,
// which has the GObject bindings) serving a live test pattern in codec ("h264" or "h265") on port (0: any
// free port). It waits until the server listens and stops it by PID when the test ends.
func StartGst(t testing.TB, codec string, port int) *GstServer {
	t.Helper()
	if port == 0 {
		port = FreePort(t)
	}
	script := filepath.Join(Root(t), "testdata", "gst-rtsp-server.py")
	cmd := exec.Command("/usr/bin/python3", script, fmt.Sprint(port), codec)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start GStreamer RTSP server (make test installs it): %v", err)
	}
	g := &GstServer{URL: fmt.Sprintf("rtsp://127.0.0.1:%d/cam", port), Port: port, cmd: cmd}
	t.Cleanup(g.Stop)
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				ready <- nil
				return
			}
		}
		ready <- fmt.Errorf("GStreamer RTSP server exited before it was ready: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("GStreamer RTSP server not ready after 30 s")
	}
	return g
}
