package lcd

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/edgenvr/nvr/board"
	"github.com/google/go-cmp/cmp"
)

func rawEvent(size int, t time.Duration, typ, code uint16, v int32) []byte {
	b := make([]byte, size)
	w := size/2 - 4
	if w == 8 {
		binary.NativeEndian.PutUint64(b, uint64(t/time.Second))
		binary.NativeEndian.PutUint64(b[8:], uint64(t%time.Second/time.Microsecond))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(t/time.Second))
		binary.NativeEndian.PutUint32(b[4:], uint32(t%time.Second/time.Microsecond))
	}
	binary.NativeEndian.PutUint16(b[2*w:], typ)
	binary.NativeEndian.PutUint16(b[2*w+2:], code)
	binary.NativeEndian.PutUint32(b[2*w+4:], uint32(v))
	return b
}

func TestParseInputEvents(t *testing.T) {
	for _, size := range []int{16, 24} {
		var b []byte
		b = append(b, rawEvent(size, 1500*time.Millisecond, evKey, 28, keyPress)...)
		b = append(b, rawEvent(size, 1500*time.Millisecond, 0, 0, 0)...)
		got, err := parseInputEvents(b, size, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := []inputEvent{{Time: 1500 * time.Millisecond, Type: evKey, Code: 28, Value: 1}, {Time: 1500 * time.Millisecond}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("size %d (-want +got):\n%s", size, diff)
		}
		if _, err := parseInputEvents(b[:size+3], size, nil); !errors.Is(err, ErrShortEvent) {
			t.Errorf("partial event: %v", err)
		}
	}
	if _, err := parseInputEvents(nil, 20, nil); err == nil {
		t.Error("odd event size accepted")
	}
}

func TestKeyTracker(t *testing.T) {
	keys := map[uint16]board.ButtonRole{28: board.ButtonNext, 103: board.ButtonPrev}
	kt := newKeyTracker(keys, 2*time.Second)
	var got []ButtonEvent
	out := func(e ButtonEvent) { got = append(got, e) }
	wall := time.Unix(1000, 0)
	ev := func(at time.Duration, code uint16, v int32) {
		kt.event(inputEvent{Time: at, Type: evKey, Code: code, Value: v}, wall.Add(at), out)
	}

	ev(10*time.Second, 28, keyPress)
	ev(10*time.Second+300*time.Millisecond, 28, keyRelease) // short
	ev(20*time.Second, 103, keyPress)
	ev(20*time.Second+500*time.Millisecond, 103, keyRepeat)
	ev(22*time.Second+100*time.Millisecond, 103, keyRepeat) // long, while held
	ev(23*time.Second, 103, keyRepeat)
	ev(23*time.Second, 103, keyRelease) // no second event
	ev(30*time.Second, 28, keyPress)    // held without autorepeat: tick fires it
	kt.tick(wall.Add(31*time.Second), out)
	kt.tick(wall.Add(32*time.Second+time.Millisecond), out)
	kt.tick(wall.Add(33*time.Second), out)
	ev(34*time.Second, 28, keyRelease)
	ev(40*time.Second, 99, keyPress)   // not a button
	ev(41*time.Second, 28, keyRelease) // release without press
	ev(50*time.Second, 28, keyPress)   // released after LongPress without repeat or tick
	ev(53*time.Second, 28, keyRelease)
	want := []ButtonEvent{{Role: board.ButtonNext}, {Role: board.ButtonPrev, Long: true}, {Role: board.ButtonNext, Long: true}, {Role: board.ButtonNext, Long: true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}
