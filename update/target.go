package update

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
)

// MaxBundleSize is the default largest bundle the agent downloads: a root file system image with room to
// grow. A signed target longer than the agent's limit is refused before any byte is fetched.
const MaxBundleSize = 1 << 30

// Target is what the fleet server's signed targets metadata says about one bundle, in its "custom" field.
type Target struct {
	// Board is the board profile name the bundle is built for (board.Profile.Name).
	Board string `json:"board"`
	// Compatible is the RAUC compatible string the bundle's manifest carries and system.conf must match.
	Compatible string `json:"compatible"`
	// Version is the firmware version, MAJOR.MINOR.PATCH.
	Version string `json:"version"`

	// Filled in from the signed metadata, not from custom.
	Path   string `json:"-"`
	Length int64  `json:"-"`
	SHA256 []byte `json:"-"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidName reports whether s is acceptable as a board name or a RAUC compatible string.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// TargetPath is where a bundle of that board and version lives in the repository.
func TargetPath(board string, v Version) string {
	return path.Join(board, "nvr-"+v.String()+".raucb")
}

// maxCustom bounds the custom field the agent will read.
const maxCustom = 4096

// ParseTargetCustom reads and checks a target's custom field: the board, compatible and version it names
// must be well formed, and the target path must be the one TargetPath gives for them, so a target cannot
// claim one version in metadata and another in its name.
func ParseTargetCustom(targetPath string, custom []byte) (Target, error) {
	var t Target
	if len(custom) == 0 {
		return t, fmt.Errorf("%w: target %q has no custom metadata", ErrMalformed, clip(targetPath))
	}
	if len(custom) > maxCustom {
		return t, fmt.Errorf("%w: target %q: custom metadata of %d bytes", ErrMalformed, clip(targetPath), len(custom))
	}
	if err := json.Unmarshal(custom, &t); err != nil {
		return t, fmt.Errorf("%w: target %q custom metadata: %v", ErrMalformed, clip(targetPath), err)
	}
	if !ValidName(t.Board) || !ValidName(t.Compatible) {
		return t, fmt.Errorf("%w: target %q: bad board or compatible name", ErrMalformed, clip(targetPath))
	}
	v, err := ParseVersion(t.Version)
	if err != nil {
		return t, fmt.Errorf("target %q: %w", clip(targetPath), err)
	}
	if want := TargetPath(t.Board, v); targetPath != want {
		return t, fmt.Errorf("%w: target %q should be named %q", ErrMalformed, clip(targetPath), want)
	}
	t.Path = targetPath
	return t, nil
}
