package board

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// DisplayKind names the kind of local display a board has.
type DisplayKind string

// The display kinds the firmware drives.
const (
	// DisplayNone: the board has no display; the setup code goes to the local console only.
	DisplayNone DisplayKind = "none"
	// DisplayHD44780: an HD44780-compatible character display (typically 20×4) behind a PCF8574 I²C
	// backpack.
	DisplayHD44780 DisplayKind = "hd44780-i2c"
	// DisplayFramebuffer: a small panel exposed by the kernel as /dev/fbN (fbtft, simple-framebuffer, DRM
	// fbdev emulation).
	DisplayFramebuffer DisplayKind = "framebuffer"
	// DisplayConsole: no panel; the pages are printed as text to the local console (make run, qemu).
	DisplayConsole DisplayKind = "console"
)

// Display describes a board's local display and its buttons.
type Display struct {
	Kind DisplayKind

	// I2CBus is the I²C bus of an HD44780 backpack, as a bus number (1 for /dev/i2c-1).
	I2CBus int
	// I2CAddr is the backpack's 7-bit address (0x27 for PCF8574, 0x3f for PCF8574A by default).
	I2CAddr uint16
	// Cols and Rows are the character display's size (20×4 by default).
	Cols, Rows int

	// Framebuffer is the panel's device, such as /dev/fb1.
	Framebuffer string

	// Buttons are the keys that page through the screens. Empty: the board has none.
	Buttons []Button
	// LongPress is how long a key is held to count as a long press (default 2 s).
	LongPress time.Duration
}

// ButtonRole is what a key does on the display.
type ButtonRole string

// Button roles.
const (
	// ButtonNext shows the next page; a long press shows the setup code while no administrator exists.
	ButtonNext ButtonRole = "next"
	// ButtonPrev shows the previous page.
	ButtonPrev ButtonRole = "prev"
	// ButtonSelect returns to the home page; a long press shows the setup code while no administrator
	// exists.
	ButtonSelect ButtonRole = "select"
)

// Button is one key, read from a Linux input device. GPIO buttons are declared to the kernel as gpio-keys
// in the board's device tree, so the kernel debounces them and they arrive here as key events.
type Button struct {
	Role ButtonRole
	// Device is the evdev node, preferably a stable name such as /dev/input/by-path/platform-gpio-keys-event.
	Device string
	// Code is the Linux key code (KEY_ENTER is 28, KEY_DOWN 108, KEY_UP 103, KEY_PROG1 148).
	Code uint16
}

// Validate checks a display profile and fills in defaults.
func (d *Display) Validate() error {
	switch d.Kind {
	case "", DisplayNone:
		d.Kind = DisplayNone
	case DisplayConsole:
	case DisplayHD44780:
		if d.I2CBus < 0 {
			return fmt.Errorf("board: display: I2C bus %d", d.I2CBus)
		}
		if d.I2CAddr == 0 {
			d.I2CAddr = 0x27
		}
		if d.I2CAddr > 0x7f {
			return fmt.Errorf("board: display: I2C address %#x is not a 7-bit address", d.I2CAddr)
		}
		if d.Cols == 0 && d.Rows == 0 {
			d.Cols, d.Rows = 20, 4
		}
		if d.Cols < 16 || d.Cols > 40 || d.Rows < 2 || d.Rows > 4 {
			return fmt.Errorf("board: display: %dx%d characters is not a supported HD44780 size", d.Cols, d.Rows)
		}
	case DisplayFramebuffer:
		if !strings.HasPrefix(d.Framebuffer, "/dev/") {
			return fmt.Errorf("board: display: framebuffer %q is not a device path", d.Framebuffer)
		}
	default:
		return fmt.Errorf("board: display kind %q: %w", d.Kind, ErrUnknownDisplay)
	}
	if d.LongPress == 0 {
		d.LongPress = 2 * time.Second
	}
	if d.LongPress < 300*time.Millisecond || d.LongPress > 10*time.Second {
		return fmt.Errorf("board: display: long press %v is outside 300ms..10s", d.LongPress)
	}
	for i, b := range d.Buttons {
		switch b.Role {
		case ButtonNext, ButtonPrev, ButtonSelect:
		default:
			return fmt.Errorf("board: display: button %d: role %q", i, b.Role)
		}
		if !strings.HasPrefix(b.Device, "/dev/input/") {
			return fmt.Errorf("board: display: button %d: device %q is not under /dev/input", i, b.Device)
		}
		if b.Code == 0 || b.Code > 0x2ff {
			return fmt.Errorf("board: display: button %d: key code %d", i, b.Code)
		}
	}
	return nil
}

// ErrUnknownDisplay is returned for a display kind the firmware has no driver for.
var ErrUnknownDisplay = errors.New("unknown display kind")
