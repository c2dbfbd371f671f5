package authz

import (
	"sync"
	"time"
)

// ThrottleConfig tunes the progressive delays against password guessing.
//
// Two counters are kept. Per source address: after SourceFree failures each further failure doubles a
// delay from SourceBase up to SourceMax, during which that address's attempts are refused unseen. Per
// account: after AccountFree failures every attempt on the account, from anywhere, is answered after a
// delay that doubles from AccountBase up to AccountMax, never refused, so an attacker can slow the real
// user down by at most AccountMax but cannot lock them out. A success clears both; idle counters are
// forgotten after Forget.
type ThrottleConfig struct {
	SourceFree  int
	SourceBase  time.Duration
	SourceMax   time.Duration
	AccountFree int
	AccountBase time.Duration
	AccountMax  time.Duration
	Forget      time.Duration
	// MaxTracked bounds memory; the oldest counters go first.
	MaxTracked int
}

func (c *ThrottleConfig) defaults() {
	if c.SourceFree <= 0 {
		c.SourceFree = 3
	}
	if c.SourceBase <= 0 {
		c.SourceBase = 500 * time.Millisecond
	}
	if c.SourceMax <= 0 {
		c.SourceMax = 15 * time.Minute
	}
	if c.AccountFree <= 0 {
		c.AccountFree = 5
	}
	if c.AccountBase <= 0 {
		c.AccountBase = 100 * time.Millisecond
	}
	if c.AccountMax <= 0 {
		c.AccountMax = 2 * time.Second
	}
	if c.Forget <= 0 {
		c.Forget = 24 * time.Hour
	}
	if c.MaxTracked <= 0 {
		c.MaxTracked = 100000
	}
}

type counter struct {
	fails int
	next  time.Time // source: refused before this
	last  time.Time
}

type throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	mu sync.Mutex
	m  map[string]*counter
}

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	cfg.defaults()
	return &throttle{cfg: cfg, now: now, m: map[string]*counter{}}
}

func backoff(fails, free int, base, max time.Duration) time.Duration {
	if fails < free {
		return 0
	}
	d := base
	for i := free; i < fails && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// ThrottledError is returned when a source must wait; RetryAfter says how long.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string { return ErrThrottled.Error() }

// Is makes errors.Is(err, ErrThrottled) hold.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// admit is called before checking a credential. It refuses a source in its delay, and returns the delay
// to impose on the answer (for the account and the source).
func (t *throttle) admit(source, account string) (time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.gcLocked(now)
	if c := t.m["s:"+source]; c != nil && now.Before(c.next) {
		return 0, &ThrottledError{RetryAfter: c.next.Sub(now)}
	}
	var d time.Duration
	if c := t.m["a:"+account]; c != nil {
		d = backoff(c.fails, t.cfg.AccountFree, t.cfg.AccountBase, t.cfg.AccountMax)
	}
	return d, nil
}

// fail records a failed attempt and returns the extra delay to impose on this answer.
func (t *throttle) fail(source, account string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var d time.Duration
	for _, k := range []string{"s:" + source, "a:" + account} {
		c := t.m[k]
		if c == nil {
			c = &counter{}
			t.m[k] = c
		}
		c.fails++
		c.last = now
		if k[0] == 's' {
			d = backoff(c.fails, t.cfg.SourceFree, t.cfg.SourceBase, t.cfg.SourceMax)
			c.next = now.Add(d)
		}
	}
	return min(d, t.cfg.AccountMax)
}

func (t *throttle) success(source, account string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, "s:"+source)
	delete(t.m, "a:"+account)
}

func (t *throttle) gcLocked(now time.Time) {
	if len(t.m) < t.cfg.MaxTracked {
		return
	}
	for k, c := range t.m {
		if now.Sub(c.last) > t.cfg.Forget || len(t.m) >= t.cfg.MaxTracked {
			delete(t.m, k)
		}
	}
}
