package lcd

import (
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/board"
)

// FuzzInputEvents feeds arbitrary bytes to the evdev decoder and the key tracker: no panic, whole records
// only, and presses only for the configured keys.
func FuzzInputEvents(f *testing.F) {
	f.Add(append(rawEvent(24, time.Second, evKey, 28, keyPress), rawEvent(24, 3*time.Second, evKey, 28, keyRelease)...), 24)
	f.Add(rawEvent(16, time.Second, evKey, 28, keyRepeat), 16)
	f.Add([]byte{1, 2, 3}, 24)
	f.Fuzz(func(t *testing.T, b []byte, size int) {
		if len(b) > 1<<16 {
			return
		}
		evs, err := parseInputEvents(b, size, nil)
		if err == nil && len(evs)*size != len(b) {
			t.Fatalf("%d events from %d bytes of %d", len(evs), len(b), size)
		}
		kt := newKeyTracker(map[uint16]board.ButtonRole{28: board.ButtonNext}, time.Second)
		now := time.Unix(0, 0)
		for _, ev := range evs {
			kt.event(ev, now, func(e ButtonEvent) {
				if e.Role != board.ButtonNext {
					t.Fatalf("press of an unconfigured key: %+v", e)
				}
			})
		}
	})
}

// FuzzScreenInfo decodes arbitrary ioctl results: whatever the kernel (or a broken driver) says, an
// accepted geometry is bounded and drawable.
func FuzzScreenInfo(f *testing.F) {
	v, fx := screenInfo(320, 240, 16, 640, RGB565, 8)
	f.Add(v, fx, 8)
	v, fx = screenInfo(480, 320, 32, 1984, XRGB8888, 4)
	f.Add(v, fx, 4)
	f.Fuzz(func(t *testing.T, v, fx []byte, word int) {
		if word != 4 && word != 8 {
			return
		}
		g, err := parseScreenInfo(v, fx, word)
		if err != nil {
			return
		}
		if g.Width > 4096 || g.Height > 4096 || g.Stride < g.Width*g.Format.BitsPerPixel/8 {
			t.Fatalf("unbounded geometry accepted: %+v", g)
		}
		// Drawing on it must work within the buffer.
		r, err := NewRenderer(g.Width, g.Height, 20, 4)
		if err != nil {
			return
		}
		if g.Width*g.Height > 320*240 {
			return // keep the fuzzer fast
		}
		img := r.Render(Page{Title: "T", Lines: []string{"x"}}, nil)
		pack(make([]byte, g.Stride*g.Height), img, g)
	})
}

// FuzzPageText builds every page from hostile camera names and alarm texts: the text is always the
// display's size, printable ASCII only.
func FuzzPageText(f *testing.F) {
	f.Add("gate", "video loss", "nvr-1", 20, 4)
	f.Add("cam\x1b[2J\u202e", "\xff\xfe\u00e9\u6f22", strings.Repeat("h", 300), 16, 2)
	f.Fuzz(func(t *testing.T, name, text, host string, cols, rows int) {
		if cols < 8 || cols > 40 || rows < 2 || rows > 8 || len(name)+len(text)+len(host) > 4096 {
			return
		}
		st := State{Hostname: host, Cameras: []Camera{{Name: name}, {Name: text, State: CameraRecording}},
			Alarms:  []Alarm{{ID: name, Camera: name, Text: text, Time: time.Unix(0, 0)}},
			Storage: Storage{UsedBytes: uint64(len(text)), TotalBytes: uint64(len(name)), Problem: text}}
		for k := PageKind(0); k <= numPages; k++ {
			p := Build(k, st, SetupView{Pending: true, Code: name}, time.Unix(1e9, 0), cols, rows)
			lines := p.Text(cols)
			if len(lines) != rows {
				t.Fatalf("%d lines, want %d", len(lines), rows)
			}
			for _, l := range lines {
				if len(l) != cols {
					t.Fatalf("line %q is %d wide, want %d", l, len(l), cols)
				}
				for i := 0; i < len(l); i++ {
					if l[i] < 0x20 || l[i] > 0x7e {
						t.Fatalf("byte %#x in %q", l[i], l)
					}
				}
			}
		}
	})
}
