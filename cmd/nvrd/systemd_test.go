package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSystemdNotify speaks to a real notify socket, as systemd does: READY=1, then WATCHDOG=1 only while
// healthy.
func TestSystemdNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", "")

	s := newSystemd(slog.New(slog.DiscardHandler))
	s.ready()
	recv := func() string {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 256)
		n, err := conn.Read(b)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b[:n])
	}
	if got := recv(); got != "READY=1" {
		t.Fatalf("first message %q", got)
	}
	ticks := make(chan time.Time)
	healthy := make(chan bool, 1)
	var askedAge time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.watchdog(ctx, 10*time.Second, func(d time.Duration) (bool, []string) {
			askedAge = d
			ok := <-healthy
			if !ok {
				return false, []string{"cam1"}
			}
			return true, nil
		}, func(d time.Duration) (<-chan time.Time, func()) {
			if d != time.Second {
				t.Errorf("ticker %v, want half the 2 s watchdog", d)
			}
			return ticks, func() {}
		})
	}()
	// Healthy: fed. Unhealthy: nothing sent (the next message is the feed after recovery).
	healthy <- true
	ticks <- time.Now()
	if got := recv(); got != "WATCHDOG=1" {
		t.Fatalf("healthy beat sent %q", got)
	}
	healthy <- false
	ticks <- time.Now()
	healthy <- false
	ticks <- time.Now()
	healthy <- true
	ticks <- time.Now()
	if got := recv(); got != "WATCHDOG=1" {
		t.Fatalf("after recovery %q", got)
	}
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("extra message of %d bytes: unhealthy beats must not feed the watchdog", n)
	}
	if askedAge != 2*time.Second {
		t.Fatalf("health max age %v, want clamped to the watchdog interval", askedAge)
	}
	cancel()
	<-done
	s.stopping()
	if got := recv(); !strings.HasPrefix(got, "STOPPING=1") {
		t.Fatalf("stop message %q", got)
	}
}

// TestSystemdAbsent: outside systemd nothing is sent and the watchdog returns at once.
func TestSystemdAbsent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	s := newSystemd(slog.New(slog.DiscardHandler))
	s.ready()
	s.watchdog(context.Background(), time.Second, func(time.Duration) (bool, []string) {
		t.Fatal("health asked without a watchdog")
		return false, nil
	}, nil)
}
