package lcd_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/lcd"
	"github.com/edgenvr/nvr/board"
)

// syncBuffer is a bytes.Buffer safe for the display's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// keyWriter writes struct input_event records (64-bit layout) into a FIFO standing in for /dev/input/eventN.
type keyWriter struct {
	f *os.File
	t time.Duration // kernel time of the next event
}

func (k *keyWriter) event(typ, code uint16, value int32) error {
	b := make([]byte, 24)
	binary.NativeEndian.PutUint64(b, uint64(k.t/time.Second))
	binary.NativeEndian.PutUint64(b[8:], uint64(k.t%time.Second/time.Microsecond))
	binary.NativeEndian.PutUint16(b[16:], typ)
	binary.NativeEndian.PutUint16(b[18:], code)
	binary.NativeEndian.PutUint32(b[20:], uint32(value))
	_, err := k.f.Write(b)
	return err
}

// press holds key code for held (kernel time), with a SYN_REPORT after each change as the kernel sends.
func (k *keyWriter) press(t *testing.T, code uint16, held time.Duration) {
	t.Helper()
	k.t += time.Second
	for _, e := range []struct {
		typ, code uint16
		v         int32
	}{{1, code, 1}, {0, 0, 0}} {
		if err := k.event(e.typ, e.code, e.v); err != nil {
			t.Fatal(err)
		}
	}
	k.t += held
	for _, e := range []struct {
		typ, code uint16
		v         int32
	}{{1, code, 0}, {0, 0, 0}} {
		if err := k.event(e.typ, e.code, e.v); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDisplayWithAuthz runs the display against the real authz service through the hand-over the web
// server uses, with a key on an evdev-format stream: the first code appears on the display and the
// console, hides after RevealFor, comes back on a long press, and after setup no page shows it, whatever
// the keys do. The structured log never holds it.
func TestDisplayWithAuthz(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	az, err := authz.New(authz.Config{DataDir: t.TempDir(), Signer: key, Argon2: authz.Argon2Params{Time: 1, Memory: 1024, Threads: 1},
		Sleep: func(context.Context, time.Duration) error { return nil }}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := az.Close(); err != nil {
			t.Error(err)
		}
	})
	codes := lcd.NewSetupCodes(az.NeedsSetup, nil)
	code, exp, fresh, err := az.SetupCode()
	if err != nil || !fresh {
		t.Fatalf("SetupCode: %v %v", err, fresh)
	}
	codes.Offer(code, exp) // what web.Config.Display does

	fifo := filepath.Join(t.TempDir(), "event0")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(fifo, os.O_RDWR, 0) // RDWR: never blocks, and the reader never sees EOF
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	keys := &keyWriter{f: w}

	var console, logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	state := lcd.SourceFunc(func() lcd.State {
		return lcd.State{Hostname: "nvr-test", Cameras: []lcd.Camera{{Name: "gate", State: lcd.CameraRecording}}}
	})
	d, err := lcd.New(lcd.Config{
		Driver: lcd.NewConsole(&console, 20, log), Source: state, Setup: codes,
		Buttons:   []board.Button{{Role: board.ButtonNext, Device: fifo, Code: 28}},
		LongPress: 500 * time.Millisecond, Refresh: 10 * time.Millisecond, RevealFor: 300 * time.Millisecond,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	page := func() lcd.Page { p, _ := d.Current(); return p }
	shows := func(s string) bool { return strings.Contains(strings.Join(page().Text(20), "\n"), s) }

	waitFor(t, "the first setup code on the display", func() bool { return shows(code) })
	if !strings.Contains(console.String(), "SETUP CODE "+code) {
		t.Fatal("setup code not on the console")
	}
	waitFor(t, "the code to hide after RevealFor", func() bool { return shows("Hold button") })
	keys.press(t, 28, 100*time.Millisecond) // short: next page
	waitFor(t, "the recording page", func() bool { return page().Kind == lcd.PageRecording })
	keys.press(t, 28, 800*time.Millisecond) // long: the code again
	waitFor(t, "the code after a long press", func() bool { return page().Kind == lcd.PageNetwork && shows(code) })

	// Setup through authz, as the web pages do it.
	bg := context.Background()
	id, enr, err := az.SetupBegin(bg, code, "admin", "correct horse battery staple 9", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	totp, err := authz.TOTPCode(enr.Secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := az.SetupFinish(bg, id, totp, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the network page without setup", func() bool { return page().Title == "NETWORK" || page().Kind == lcd.PageRecording })
	before := len(console.String())
	// Walk every page with the keys and check each one shown.
	seen := map[lcd.PageKind]bool{}
	for i := 0; i < 8 && len(seen) < 4; i++ {
		next := (page().Kind + 1) % 4
		keys.press(t, 28, time.Second) // a long press after setup changes nothing
		keys.press(t, 28, 50*time.Millisecond)
		waitFor(t, "the next page", func() bool { return page().Kind == next })
		p := page()
		seen[p.Kind] = true
		if s := strings.Join(p.Text(20), "\n"); strings.Contains(s, code) || strings.Contains(s, "SETUP") {
			t.Fatalf("after setup the %s page shows:\n%s", p.Kind, s)
		}
	}
	if len(seen) < 4 {
		t.Fatalf("pages seen after setup: %v", seen)
	}
	if after := console.String()[before:]; strings.Contains(after, code) {
		t.Fatalf("the console shows the code after setup:\n%s", after)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if !strings.Contains(console.String()[len(console.String())-200:], "NVR STOPPED") {
		t.Fatal("no stopped page at the end")
	}
	if strings.Contains(logs.String(), code) {
		t.Fatal("the setup code is in the log")
	}
	if !strings.Contains(logs.String(), "lcd: page shown") {
		t.Fatal("page changes are not logged")
	}
}

// A panel that fails is logged and retried; the display keeps running and recovers.
func TestDisplayDriverFault(t *testing.T) {
	drv := &flakyDriver{fail: 3}
	var logs syncBuffer
	d, err := lcd.New(lcd.Config{Driver: drv, Source: lcd.SourceFunc(func() lcd.State { return lcd.State{} }), Refresh: 5 * time.Millisecond},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "a page after the faults", func() bool { _, ok := d.Current(); return ok })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "i2c: remote I/O error"); n != 1 {
		t.Fatalf("the same fault logged %d times:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "works again") || !drv.closed {
		t.Fatalf("no recovery or close:\n%s", logs.String())
	}
	if _, err := lcd.New(lcd.Config{}, nil); !errors.Is(err, lcd.ErrConfig) {
		t.Fatalf("empty config: %v", err)
	}
}

type flakyDriver struct {
	mu     sync.Mutex
	fail   int
	closed bool
}

func (f *flakyDriver) Show(lcd.Page) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return errors.New("i2c: remote I/O error")
	}
	return nil
}

func (f *flakyDriver) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func TestOpenDriver(t *testing.T) {
	var buf syncBuffer
	d, err := lcd.OpenDriver(board.Display{Kind: board.DisplayConsole}, &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.(*lcd.Console); !ok {
		t.Fatalf("console profile gave %T", d)
	}
	if _, err := lcd.OpenDriver(board.Display{Kind: "oled"}, &buf, nil); !errors.Is(err, board.ErrUnknownDisplay) {
		t.Fatalf("unknown kind: %v", err)
	}
	if _, err := lcd.OpenDriver(board.Display{Kind: board.DisplayHD44780, I2CBus: 42}, &buf, nil); err == nil {
		t.Fatal("opened an HD44780 on a bus that does not exist")
	}
	if _, err := lcd.OpenDriver(board.Display{Kind: board.DisplayFramebuffer, Framebuffer: "/dev/fb9"}, &buf, nil); err == nil {
		t.Fatal("opened a framebuffer that does not exist")
	}
	bad := []board.Display{
		{Kind: board.DisplayHD44780, I2CAddr: 0x90},
		{Kind: board.DisplayHD44780, Cols: 8, Rows: 1},
		{Kind: board.DisplayFramebuffer, Framebuffer: "fb0"},
		{Kind: board.DisplayConsole, Buttons: []board.Button{{Role: "jump", Device: "/dev/input/event0", Code: 28}}},
		{Kind: board.DisplayConsole, Buttons: []board.Button{{Role: board.ButtonNext, Device: "/tmp/x", Code: 28}}},
		{Kind: board.DisplayConsole, LongPress: time.Minute},
	}
	for _, b := range bad {
		if err := b.Validate(); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
	good := board.Display{Kind: board.DisplayHD44780, I2CBus: 1}
	if err := good.Validate(); err != nil || good.I2CAddr != 0x27 || good.Cols != 20 || good.Rows != 4 || good.LongPress != 2*time.Second {
		t.Fatalf("defaults: %+v %v", good, err)
	}
}
