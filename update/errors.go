package update

import "errors"

// Rejections of an update, each a sentinel that callers (and tests) branch on with errors.Is. The running
// slot is untouched whenever one of them is returned.
var (
	// ErrUntrusted: metadata or a bundle is not signed by enough trusted keys (an unknown key, a forged or
	// missing signature).
	ErrUntrusted = errors.New("update: not signed by a trusted key")
	// ErrExpired: signed metadata is past its expiry date (a freeze attack, or a fleet server left unattended).
	ErrExpired = errors.New("update: metadata expired")
	// ErrRollback: metadata older than what the appliance already trusts, or a firmware version not newer
	// than the one running.
	ErrRollback = errors.New("update: older version than trusted")
	// ErrHashMismatch: downloaded bytes differ from the length and hashes in signed metadata (mix and match).
	ErrHashMismatch = errors.New("update: target does not match its signed hash")
	// ErrTooLarge: a target or a metadata file is longer than its signed length or the agent's limit
	// (endless data).
	ErrTooLarge = errors.New("update: target too large")
	// ErrIncompatible: a bundle meant for another board or RAUC compatible string.
	ErrIncompatible = errors.New("update: bundle is for another board")
	// ErrNoUpdate: the repository offers nothing newer for this board.
	ErrNoUpdate = errors.New("update: no newer firmware")
	// ErrMalformed: a manifest, target description or status that does not parse.
	ErrMalformed = errors.New("update: malformed")
)
