package lcd

import (
	"errors"
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/host/v3/sysfs"
)

// The PCF8574 backpack's wiring (the common "LCM1602/2004 IIC" board): P0 RS, P1 RW, P2 E, P3 backlight,
// P4..P7 D4..D7.
const (
	pinRS        = 1 << 0
	pinRW        = 1 << 1
	pinE         = 1 << 2
	pinBacklight = 1 << 3
)

// HD44780 instructions (datasheet table 6).
const (
	cmdClear       = 0x01
	cmdEntryMode   = 0x04 // | 0x02 increment
	cmdDisplay     = 0x08 // | 0x04 display on, 0x02 cursor, 0x01 blink
	cmdFunctionSet = 0x20 // | 0x10 8-bit, 0x08 two lines, 0x04 5x10 dots
	cmdSetCGRAM    = 0x40
	cmdSetDDRAM    = 0x80
)

// Icon characters in CGRAM: the page icon is the first character of the title line.
const (
	glyphNetwork = iota
	glyphKey
	glyphRecord
	glyphDisk
	glyphBell
	glyphStop
)

// glyphs are 5×8 custom characters (rows top to bottom, bit 4 leftmost).
var glyphs = [...][8]byte{
	glyphNetwork: {0x0e, 0x11, 0x04, 0x0a, 0x00, 0x04, 0x04, 0x00}, // signal arcs
	glyphKey:     {0x0e, 0x11, 0x11, 0x0e, 0x04, 0x06, 0x04, 0x06}, // key
	glyphRecord:  {0x00, 0x0e, 0x1f, 0x1f, 0x1f, 0x0e, 0x00, 0x00}, // filled dot
	glyphDisk:    {0x1f, 0x11, 0x1f, 0x00, 0x1f, 0x11, 0x1f, 0x00}, // two drives
	glyphBell:    {0x04, 0x0e, 0x0e, 0x0e, 0x1f, 0x00, 0x04, 0x00}, // bell
	glyphStop:    {0x00, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x00, 0x00}, // square
}

func pageGlyph(p Page) byte {
	switch p.Kind {
	case PageNetwork:
		if p.Title == "SETUP" {
			return glyphKey
		}
		return glyphNetwork
	case PageRecording:
		return glyphRecord
	case PageStorage:
		return glyphDisk
	case PageAlarms:
		return glyphBell
	}
	return glyphStop
}

// HD44780Config configures an [HD44780].
type HD44780Config struct {
	// Bus is the I²C bus; Addr the backpack's 7-bit address (default 0x27).
	Bus  i2c.Bus
	Addr uint16
	// Cols and Rows are the display's size (default 20×4).
	Cols, Rows int
	// Sleep waits for the controller (default time.Sleep); tests inject one that records instead.
	Sleep func(time.Duration)
}

// HD44780 drives an HD44780 character display through a PCF8574 I²C backpack in 4-bit mode. It keeps a
// copy of what the display holds and sends only the characters that change, one bus transaction per row.
// It writes to the display only (RW stays low): the busy flag is never read, the datasheet's execution
// times are waited instead.
type HD44780 struct {
	cfg    HD44780Config
	dev    i2c.Dev
	closer interface{ Close() error }

	ready  bool     // initialised and the shadow matches the display
	shadow [][]byte // what DDRAM holds, per row
	buf    []byte
}

// ErrBus wraps an I²C transfer failure.
var ErrBus = errors.New("lcd: I2C transfer failed")

// NewHD44780 returns a driver; the display is initialised on the first Show.
func NewHD44780(cfg HD44780Config) (*HD44780, error) {
	if cfg.Bus == nil {
		return nil, fmt.Errorf("%w: no I2C bus", ErrConfig)
	}
	if cfg.Addr == 0 {
		cfg.Addr = 0x27
	}
	if cfg.Addr > 0x7f {
		return nil, fmt.Errorf("%w: I2C address %#x", ErrConfig, cfg.Addr)
	}
	if cfg.Cols == 0 && cfg.Rows == 0 {
		cfg.Cols, cfg.Rows = 20, 4
	}
	if cfg.Cols < 8 || cfg.Cols > 40 || cfg.Rows < 1 || cfg.Rows > 4 || cfg.Cols*cfg.Rows > 80 {
		return nil, fmt.Errorf("%w: %dx%d HD44780", ErrConfig, cfg.Cols, cfg.Rows)
	}
	if cfg.Sleep == nil {
		cfg.Sleep = time.Sleep
	}
	h := &HD44780{cfg: cfg, dev: i2c.Dev{Bus: cfg.Bus, Addr: cfg.Addr}}
	h.shadow = make([][]byte, cfg.Rows)
	for r := range h.shadow {
		h.shadow[r] = make([]byte, cfg.Cols)
	}
	return h, nil
}

// OpenHD44780 opens /dev/i2c-<bus> through periph's Linux I²C driver and returns a driver on it.
func OpenHD44780(bus int, addr uint16, cols, rows int) (*HD44780, error) {
	b, err := sysfs.NewI2C(bus)
	if err != nil {
		return nil, fmt.Errorf("lcd: open I2C bus %d: %w", bus, err)
	}
	h, err := NewHD44780(HD44780Config{Bus: b, Addr: addr, Cols: cols, Rows: rows})
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	h.closer = b
	return h, nil
}

// rowAddr is the DDRAM address of a row's first character. Rows 2 and 3 of a four-line display continue
// rows 0 and 1 (for 20 columns: 0x00, 0x40, 0x14, 0x54).
func (h *HD44780) rowAddr(r int) byte {
	base := [4]byte{0x00, 0x40, byte(h.cfg.Cols), 0x40 + byte(h.cfg.Cols)}
	return base[r]
}

// nibble appends the two backpack bytes that clock four bits in: E high with the data, then E low (the
// controller latches on the falling edge).
func (h *HD44780) nibble(b []byte, v byte, rs bool) []byte {
	out := v<<4 | pinBacklight
	if rs {
		out |= pinRS
	}
	return append(b, out|pinE, out)
}

func (h *HD44780) byteOut(b []byte, v byte, rs bool) []byte {
	return h.nibble(h.nibble(b, v>>4, rs), v&0x0f, rs)
}

func (h *HD44780) tx(b []byte) error {
	if err := h.dev.Tx(b, nil); err != nil {
		h.ready = false
		return fmt.Errorf("%w: address %#x: %w", ErrBus, h.cfg.Addr, err)
	}
	return nil
}

// init runs the datasheet's 4-bit initialisation by instruction (figure 24), which works whatever state
// the controller was left in, then loads the icon glyphs and clears the display.
func (h *HD44780) init() error {
	h.cfg.Sleep(50 * time.Millisecond) // power-on: more than 40 ms after Vcc reaches 2.7 V
	steps := []struct {
		nib  byte
		wait time.Duration
	}{{0x3, 5 * time.Millisecond}, {0x3, 200 * time.Microsecond}, {0x3, 200 * time.Microsecond}, {0x2, 200 * time.Microsecond}}
	for _, s := range steps {
		if err := h.tx(h.nibble(h.buf[:0], s.nib, false)); err != nil {
			return err
		}
		h.cfg.Sleep(s.wait)
	}
	b := h.buf[:0]
	b = h.byteOut(b, cmdFunctionSet|0x08, false) // 4-bit, two (or four) lines, 5×8
	b = h.byteOut(b, cmdDisplay, false)          // display off while setting up
	if err := h.tx(b); err != nil {
		return err
	}
	if err := h.tx(h.byteOut(h.buf[:0], cmdClear, false)); err != nil {
		return err
	}
	h.cfg.Sleep(2 * time.Millisecond) // clear takes 1.52 ms
	b = h.byteOut(h.buf[:0], cmdEntryMode|0x02, false)
	b = h.byteOut(b, cmdSetCGRAM, false)
	for _, g := range glyphs {
		for _, row := range g {
			b = h.byteOut(b, row, true)
		}
	}
	b = h.byteOut(b, cmdDisplay|0x04, false) // on, no cursor, no blink
	if err := h.tx(b); err != nil {
		return err
	}
	h.buf = b[:0]
	for _, row := range h.shadow {
		for i := range row {
			row[i] = ' '
		}
	}
	h.ready = true
	return nil
}

// romChar maps printable ASCII to the HD44780's A00 character ROM, which differs at 0x5c (yen) and
// 0x7e/0x7f (arrows).
func romChar(c byte) byte {
	switch {
	case c == '\\':
		return '/'
	case c == '~':
		return '-'
	case c < 0x20 || c > 0x7d:
		return '?'
	}
	return c
}

// Show implements [Driver].
func (h *HD44780) Show(p Page) error {
	if !h.ready {
		if err := h.init(); err != nil {
			return fmt.Errorf("lcd: initialise HD44780: %w", err)
		}
	}
	text := p.Text(h.cfg.Cols - 2)
	for r := 0; r < h.cfg.Rows; r++ {
		want := make([]byte, h.cfg.Cols)
		for i := range want {
			want[i] = ' '
		}
		if r == 0 {
			want[0] = pageGlyph(p)
			for i := 0; i < len(text[0]); i++ {
				want[2+i] = romChar(text[0][i])
			}
		} else if r < len(text) {
			line := pad(p.Lines[r-1], h.cfg.Cols)
			for i := 0; i < len(line); i++ {
				want[i] = romChar(line[i])
			}
		}
		first, last := -1, -1
		for i := range want {
			if want[i] != h.shadow[r][i] {
				if first < 0 {
					first = i
				}
				last = i
			}
		}
		if first < 0 {
			continue
		}
		b := h.byteOut(h.buf[:0], cmdSetDDRAM|(h.rowAddr(r)+byte(first)), false)
		for _, c := range want[first : last+1] {
			b = h.byteOut(b, c, true)
		}
		h.buf = b[:0]
		if err := h.tx(b); err != nil {
			return err
		}
		copy(h.shadow[r], want)
	}
	return nil
}

// Close leaves the last page (normally the stopped page) on the display and closes the bus if this driver
// opened it.
func (h *HD44780) Close() error {
	if h.closer != nil {
		if err := h.closer.Close(); err != nil {
			return fmt.Errorf("lcd: close I2C bus: %w", err)
		}
	}
	return nil
}
