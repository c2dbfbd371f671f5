package lcd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/edgenvr/nvr/board"
	"golang.org/x/sys/unix"
)

// Linux input event types and values (linux/input-event-codes.h).
const (
	evKey       = 0x01
	keyRelease  = 0
	keyPress    = 1
	keyRepeat   = 2
	eviocgrab   = 0x40044590 // _IOW('E', 0x90, int)
	maxEvents   = 64         // events read at once
	reopenAfter = 5 * time.Second
)

// inputEventSize is sizeof(struct input_event): a struct timeval then type, code and value.
var inputEventSize = int(2*unsafe.Sizeof(uintptr(0))) + 8

// inputEvent is one decoded struct input_event.
type inputEvent struct {
	Time  time.Duration // kernel timestamp since the epoch (or boot, for a monotonic clock)
	Type  uint16
	Code  uint16
	Value int32
}

// ErrShortEvent is returned for a read that does not hold whole input events.
var ErrShortEvent = errors.New("lcd: partial input event")

// parseInputEvents decodes whole struct input_event records of size bytes each (16 on 32-bit, 24 on 64-bit
// kernels), in host byte order.
func parseInputEvents(b []byte, size int, dst []inputEvent) ([]inputEvent, error) {
	if size != 16 && size != 24 {
		return dst, fmt.Errorf("lcd: input event size %d", size)
	}
	if len(b)%size != 0 {
		return dst, fmt.Errorf("%w: %d bytes", ErrShortEvent, len(b))
	}
	word := size/2 - 4 // bytes per timeval field
	for off := 0; off+size <= len(b); off += size {
		r := b[off : off+size]
		var sec, usec int64
		if word == 8 {
			sec, usec = int64(binary.NativeEndian.Uint64(r)), int64(binary.NativeEndian.Uint64(r[8:]))
		} else {
			sec, usec = int64(int32(binary.NativeEndian.Uint32(r))), int64(int32(binary.NativeEndian.Uint32(r[4:])))
		}
		t := 2 * word
		dst = append(dst, inputEvent{
			Time:  time.Duration(sec)*time.Second + time.Duration(usec)*time.Microsecond,
			Type:  binary.NativeEndian.Uint16(r[t:]),
			Code:  binary.NativeEndian.Uint16(r[t+2:]),
			Value: int32(binary.NativeEndian.Uint32(r[t+4:])),
		})
	}
	return dst, nil
}

// keyTracker turns key press, repeat and release events into short and long presses. A long press fires
// once, while the key is still held (on a repeat event or on tick); a short press fires on release.
type keyTracker struct {
	keys      map[uint16]board.ButtonRole
	longPress time.Duration

	down    map[uint16]time.Duration // kernel time of the press
	started map[uint16]time.Time     // wall time of the press, for tick
	fired   map[uint16]bool
}

func newKeyTracker(keys map[uint16]board.ButtonRole, long time.Duration) *keyTracker {
	return &keyTracker{keys: keys, longPress: long, down: map[uint16]time.Duration{},
		started: map[uint16]time.Time{}, fired: map[uint16]bool{}}
}

// event handles one input event received at wall time now.
func (k *keyTracker) event(ev inputEvent, now time.Time, out func(ButtonEvent)) {
	role, ok := k.keys[ev.Code]
	if ev.Type != evKey || !ok {
		return
	}
	switch ev.Value {
	case keyPress:
		k.down[ev.Code], k.started[ev.Code], k.fired[ev.Code] = ev.Time, now, false
	case keyRepeat:
		t0, held := k.down[ev.Code]
		if held && !k.fired[ev.Code] && ev.Time-t0 >= k.longPress {
			k.fired[ev.Code] = true
			out(ButtonEvent{Role: role, Long: true})
		}
	case keyRelease:
		t0, held := k.down[ev.Code]
		if !held {
			return
		}
		if !k.fired[ev.Code] {
			out(ButtonEvent{Role: role, Long: ev.Time-t0 >= k.longPress})
		}
		delete(k.down, ev.Code)
		delete(k.started, ev.Code)
		delete(k.fired, ev.Code)
	}
}

// tick fires long presses for keys held since longPress before now (keys without autorepeat).
func (k *keyTracker) tick(now time.Time, out func(ButtonEvent)) {
	for code, t0 := range k.started {
		if !k.fired[code] && now.Sub(t0) >= k.longPress {
			k.fired[code] = true
			out(ButtonEvent{Role: k.keys[code], Long: true})
		}
	}
}

// held reports whether a key is down.
func (k *keyTracker) held() bool { return len(k.started) > 0 }

// runButtons reads one evdev device until ctx ends, reopening it after a fault.
func runButtons(ctx context.Context, dev string, keys map[uint16]board.ButtonRole, long time.Duration, out func(ButtonEvent), log *slog.Logger) {
	var lastErr string
	for {
		err := readButtons(ctx, dev, keys, long, out, log)
		if ctx.Err() != nil {
			return
		}
		if err != nil && err.Error() != lastErr {
			log.Warn("lcd: buttons", "device", dev, "err", err)
			lastErr = err.Error()
		}
		t := time.NewTimer(reopenAfter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// readButtons opens dev, grabs it (so the keys do not also reach a console) and turns its events into
// button presses until ctx ends or the device fails.
func readButtons(ctx context.Context, dev string, keys map[uint16]board.ButtonRole, long time.Duration, out func(ButtonEvent), log *slog.Logger) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	if err := grab(f); err != nil {
		log.Debug("lcd: buttons: exclusive grab not available", "device", dev, "err", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()

	kt := newKeyTracker(keys, long)
	buf := make([]byte, maxEvents*inputEventSize)
	evs := make([]inputEvent, 0, maxEvents)
	var partial []byte
	for {
		if kt.held() {
			// Poll for long presses of keys held without autorepeat.
			_ = f.SetReadDeadline(time.Now().Add(long / 8))
		} else {
			_ = f.SetReadDeadline(time.Time{})
		}
		if ctx.Err() != nil {
			return nil
		}
		n, err := f.Read(buf)
		if n > 0 {
			data := buf[:n]
			if len(partial) > 0 {
				data = append(partial, data...)
				partial = nil
			}
			whole := len(data) - len(data)%inputEventSize
			if whole < len(data) {
				partial = append([]byte(nil), data[whole:]...)
			}
			evs, _ = parseInputEvents(data[:whole], inputEventSize, evs[:0])
			now := time.Now()
			for _, ev := range evs {
				kt.event(ev, now, out)
			}
		}
		kt.tick(time.Now(), out)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if ctx.Err() != nil {
				return nil
			}
		case errors.Is(err, io.EOF):
			// A FIFO whose writer went away, or an unplugged device: reopen later.
			return fmt.Errorf("read %s: %w", dev, err)
		default:
			return fmt.Errorf("read %s: %w", dev, err)
		}
	}
}

func grab(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), eviocgrab, 1) }); err != nil {
		return err
	}
	return ierr
}
