package update

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a firmware version MAJOR.MINOR.PATCH. Releases are ordered by these three numbers only; a
// version string with anything else is malformed, so that two strings can never compare equal while
// naming different releases.
type Version struct{ Major, Minor, Patch uint32 }

// ParseVersion parses "MAJOR.MINOR.PATCH" (decimal, no sign, no leading zeros, at most 9 digits each).
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("%w: version %q: want MAJOR.MINOR.PATCH", ErrMalformed, clip(s))
	}
	var n [3]uint32
	for i, p := range parts {
		if p == "" || len(p) > 9 || (len(p) > 1 && p[0] == '0') {
			return Version{}, fmt.Errorf("%w: version %q", ErrMalformed, clip(s))
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return Version{}, fmt.Errorf("%w: version %q", ErrMalformed, clip(s))
			}
		}
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return Version{}, fmt.Errorf("%w: version %q", ErrMalformed, clip(s))
		}
		n[i] = uint32(v)
	}
	return Version{n[0], n[1], n[2]}, nil
}

// String returns the canonical form.
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than w.
func (v Version) Compare(w Version) int {
	for _, d := range [3][2]uint32{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Patch, w.Patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// clip shortens untrusted text before it goes into an error message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
