package lcd

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
)

// busLog records, in order, every I²C write (through periph's recording bus) and every wait the driver
// asks for, so the test can check the datasheet's timing as well as the bytes.
type busLog struct {
	mu     sync.Mutex
	rec    i2ctest.Record
	events []busEvent
	fail   error // returned by the next Tx, once
}

type busEvent struct {
	write []byte
	wait  time.Duration
}

func (b *busLog) String() string { return "busLog" }

func (b *busLog) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		err := b.fail
		b.fail = nil
		return err
	}
	if err := b.rec.Tx(addr, w, r); err != nil {
		return err
	}
	b.events = append(b.events, busEvent{write: b.rec.Ops[len(b.rec.Ops)-1].W})
	return nil
}

func (b *busLog) SetSpeed(physic.Frequency) error { return nil }

func (b *busLog) sleep(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, busEvent{wait: d})
}

func (b *busLog) take() []busEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	ev := b.events
	b.events = nil
	return ev
}

// hd44780 is a model of the controller behind a PCF8574, fed with the bytes the backpack receives. It
// latches a nibble on each falling edge of E, starts in 8-bit mode as after power-on, and keeps DDRAM and
// CGRAM, so the test sees the characters a person would read.
type hd44780 struct {
	fourBit  bool
	half     *byte // first nibble of a 4-bit transfer
	cgram    bool
	addr     byte
	ddram    [128]byte
	cg       [64]byte
	on       bool
	function byte
	lastE    bool
	instrs   []string // decoded instructions, for the sequence check
	errs     []string
	busy     time.Duration // execution time still running
}

func newHD44780Model() *hd44780 {
	m := &hd44780{}
	for i := range m.ddram {
		m.ddram[i] = ' '
	}
	return m
}

func (m *hd44780) feed(ev busEvent) {
	if ev.wait > 0 {
		m.busy -= ev.wait
		return
	}
	for _, b := range ev.write {
		if b&pinRW != 0 {
			m.errs = append(m.errs, fmt.Sprintf("RW high in %#02x", b))
		}
		if b&pinBacklight == 0 {
			m.errs = append(m.errs, fmt.Sprintf("backlight off in %#02x", b))
		}
		e := b&pinE != 0
		if m.lastE && !e {
			m.latch(b>>4, b&pinRS != 0)
		}
		m.lastE = e
		// One byte on a 100 kHz bus takes 90 µs.
		m.busy -= 90 * time.Microsecond
	}
}

func (m *hd44780) latch(nib byte, rs bool) {
	if !m.fourBit {
		// 8-bit mode: D3..D0 are not wired and read as zero.
		m.exec(nib<<4, rs)
		return
	}
	if m.half == nil {
		m.half = &nib
		return
	}
	v := *m.half<<4 | nib
	m.half = nil
	m.exec(v, rs)
}

func (m *hd44780) exec(v byte, rs bool) {
	if m.busy > 0 {
		m.errs = append(m.errs, fmt.Sprintf("write %#02x while busy for %v more", v, m.busy))
	}
	m.busy = 37 * time.Microsecond
	if rs {
		m.instrs = append(m.instrs, fmt.Sprintf("data %#02x", v))
		if m.cgram {
			m.cg[m.addr&0x3f] = v
			m.addr = (m.addr + 1) & 0x3f
		} else {
			m.ddram[m.addr&0x7f] = v
			m.addr = (m.addr + 1) & 0x7f
		}
		return
	}
	m.instrs = append(m.instrs, fmt.Sprintf("cmd %#02x", v))
	switch {
	case v&0x80 != 0:
		m.cgram, m.addr = false, v&0x7f
	case v&0x40 != 0:
		m.cgram, m.addr = true, v&0x3f
	case v&0x20 != 0:
		m.fourBit = v&0x10 == 0
		m.function = v
	case v&0x08 != 0:
		m.on = v&0x04 != 0
	case v == cmdClear:
		for i := range m.ddram {
			m.ddram[i] = ' '
		}
		m.addr, m.cgram = 0, false
		m.busy = 1520 * time.Microsecond
	}
}

// screen returns the 20×4 text; CGRAM characters show as '0'+n inside braces-free form: "#n" is too wide,
// so they are mapped to '0'..'7' prefixed by nothing and the tests know the icon column.
func (m *hd44780) screen() []string {
	var out []string
	for _, base := range []byte{0x00, 0x40, 0x14, 0x54} {
		var b strings.Builder
		for i := byte(0); i < 20; i++ {
			c := m.ddram[base+i]
			if c < 8 {
				c = '0' + c
			}
			b.WriteByte(c)
		}
		out = append(out, b.String())
	}
	return out
}

func newTestHD44780(t *testing.T) (*HD44780, *busLog) {
	t.Helper()
	bus := &busLog{}
	h, err := NewHD44780(HD44780Config{Bus: bus, Addr: 0x27, Sleep: bus.sleep})
	if err != nil {
		t.Fatal(err)
	}
	return h, bus
}

// The initialisation is the datasheet's 4-bit sequence, with its waits, and every byte goes to 0x27.
func TestHD44780InitSequence(t *testing.T) {
	h, bus := newTestHD44780(t)
	if err := h.Show(Build(PageRecording, testState(), SetupView{}, testNow, 20, 4)); err != nil {
		t.Fatal(err)
	}
	events := bus.take()
	if events[0].wait < 40*time.Millisecond {
		t.Fatalf("no power-on wait first: %+v", events[0])
	}
	// The first three nibbles are 0x3 (function set, 8-bit), each a single E pulse: data with E high, then low.
	want := [][]byte{{0x3c, 0x38}, nil, {0x3c, 0x38}, nil, {0x3c, 0x38}, nil, {0x2c, 0x28}}
	for i, w := range want {
		ev := events[1+i]
		if w == nil {
			if ev.wait < 100*time.Microsecond || (i == 1 && ev.wait < 4100*time.Microsecond) {
				t.Fatalf("wait %d too short: %v", i, ev.wait)
			}
			continue
		}
		if !cmp.Equal(w, ev.write) {
			t.Fatalf("init write %d = % x, want % x", i, ev.write, w)
		}
	}
	m := newHD44780Model()
	for _, ev := range events {
		m.feed(ev)
	}
	if len(m.errs) > 0 {
		t.Fatalf("protocol errors: %v", m.errs)
	}
	seq := []string{"cmd 0x30", "cmd 0x30", "cmd 0x30", "cmd 0x20", "cmd 0x28", "cmd 0x08", "cmd 0x01", "cmd 0x06", "cmd 0x40"}
	if diff := cmp.Diff(seq, m.instrs[:len(seq)]); diff != "" {
		t.Fatalf("instruction sequence (-want +got):\n%s", diff)
	}
	// Then the six icon glyphs into CGRAM, display on, and the page.
	rest := m.instrs[len(seq):]
	for i := 0; i < len(glyphs)*8; i++ {
		if !strings.HasPrefix(rest[i], "data ") {
			t.Fatalf("glyph byte %d: %s", i, rest[i])
		}
	}
	if rest[len(glyphs)*8] != "cmd 0x0c" || rest[len(glyphs)*8+1] != "cmd 0x80" {
		t.Fatalf("after glyphs: %v", rest[len(glyphs)*8:len(glyphs)*8+2])
	}
	if m.function != 0x28 || !m.on {
		t.Fatalf("function %#x on %v", m.function, m.on)
	}
	if got := m.cg[glyphRecord*8 : glyphRecord*8+8]; !cmp.Equal(got, glyphs[glyphRecord][:]) {
		t.Fatalf("record glyph in CGRAM % x", got)
	}
	for _, op := range bus.rec.Ops {
		if op.Addr != 0x27 {
			t.Fatalf("write to %#x", op.Addr)
		}
	}
}

// Each page's 20×4 text as the controller holds it after the driver's bytes.
func TestHD44780Pages(t *testing.T) {
	h, bus := newTestHD44780(t)
	m := newHD44780Model()
	icons := map[PageKind]byte{PageNetwork: '0' + glyphKey, PageRecording: '0' + glyphRecord, PageStorage: '0' + glyphDisk, PageAlarms: '0' + glyphBell}
	for kind := PageKind(0); kind < numPages; kind++ {
		if err := h.Show(Build(kind, testState(), pendingView(), testNow, 20, 4)); err != nil {
			t.Fatal(err)
		}
		for _, ev := range bus.take() {
			m.feed(ev)
		}
		if len(m.errs) > 0 {
			t.Fatalf("%s: protocol errors: %v", kind, m.errs)
		}
		want := append([]string(nil), wantPages[kind]...)
		// The character display puts the icon and a space before an 18-character title line.
		want[0] = string(icons[kind]) + " " + Build(kind, testState(), pendingView(), testNow, 20, 4).Text(18)[0]
		if diff := cmp.Diff(want, m.screen()); diff != "" {
			t.Errorf("%s page on the display (-want +got):\n%s", kind, diff)
		}
	}
	// Only what changes is sent: one changed line is one transaction with one address and its characters.
	st := testState()
	st.Alarms[0].Time = st.Alarms[0].Time.Add(time.Minute)
	if err := h.Show(Build(PageAlarms, st, SetupView{}, testNow, 20, 4)); err != nil {
		t.Fatal(err)
	}
	ev := bus.take()
	if len(ev) != 1 {
		t.Fatalf("%d transactions for one changed character", len(ev))
	}
	// Set DDRAM address 0x40+4, then the one character: two bytes, four nibbles of two backpack bytes each.
	if want := []byte{0xcc, 0xc8, 0x4c, 0x48, 0x3d, 0x39, 0x4d, 0x49}; !cmp.Equal(want, ev[0].write) {
		t.Fatalf("bytes for one character: % x, want % x", ev[0].write, want)
	}
	for _, e := range ev {
		m.feed(e)
	}
	if got := m.screen()[1]; got != "14:04 lobby video lo" {
		t.Fatalf("line 1 %q", got)
	}
	// Same page: nothing on the bus.
	if err := h.Show(Build(PageAlarms, st, SetupView{}, testNow, 20, 4)); err != nil {
		t.Fatal(err)
	}
	if ev := bus.take(); len(ev) != 0 {
		t.Fatalf("unchanged page sent %d transactions", len(ev))
	}
}

// After setup the display holds no code: the setup page's DDRAM is overwritten.
func TestHD44780NoCodeAfterSetup(t *testing.T) {
	h, bus := newTestHD44780(t)
	m := newHD44780Model()
	show := func(p Page) {
		t.Helper()
		if err := h.Show(p); err != nil {
			t.Fatal(err)
		}
		for _, ev := range bus.take() {
			m.feed(ev)
		}
	}
	show(Build(PageNetwork, testState(), pendingView(), testNow, 20, 4))
	if !strings.Contains(strings.Join(m.screen(), "\n"), testCode) {
		t.Fatalf("setup code not on the display before setup:\n%s", strings.Join(m.screen(), "\n"))
	}
	for kind := PageKind(0); kind < numPages; kind++ {
		show(Build(kind, testState(), SetupView{}, testNow, 20, 4))
		noCode(t, kind.String()+" page on the HD44780", strings.Join(m.screen(), "\n"))
	}
	// DDRAM beyond the visible 20 columns holds nothing either.
	noCode(t, "DDRAM", string(m.ddram[:]))
}

// A bus fault is reported, and the next page starts with a fresh initialisation.
func TestHD44780BusFault(t *testing.T) {
	h, bus := newTestHD44780(t)
	if err := h.Show(Build(PageStorage, testState(), SetupView{}, testNow, 20, 4)); err != nil {
		t.Fatal(err)
	}
	bus.take()
	bus.fail = errors.New("remote I/O error")
	err := h.Show(Build(PageAlarms, testState(), SetupView{}, testNow, 20, 4))
	if !errors.Is(err, ErrBus) || !strings.Contains(err.Error(), "remote I/O error") {
		t.Fatalf("err = %v", err)
	}
	if err := h.Show(Build(PageAlarms, testState(), SetupView{}, testNow, 20, 4)); err != nil {
		t.Fatal(err)
	}
	ev := bus.take()
	if ev[0].wait < 40*time.Millisecond {
		t.Fatalf("no re-initialisation after a fault: %+v", ev[0])
	}
	m := newHD44780Model()
	for _, e := range ev {
		m.feed(e)
	}
	if m.screen()[1] != "14:03 lobby video lo" {
		t.Fatalf("page after recovery: %q", m.screen())
	}
}

func TestHD44780Config(t *testing.T) {
	for _, c := range []HD44780Config{{}, {Bus: &busLog{}, Addr: 0x80}, {Bus: &busLog{}, Cols: 40, Rows: 4}} {
		if _, err := NewHD44780(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err %v", c, err)
		}
	}
	if _, err := OpenHD44780(97, 0x27, 20, 4); err == nil {
		t.Error("opened a missing I2C bus")
	}
}
