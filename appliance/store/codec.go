package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Record encoding, version 1. Every record starts with a version byte; then
// fixed-size fields as raw bytes, integers as unsigned varints, times as
// 8-byte big-endian Unix nanoseconds (math.MinInt64 for the zero time), and
// strings and byte slices as a uvarint length followed by the bytes. Every
// length has a limit, and a record with bytes left over is refused, so each
// valid value has exactly one encoding.
const (
	segmentVersion = 1
	holdVersion    = 1
	cameraVersion  = 1
)

// Field limits. They bound what a hostile or corrupt record can make the
// decoder allocate, and what callers may store.
const (
	MaxCameraName = 255  // bytes of Camera.Name, Segment.Camera and Hold.Camera
	MaxPath       = 4096 // bytes of Segment.Path
	MaxCodec      = 64   // bytes of Segment.Codec
	MaxWrappedKey = 2048 // bytes of Segment.WrappedKey
	MaxURL        = 2048 // bytes of Camera.URL
	MaxReason     = 4096 // bytes of Hold.Reason
)

const zeroTimeNanos = math.MinInt64

var (
	minTime = time.Unix(0, math.MinInt64+1)
	maxTime = time.Unix(0, math.MaxInt64)
)

// errShort is the decoder's error for a record that ends early.
var errShort = errors.New("record too short")

type encoder struct {
	buf []byte
	err error
}

func (e *encoder) byte(b byte)      { e.buf = append(e.buf, b) }
func (e *encoder) raw(b []byte)     { e.buf = append(e.buf, b...) }
func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }

func (e *encoder) bytes(name string, b []byte, limit int) {
	if len(b) > limit {
		e.fail(fmt.Errorf("%w: %s is %d bytes, limit %d", ErrInvalid, name, len(b), limit))
		return
	}
	e.uvarint(uint64(len(b)))
	e.raw(b)
}

func (e *encoder) string(name, s string, limit int) {
	if len(s) > limit {
		e.fail(fmt.Errorf("%w: %s is %d bytes, limit %d", ErrInvalid, name, len(s), limit))
		return
	}
	e.uvarint(uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) time(name string, t time.Time) {
	n, err := timeNanos(name, t)
	if err != nil {
		e.fail(err)
		return
	}
	e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(n))
}

func (e *encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// timeNanos converts t to Unix nanoseconds, mapping the zero time to
// zeroTimeNanos and refusing times UnixNano cannot represent.
func timeNanos(name string, t time.Time) (int64, error) {
	if t.IsZero() {
		return zeroTimeNanos, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("%w: %s %s out of range", ErrInvalid, name, t.Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) raw(dst []byte) {
	if d.err != nil {
		return
	}
	if len(d.b) < len(dst) {
		d.fail(errShort)
		return
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
}

func (d *decoder) uvarint(name string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n == 0 {
		d.fail(fmt.Errorf("%s: %w", name, errShort))
		return 0
	}
	if n < 0 {
		d.fail(fmt.Errorf("%s: bad varint", name))
		return 0
	}
	if n > 1 && d.b[n-1] == 0 {
		// A zero final byte is a padded encoding; refusing it keeps
		// every record's encoding unique.
		d.fail(fmt.Errorf("%s: non-minimal varint", name))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) length(name string, limit int) int {
	n := d.uvarint(name)
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) {
		d.fail(fmt.Errorf("%s: length %d over limit %d", name, n, limit))
		return 0
	}
	if n > uint64(len(d.b)) {
		d.fail(fmt.Errorf("%s: %w", name, errShort))
		return 0
	}
	return int(n)
}

func (d *decoder) bytes(name string, limit int) []byte {
	n := d.length(name, limit)
	if d.err != nil || n == 0 {
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b[:n])
	d.b = d.b[n:]
	return out
}

func (d *decoder) string(name string, limit int) string {
	n := d.length(name, limit)
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) time() time.Time {
	if d.err != nil {
		return time.Time{}
	}
	if len(d.b) < 8 {
		d.fail(errShort)
		return time.Time{}
	}
	n := int64(binary.BigEndian.Uint64(d.b))
	d.b = d.b[8:]
	if n == zeroTimeNanos {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// finish reports the first decoding error, or trailing bytes.
func (d *decoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return nil
}

// MarshalSegment encodes s in the index's versioned record format. It fails
// with ErrInvalid when a field is over its limit, a time is out of range or
// State is not one of the defined states.
func MarshalSegment(s Segment) ([]byte, error) {
	if !s.State.valid() {
		return nil, fmt.Errorf("store: marshal segment %x: %w: state %d", s.ID, ErrInvalid, s.State)
	}
	if s.Bytes < 0 {
		return nil, fmt.Errorf("store: marshal segment %x: %w: negative size %d", s.ID, ErrInvalid, s.Bytes)
	}
	e := encoder{buf: make([]byte, 0, 160+len(s.Camera)+len(s.Path)+len(s.Codec)+len(s.WrappedKey))}
	e.byte(segmentVersion)
	e.raw(s.ID[:])
	e.string("camera", s.Camera, MaxCameraName)
	e.string("path", s.Path, MaxPath)
	e.string("codec", s.Codec, MaxCodec)
	e.time("start", s.Start)
	e.time("end", s.End)
	e.uvarint(s.Chunks)
	e.uvarint(uint64(s.Bytes))
	e.raw(s.Chain[:])
	e.raw(s.InitHash[:])
	e.bytes("wrapped key", s.WrappedKey, MaxWrappedKey)
	e.byte(byte(s.State))
	e.uvarint(s.LogIndex)
	if e.err != nil {
		return nil, fmt.Errorf("store: marshal segment %x: %w", s.ID, e.err)
	}
	return e.buf, nil
}

// UnmarshalSegment decodes a record made by MarshalSegment. Any input, however
// hostile, yields either a segment or an error wrapping ErrCorrupt; it never
// panics and never allocates more than the field limits allow.
func UnmarshalSegment(b []byte) (Segment, error) {
	var s Segment
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != segmentVersion {
		return Segment{}, fmt.Errorf("%w: segment record version %d", ErrCorrupt, v)
	}
	d.raw(s.ID[:])
	s.Camera = d.string("camera", MaxCameraName)
	s.Path = d.string("path", MaxPath)
	s.Codec = d.string("codec", MaxCodec)
	s.Start = d.time()
	s.End = d.time()
	s.Chunks = d.uvarint("chunks")
	size := d.uvarint("bytes")
	d.raw(s.Chain[:])
	d.raw(s.InitHash[:])
	s.WrappedKey = d.bytes("wrapped key", MaxWrappedKey)
	s.State = State(d.byte())
	s.LogIndex = d.uvarint("log index")
	if err := d.finish(); err != nil {
		return Segment{}, fmt.Errorf("%w: segment record: %v", ErrCorrupt, err)
	}
	if size > math.MaxInt64 {
		return Segment{}, fmt.Errorf("%w: segment record: size %d overflows", ErrCorrupt, size)
	}
	s.Bytes = int64(size)
	if !s.State.valid() {
		return Segment{}, fmt.Errorf("%w: segment record: state %d", ErrCorrupt, s.State)
	}
	return s, nil
}

// MarshalHold encodes h in the index's versioned record format. It fails
// with ErrInvalid when a field is over its limit or a time is out of range.
func MarshalHold(h Hold) ([]byte, error) {
	e := encoder{buf: make([]byte, 0, 48+len(h.Camera)+len(h.Reason))}
	e.byte(holdVersion)
	e.uvarint(h.ID)
	e.string("camera", h.Camera, MaxCameraName)
	e.time("from", h.From)
	e.time("to", h.To)
	e.string("reason", h.Reason, MaxReason)
	e.time("created", h.Created)
	if e.err != nil {
		return nil, fmt.Errorf("store: marshal hold %d: %w", h.ID, e.err)
	}
	return e.buf, nil
}

// UnmarshalHold decodes a record made by MarshalHold. Like UnmarshalSegment
// it returns an error wrapping ErrCorrupt for any bad input and never panics.
func UnmarshalHold(b []byte) (Hold, error) {
	var h Hold
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != holdVersion {
		return Hold{}, fmt.Errorf("%w: hold record version %d", ErrCorrupt, v)
	}
	h.ID = d.uvarint("id")
	h.Camera = d.string("camera", MaxCameraName)
	h.From = d.time()
	h.To = d.time()
	h.Reason = d.string("reason", MaxReason)
	h.Created = d.time()
	if err := d.finish(); err != nil {
		return Hold{}, fmt.Errorf("%w: hold record: %v", ErrCorrupt, err)
	}
	return h, nil
}

const cameraDisabled = 1 << 0

func marshalCamera(c Camera) ([]byte, error) {
	e := encoder{buf: make([]byte, 0, 16+len(c.Name)+len(c.URL))}
	e.byte(cameraVersion)
	e.string("name", c.Name, MaxCameraName)
	e.string("url", c.URL, MaxURL)
	e.time("added", c.Added)
	var flags byte
	if c.Disabled {
		flags |= cameraDisabled
	}
	e.byte(flags)
	if e.err != nil {
		return nil, fmt.Errorf("store: marshal camera %q: %w", c.Name, e.err)
	}
	return e.buf, nil
}

func unmarshalCamera(b []byte) (Camera, error) {
	var c Camera
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != cameraVersion {
		return Camera{}, fmt.Errorf("%w: camera record version %d", ErrCorrupt, v)
	}
	c.Name = d.string("name", MaxCameraName)
	c.URL = d.string("url", MaxURL)
	c.Added = d.time()
	flags := d.byte()
	if err := d.finish(); err != nil {
		return Camera{}, fmt.Errorf("%w: camera record: %v", ErrCorrupt, err)
	}
	if flags&^cameraDisabled != 0 {
		return Camera{}, fmt.Errorf("%w: camera record: unknown flags %#x", ErrCorrupt, flags)
	}
	c.Disabled = flags&cameraDisabled != 0
	return c, nil
}
