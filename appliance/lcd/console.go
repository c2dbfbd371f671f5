package lcd

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Console is the display of a box without a panel (make run, qemu, a serial console): every page change is
// drawn as a framed 20×4 text box on the local console writer, such as the daemon's standard error or
// /dev/console. The journal's structured log gets only the page's name and level, never its text, so the
// setup code is on the console and nowhere a log forwarder could carry it.
type Console struct {
	w    io.Writer
	log  *slog.Logger
	cols int

	mu sync.Mutex
}

// NewConsole returns a console display writing to w (required); log may be nil.
func NewConsole(w io.Writer, cols int, log *slog.Logger) *Console {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cols <= 0 {
		cols = 20
	}
	return &Console{w: w, log: log, cols: cols}
}

// Show implements [Driver].
func (c *Console) Show(p Page) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	edge := "+" + strings.Repeat("-", c.cols) + "+\n"
	b.WriteString(edge)
	for _, l := range p.Text(c.cols) {
		b.WriteString("|" + l + "|\n")
	}
	b.WriteString(edge)
	// A plain marker line a person (or the web tests) can find in a scrolling console.
	if code := setupCodeIn(p); code != "" {
		b.WriteString("SETUP CODE " + code + "\n")
	}
	if _, err := io.WriteString(c.w, b.String()); err != nil {
		return fmt.Errorf("lcd: console: %w", err)
	}
	c.log.Info("lcd: page shown", "page", p.Kind.String(), "level", int(p.Level))
	return nil
}

// setupCodeIn returns the setup code a setup page shows, if any.
func setupCodeIn(p Page) string {
	if p.Kind != PageNetwork || p.Title != "SETUP" {
		return ""
	}
	for _, l := range p.Lines {
		if code, ok := strings.CutPrefix(l, "Code "); ok {
			return code
		}
	}
	return ""
}

// Close implements [Driver].
func (c *Console) Close() error { return nil }
