package lcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/edgenvr/nvr/board"
)

// Driver puts a page on a panel. Show is called from one goroutine; it must return within a second or
// two, and after an error the next Show must redraw the whole page (re-initialising the panel if needed).
type Driver interface {
	Show(Page) error
	Close() error
}

// Source gives the appliance's state. DisplayState is called about once a second from the display's own
// goroutine and must be quick and never block on the recording path.
type Source interface {
	DisplayState() State
}

// SourceFunc adapts a function to [Source].
type SourceFunc func() State

// DisplayState implements [Source].
func (f SourceFunc) DisplayState() State { return f() }

// ButtonEvent is one press of a key: short (on release) or long (once, while still held).
type ButtonEvent struct {
	Role board.ButtonRole
	Long bool
}

// Config configures a [Display].
type Config struct {
	// Driver is the panel; required (use [NewConsole] where there is none).
	Driver Driver
	// Source is the appliance's state; required.
	Source Source
	// Setup tells whether setup is pending and which code to show. Nil: setup is treated as done and no
	// code is ever shown.
	Setup SetupCodeSource
	// Cols and Rows are the page size in characters (default 20×4; graphical panels use it too).
	Cols, Rows int
	// Buttons are the board's keys (none: the display shows the home page and the setup code while
	// setup is pending).
	Buttons []board.Button
	// LongPress is how long a key is held to count as long (default 2 s).
	LongPress time.Duration
	// Refresh is how often the state is read and the page redrawn if it changed (default 1 s).
	Refresh time.Duration
	// IdleReturn is how long after the last key press the display returns to its home page (default 2 min).
	IdleReturn time.Duration
	// RevealFor is how long the setup code stays on the display after a long press, on boards with buttons
	// (default 10 min). Without buttons the code is shown for as long as setup is pending.
	RevealFor time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Display runs the local display: it reads the appliance's state, follows the buttons and redraws the
// current page on the driver when it changes.
type Display struct {
	cfg Config
	log *slog.Logger

	presses chan ButtonEvent
	kick    chan struct{}

	mu    sync.Mutex
	scr   screen
	shown Page
	valid bool // shown is on the panel
}

// ErrConfig is returned by [New] for an unusable configuration.
var ErrConfig = errors.New("lcd: bad configuration")

// New checks the configuration.
func New(cfg Config, log *slog.Logger) (*Display, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Driver == nil || cfg.Source == nil {
		return nil, fmt.Errorf("%w: Driver and Source are required", ErrConfig)
	}
	if cfg.Cols == 0 && cfg.Rows == 0 {
		cfg.Cols, cfg.Rows = 20, 4
	}
	if cfg.Cols < 16 || cfg.Cols > 40 || cfg.Rows < 2 || cfg.Rows > 8 {
		return nil, fmt.Errorf("%w: %dx%d characters", ErrConfig, cfg.Cols, cfg.Rows)
	}
	if cfg.LongPress <= 0 {
		cfg.LongPress = 2 * time.Second
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Second
	}
	if cfg.IdleReturn <= 0 {
		cfg.IdleReturn = 2 * time.Minute
	}
	if cfg.RevealFor <= 0 {
		cfg.RevealFor = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for i, b := range cfg.Buttons {
		if b.Device == "" || b.Code == 0 {
			return nil, fmt.Errorf("%w: button %d has no device or key code", ErrConfig, i)
		}
	}
	d := &Display{cfg: cfg, log: log, presses: make(chan ButtonEvent, 16), kick: make(chan struct{}, 1)}
	d.scr = screen{canReveal: len(cfg.Buttons) > 0, idleReturn: cfg.IdleReturn, revealFor: cfg.RevealFor}
	return d, nil
}

// Press hands a key event to the display (from the button readers, or a local console). It never blocks;
// presses beyond a small backlog are dropped.
func (d *Display) Press(ev ButtonEvent) {
	select {
	case d.presses <- ev:
	default:
	}
}

// Refresh asks for an immediate redraw (for instance when an alarm is raised).
func (d *Display) Refresh() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Current returns the page on the panel and whether one is there.
func (d *Display) Current() (Page, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shown, d.valid
}

// Run drives the display until ctx ends, then shows the stopped page and closes the driver. Panel and
// button faults are logged and retried; they never end Run.
func (d *Display) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	bctx, stopButtons := context.WithCancel(ctx)
	defer stopButtons()
	for dev, keys := range groupButtons(d.cfg.Buttons) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runButtons(bctx, dev, keys, d.cfg.LongPress, d.Press, d.log)
		}()
	}

	tick := time.NewTicker(d.cfg.Refresh)
	defer tick.Stop()
	var lastErr string
	for {
		if err := d.redraw(); err != nil {
			if err.Error() != lastErr {
				d.log.Warn("lcd: display driver", "err", err)
				lastErr = err.Error()
			}
		} else if lastErr != "" {
			d.log.Info("lcd: display driver works again")
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			stopButtons()
			wg.Wait()
			stopped := Build(PageStopped, State{}, SetupView{}, d.cfg.Now(), d.cfg.Cols, d.cfg.Rows)
			var errs []error
			if err := d.cfg.Driver.Show(stopped); err != nil {
				errs = append(errs, fmt.Errorf("lcd: show stopped page: %w", err))
			}
			if err := d.cfg.Driver.Close(); err != nil {
				errs = append(errs, fmt.Errorf("lcd: close display: %w", err))
			}
			for _, err := range errs {
				d.log.Warn("lcd: stop", "err", err)
			}
			return nil
		case ev := <-d.presses:
			d.mu.Lock()
			d.scr.input(ev, d.cfg.Now(), d.setupPending())
			d.mu.Unlock()
		case <-d.kick:
		case <-tick.C:
		}
	}
}

func (d *Display) setupPending() bool {
	return d.cfg.Setup != nil && d.cfg.Setup.SetupPending()
}

// redraw builds the current page and shows it if it differs from the one on the panel.
func (d *Display) redraw() error {
	st := d.cfg.Source.DisplayState()
	now := d.cfg.Now()
	var code string
	var exp time.Time
	var ok bool
	pending := d.setupPending()
	if pending {
		code, exp, ok = d.cfg.Setup.SetupCode()
	}
	d.mu.Lock()
	kind, view := d.scr.update(now, st, pending, code, exp, ok)
	d.mu.Unlock()
	p := Build(kind, st, view, now, d.cfg.Cols, d.cfg.Rows)
	d.mu.Lock()
	same := d.valid && d.shown.equal(p)
	d.mu.Unlock()
	if same {
		return nil
	}
	if err := d.cfg.Driver.Show(p); err != nil {
		d.mu.Lock()
		d.valid = false
		d.mu.Unlock()
		return fmt.Errorf("show %s page: %w", p.Kind, err)
	}
	d.mu.Lock()
	d.shown, d.valid = p, true
	d.mu.Unlock()
	return nil
}

func groupButtons(bs []board.Button) map[string]map[uint16]board.ButtonRole {
	out := map[string]map[uint16]board.ButtonRole{}
	for _, b := range bs {
		if out[b.Device] == nil {
			out[b.Device] = map[uint16]board.ButtonRole{}
		}
		out[b.Device][b.Code] = b.Role
	}
	return out
}

// screen is the navigation state machine: which page is up, and whether the setup code is revealed.
type screen struct {
	canReveal  bool
	idleReturn time.Duration
	revealFor  time.Duration

	cur         PageKind
	lastInput   time.Time
	revealUntil time.Time
	sawCode     bool
	lastCode    string
	alarms      map[string]bool
}

func (s *screen) home(pending bool, alarms int) PageKind {
	switch {
	case pending:
		return PageNetwork
	case alarms > 0:
		return PageAlarms
	}
	return PageRecording
}

// input applies a key press.
func (s *screen) input(ev ButtonEvent, now time.Time, pending bool) {
	s.lastInput = now
	if ev.Long {
		if pending {
			s.revealUntil = now.Add(s.revealFor)
			s.cur = PageNetwork
		}
		return
	}
	switch ev.Role {
	case board.ButtonPrev:
		s.cur = (s.cur + numPages - 1) % numPages
	case board.ButtonSelect:
		s.cur = s.home(pending, 0)
	default:
		s.cur = (s.cur + 1) % numPages
	}
}

// update follows the state: a first setup code or a new alarm brings its page up, idleness returns home.
// It returns the page to show and what it may show of setup.
func (s *screen) update(now time.Time, st State, pending bool, code string, exp time.Time, ok bool) (PageKind, SetupView) {
	idle := s.lastInput.IsZero() || now.Sub(s.lastInput) >= s.idleReturn
	if idle {
		s.cur = s.home(pending, len(st.Alarms))
	}
	if !pending {
		s.revealUntil, s.lastCode = time.Time{}, ""
	}
	if pending && ok && code != s.lastCode {
		s.lastCode = code
		if !s.sawCode {
			// The first code after start is shown at once: the installer has just powered the box on.
			s.sawCode = true
			s.revealUntil = now.Add(s.revealFor)
			s.cur = PageNetwork
		}
	}
	fresh := false
	seen := make(map[string]bool, len(st.Alarms))
	for _, a := range st.Alarms {
		seen[a.ID] = true
		if !s.alarms[a.ID] {
			fresh = true
		}
	}
	s.alarms = seen
	if fresh && !(pending && now.Before(s.revealUntil) && s.cur == PageNetwork) {
		s.cur = PageAlarms
		s.lastInput = now // stay on the alarm for a while before returning home
	}
	view := SetupView{Pending: pending, CanReveal: s.canReveal}
	if pending && ok && (!s.canReveal || now.Before(s.revealUntil)) {
		view.Code, view.Expires = code, exp
	}
	return s.cur, view
}

// OpenDriver opens the driver for a board's display profile. Boards without a panel (and make run) get a
// [Console] on console, the local console writer, so the setup code still reaches the installer.
func OpenDriver(d board.Display, console io.Writer, log *slog.Logger) (Driver, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	switch d.Kind {
	case board.DisplayHD44780:
		return OpenHD44780(d.I2CBus, d.I2CAddr, d.Cols, d.Rows)
	case board.DisplayFramebuffer:
		return OpenFramebuffer(FramebufferConfig{Device: d.Framebuffer})
	}
	if console == nil {
		return nil, fmt.Errorf("%w: a board without a panel needs a console writer", ErrConfig)
	}
	return NewConsole(console, 20, log), nil
}
