// Package swtpmtest starts a software TPM (swtpm) for tests.
//
// It owns the life of the swtpm processes it starts: each is bound to a
// unix socket inside a test-owned directory, waited for by polling with a
// deadline, and stopped by PID when the test ends. It must never be imported
// by production code paths other than through [StartProcess], never leave a
// process running after the test, and never skip a test: a missing swtpm is
// a test failure that names the fix.
package swtpmtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// readyTimeout bounds how long Start waits for swtpm to accept connections.
const readyTimeout = 15 * time.Second

// Start starts swtpm on a fresh state directory inside t.TempDir and returns
// the device string for tpm.Open ("swtpm:unix:DIR/sock"). The process is
// killed and reaped in t.Cleanup.
func Start(t testing.TB) string {
	t.Helper()
	return StartDir(t, t.TempDir())
}

// StartDir is like [Start] but keeps the TPM state in stateDir, so a test can
// stop swtpm and start it again on the same state (the same owner seed, hence
// the same primary keys). stateDir must exist and must outlive the process.
func StartDir(t testing.TB, stateDir string) string {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("swtpmtest: swtpm not found on PATH in CI; scripts/deps.sh must install the swtpm package: %v", err)
		}
		t.Fatalf("swtpmtest: swtpm not found on PATH; run `make test` (scripts/deps.sh installs swtpm) or apt-get install swtpm: %v", err)
	}
	// Unix socket paths are limited to ~107 bytes; keep the socket in a short
	// directory of its own rather than under a long test temp path.
	sockDir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatalf("swtpmtest: socket dir: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(sockDir); err != nil {
			t.Errorf("swtpmtest: remove socket dir: %v", err)
		}
	})
	sock := filepath.Join(sockDir, "sock")
	p, err := StartProcess(stateDir, sock)
	if err != nil {
		t.Fatalf("swtpmtest: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("swtpmtest: %v", err)
		}
	})
	return "swtpm:unix:" + sock
}

// StartProcess starts swtpm with its TPM state in stateDir, serving TPM
// commands on the unix socket sockPath (and its control channel on
// sockPath+".ctrl"), and returns once the socket accepts connections. The
// caller owns the process and must end it with [Process.Stop].
func StartProcess(stateDir, sockPath string) (*Process, error) {
	ctrl := sockPath + ".ctrl"
	for _, p := range []string{sockPath, ctrl} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", p, err)
		}
	}
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+sockPath,
		"--ctrl", "type=unixio,path="+ctrl,
		"--flags", "not-need-init,startup-clear",
		"--tpmstate", "dir="+stateDir,
	)
	out := &tailBuffer{max: 4096}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start swtpm: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", sockPath)
		if err == nil {
			if err := c.Close(); err != nil {
				return nil, stopAfter(cmd, exited, fmt.Errorf("probe swtpm socket: %w", err))
			}
			return &Process{cmd: cmd, exited: exited, sock: sockPath}, nil
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("swtpm exited before serving %s: %v; output: %s", sockPath, werr, out.String())
		case <-ctx.Done():
			return nil, stopAfter(cmd, exited, fmt.Errorf("swtpm did not serve %s within %v; output: %s", sockPath, readyTimeout, out.String()))
		case <-tick.C:
		}
	}
}

// Process is a running swtpm started by [StartProcess].
type Process struct {
	cmd    *exec.Cmd
	exited <-chan error
	sock   string

	stopOnce sync.Once
	stopErr  error
}

// PID returns the operating system process id of swtpm.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Device returns the device string for tpm.Open ("swtpm:unix:PATH").
func (p *Process) Device() string { return "swtpm:unix:" + p.sock }

// Stop kills swtpm by its PID and waits until it has been reaped. Calling it
// again returns the first result.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = stopAfter(p.cmd, p.exited, nil) })
	return p.stopErr
}

func stopAfter(cmd *exec.Cmd, exited <-chan error, cause error) error {
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return errors.Join(cause, fmt.Errorf("kill swtpm pid %d: %w", cmd.Process.Pid, err))
	}
	select {
	case <-exited:
	case <-time.After(readyTimeout):
		return errors.Join(cause, fmt.Errorf("swtpm pid %d not reaped within %v", cmd.Process.Pid, readyTimeout))
	}
	return cause
}
