package store

import "errors"

// Sentinel errors. Every error returned by this package wraps at most one of
// them together with the operation and the key involved, so callers branch
// with [errors.Is].
var (
	// ErrNotFound is returned when a camera, segment or hold named by the
	// caller has no record: Camera, Segment, CloseSegment, UpdateSegment,
	// DeleteSegment, DeleteHold and PutHold with a non-zero ID.
	ErrNotFound = errors.New("not found")

	// ErrExists is returned by BeginSegment when a segment with the same ID is
	// already indexed, whatever its state.
	ErrExists = errors.New("already exists")

	// ErrNotOpen is returned by CloseSegment and UpdateSegment when the
	// stored segment is no longer in StateOpen (it was closed or recovered
	// already), so a late or repeated close never rewrites a final record.
	ErrNotOpen = errors.New("segment not open")

	// ErrCorrupt is returned when stored bytes fail to decode (unknown
	// version, bad length, trailing bytes) or when Verify finds a broken
	// invariant. The error text names the bucket and key.
	ErrCorrupt = errors.New("corrupt record")

	// ErrInvalid is returned when the caller passes a value the index refuses
	// to store: a zero segment ID, an empty camera name, a field longer than
	// its limit, a time outside the years 1678..2262, a wrong State for the
	// operation, an End before Start, or a camera URL with credentials.
	ErrInvalid = errors.New("invalid value")
)
