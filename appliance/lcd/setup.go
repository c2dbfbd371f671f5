package lcd

import (
	"log/slog"
	"sync"
	"time"
)

// SetupCodeSource is where the display learns whether first-boot setup is pending and which one-time setup
// code to show. The web/authz side implements it (or feeds a [SetupCodes]). Implementations must report
// SetupPending false as soon as an administrator exists; the display then never shows a code again.
type SetupCodeSource interface {
	// SetupPending reports whether no administrator exists yet.
	SetupPending() bool
	// SetupCode returns the outstanding setup code and when it expires; ok is false when there is none.
	SetupCode() (code string, expires time.Time, ok bool)
}

// SetupCodes holds the one-time setup code between the component that makes it (authz, through the web
// server's Display hook) and the display. It forgets the code once it expires or once setup is done. Its
// String and LogValue never reveal the code, so passing it to a logger by mistake leaks nothing.
type SetupCodes struct {
	pending func() bool
	now     func() time.Time

	mu      sync.Mutex
	code    string
	expires time.Time
}

// NewSetupCodes returns an empty holder. pending reports whether no administrator exists (authz's
// NeedsSetup); now is the clock (nil: time.Now).
func NewSetupCodes(pending func() bool, now func() time.Time) *SetupCodes {
	if now == nil {
		now = time.Now
	}
	return &SetupCodes{pending: pending, now: now}
}

// Offer stores a fresh code. Its signature fits the web server's Display hook.
func (s *SetupCodes) Offer(code string, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.code, s.expires = code, expires
}

// SetupPending implements [SetupCodeSource].
func (s *SetupCodes) SetupPending() bool {
	if s.pending() {
		return true
	}
	s.forget()
	return false
}

// SetupCode implements [SetupCodeSource].
func (s *SetupCodes) SetupCode() (string, time.Time, bool) {
	if !s.pending() {
		s.forget()
		return "", time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.code == "" || !s.now().Before(s.expires) {
		s.code = ""
		return "", time.Time{}, false
	}
	return s.code, s.expires, true
}

func (s *SetupCodes) forget() {
	s.mu.Lock()
	s.code, s.expires = "", time.Time{}
	s.mu.Unlock()
}

// String never shows the code.
func (s *SetupCodes) String() string { return "lcd.SetupCodes{redacted}" }

// LogValue never shows the code.
func (s *SetupCodes) LogValue() slog.Value { return slog.StringValue("[redacted]") }
