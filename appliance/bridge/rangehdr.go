package bridge

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrRange is returned for a Range, Scale or time query the bridge cannot serve; the client gets 457.
var ErrRange = errors.New("invalid range")

// maxHeaderValue bounds the header values this package parses itself (gortsplib bounds the request).
const maxHeaderValue = 256

// playRange is where a recorded stream starts and, optionally, ends.
type playRange struct {
	// Start is an absolute time (clock= or the URL's start) or zero with NPT set.
	Start time.Time
	// NPT is an offset from the stream's start (npt=), used when Start is zero.
	NPT time.Duration
	// End is exclusive; zero means open-ended.
	End time.Time
	// NPTEnd is an npt= end, relative like NPT; zero means open-ended.
	NPTEnd time.Duration
	// Now is set for npt=now- (live edge: not offered by replay).
	Now bool
}

// parseClock reads an RFC 2326 absolute time, "20261123T101500Z" or with a fraction "20261123T101500.25Z".
func parseClock(s string) (time.Time, error) {
	if len(s) < 16 || len(s) > 26 || !strings.HasSuffix(s, "Z") || s[8] != 'T' {
		return time.Time{}, fmt.Errorf("%w: clock time %q", ErrRange, s)
	}
	whole, frac, hasFrac := strings.Cut(s[:len(s)-1], ".")
	t, err := time.Parse("20060102T150405", whole)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: clock time %q", ErrRange, s)
	}
	if hasFrac {
		if frac == "" || len(frac) > 9 || strings.Trim(frac, "0123456789") != "" {
			return time.Time{}, fmt.Errorf("%w: clock time %q", ErrRange, s)
		}
		ns, _ := strconv.Atoi((frac + "000000000")[:9])
		t = t.Add(time.Duration(ns))
	}
	return t.UTC(), nil
}

// formatClock writes an absolute time the way RFC 2326 and ONVIF replay clients read it.
func formatClock(t time.Time) string {
	t = t.UTC()
	if ms := t.Nanosecond() / 1e6; ms != 0 {
		return t.Format("20060102T150405") + "." + fmt.Sprintf("%03d", ms) + "Z"
	}
	return t.Format("20060102T150405Z")
}

// parseNPT reads an NPT time: seconds with an optional fraction, or h:mm:ss(.frac).
func parseNPT(s string) (time.Duration, error) {
	if s == "" || len(s) > 32 {
		return 0, fmt.Errorf("%w: npt %q", ErrRange, s)
	}
	var secs float64
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 1, 3:
	default:
		return 0, fmt.Errorf("%w: npt %q", ErrRange, s)
	}
	for i, p := range parts {
		if p == "" || strings.Trim(p, "0123456789.") != "" || strings.Count(p, ".") > 1 {
			return 0, fmt.Errorf("%w: npt %q", ErrRange, s)
		}
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || (len(parts) == 3 && i > 0 && v >= 60) {
			return 0, fmt.Errorf("%w: npt %q", ErrRange, s)
		}
		secs = secs*60 + v
	}
	if secs > 10*365*24*3600 || math.IsNaN(secs) {
		return 0, fmt.Errorf("%w: npt %q", ErrRange, s)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// parseRange reads a Range header: "clock=START-[END]" or "npt=START-[END]" (RFC 2326 §12.29), with an
// optional ";time=…" that is ignored (the bridge plays at once). An empty value is no range.
func parseRange(v string) (playRange, bool, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return playRange{}, false, nil
	}
	if len(v) > maxHeaderValue {
		return playRange{}, false, fmt.Errorf("%w: Range too long", ErrRange)
	}
	spec, _, _ := strings.Cut(v, ";")
	unit, val, ok := strings.Cut(strings.TrimSpace(spec), "=")
	if !ok {
		return playRange{}, false, fmt.Errorf("%w: Range %q", ErrRange, v)
	}
	start, end, ok := strings.Cut(val, "-")
	if !ok || strings.Contains(end, "-") {
		return playRange{}, false, fmt.Errorf("%w: Range %q", ErrRange, v)
	}
	var r playRange
	switch strings.ToLower(strings.TrimSpace(unit)) {
	case "clock":
		t, err := parseClock(start)
		if err != nil {
			return playRange{}, false, err
		}
		r.Start = t
		if end != "" {
			e, err := parseClock(end)
			if err != nil {
				return playRange{}, false, err
			}
			r.End = e
		}
	case "npt":
		if start == "now" {
			r.Now = true
		} else {
			d, err := parseNPT(start)
			if err != nil {
				return playRange{}, false, err
			}
			r.NPT = d
		}
		if end != "" {
			d, err := parseNPT(end)
			if err != nil {
				return playRange{}, false, err
			}
			if !r.Now && d <= r.NPT {
				return playRange{}, false, fmt.Errorf("%w: Range ends before it starts", ErrRange)
			}
			r.NPTEnd = d
		}
	default:
		return playRange{}, false, fmt.Errorf("%w: Range unit %q", ErrRange, unit)
	}
	if !r.End.IsZero() && !r.Start.IsZero() && !r.End.After(r.Start) {
		return playRange{}, false, fmt.Errorf("%w: Range ends before it starts", ErrRange)
	}
	return r, true, nil
}

// queryRange reads the start and end a client without Range support (ffmpeg) puts in the URL:
// ?start=20261123T101500Z&end=20261123T101600Z.
func queryRange(q string) (playRange, bool, error) {
	if q == "" {
		return playRange{}, false, nil
	}
	if len(q) > maxHeaderValue {
		return playRange{}, false, fmt.Errorf("%w: query too long", ErrRange)
	}
	vals, err := url.ParseQuery(q)
	if err != nil {
		return playRange{}, false, fmt.Errorf("%w: query", ErrRange)
	}
	var r playRange
	for k, vs := range vals {
		if len(vs) != 1 {
			return playRange{}, false, fmt.Errorf("%w: query parameter %q repeated", ErrRange, k)
		}
		switch k {
		case "start":
			if r.Start, err = parseClock(vs[0]); err != nil {
				return playRange{}, false, err
			}
		case "end":
			if r.End, err = parseClock(vs[0]); err != nil {
				return playRange{}, false, err
			}
		default:
			return playRange{}, false, fmt.Errorf("%w: unknown query parameter", ErrRange)
		}
	}
	if r.Start.IsZero() {
		return playRange{}, false, fmt.Errorf("%w: query without start", ErrRange)
	}
	if !r.End.IsZero() && !r.End.After(r.Start) {
		return playRange{}, false, fmt.Errorf("%w: end before start", ErrRange)
	}
	return r, true, nil
}

// Scale bounds: ONVIF replay allows any scale; the bridge sends every frame, so it bounds fast play.
const (
	minScale = 0.25
	maxScale = 8
)

// parseScale reads a Scale header (RFC 2326 §12.34); an empty value is 1. Reverse play is refused.
func parseScale(v string) (float64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 1, nil
	}
	if len(v) > 16 {
		return 0, fmt.Errorf("%w: Scale too long", ErrRange)
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(s) || s < minScale || s > maxScale {
		return 0, fmt.Errorf("%w: Scale %q (supported: %g to %g)", ErrRange, v, float64(minScale), float64(maxScale))
	}
	return s, nil
}

// Option tags the bridge knows in Require (RFC 2326 §12.32).
const tagONVIFReplay = "onvif-replay"

// unsupportedRequire returns the option tags of a Require header the bridge does not support.
func unsupportedRequire(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag != "" && !strings.EqualFold(tag, tagONVIFReplay) && len(out) < 8 {
				if len(tag) > 64 {
					tag = tag[:64]
				}
				out = append(out, tag)
			}
		}
	}
	return out
}
