package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Limits of the format. A parser rejects anything larger before allocating.
const (
	// MaxHeaderSize bounds the encoded header, magic included.
	MaxHeaderSize = 64 << 10
	// MaxCameraLen bounds the camera name in bytes.
	MaxCameraLen = 255
	// MaxCodecLen bounds the codec string in bytes.
	MaxCodecLen = 255
	// MaxChunkSize bounds the plaintext of one chunk.
	MaxChunkSize = 64 << 20
	// MaxKeys bounds the number of wrapped keys in a header.
	MaxKeys = 16
	// MaxKeyData bounds the blob of one wrapped key.
	MaxKeyData = 4096
)

// Wrapped key types.
const (
	// KeyECIESP256 is the DEK wrapped by ECIES to the vault key (P-256 ECDH,
	// HKDF-SHA256, AES-256-GCM). Every segment written by [Create] has one.
	KeyECIESP256 uint8 = 1
	// KeyAgeRecovery is reserved for the DEK wrapped to an owner's age X25519
	// recovery recipient. It is not implemented: readers ignore it.
	KeyAgeRecovery uint8 = 2
)

// FormatVersion is the segment format version this package writes. It reads every version from
// minFormatVersion on: version 1 sealed a trailer under the nonce of its chunk index, the nonce of a data
// chunk at that index whose write failed and was rolled back (its bytes may be on the device); version 2
// puts the flags in the nonce, so a trailer never shares a nonce with a data chunk. Nothing else differs.
const FormatVersion = 2

const minFormatVersion = 1

var magic = [6]byte{'N', 'V', 'R', 'S', 'E', 'G'}

const (
	// fixedPrefix is magic, version and header length.
	fixedPrefix = len(magic) + 2 + 4
	// frameHeader is a chunk's length and flags.
	frameHeader = 4 + 1
	gcmTag      = 16
	maxFrameLen = MaxChunkSize + gcmTag
	flagFinal   = 0x01
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrAuth means bytes failed authentication: a chunk was altered,
	// reordered, taken from another segment, or the header was changed, or
	// the wrapped DEK could not be unwrapped with the given key.
	ErrAuth = errors.New("authentication failed")
	// ErrTruncated means the file ends before the final trailer chunk: the
	// segment was not closed (a crash) or was cut short.
	ErrTruncated = errors.New("truncated")
	// ErrFormat means the bytes are not a well-formed segment: bad magic,
	// unknown version, a length out of bounds, reserved bits set, data after
	// the trailer, or a header torn by a crash right after creation.
	ErrFormat = errors.New("malformed segment")
)

// ChunkError reports the failure of one chunk of a segment.
type ChunkError struct {
	Path  string
	Index uint64
	Err   error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("segment %s chunk %d: %v", e.Path, e.Index, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

// Header is the plaintext header of a segment. It is not secret, but it is
// authenticated: every chunk's tag covers a hash of the encoded header.
type Header struct {
	// SegmentID identifies the segment; [Create] fills it when zero.
	SegmentID [16]byte
	// Camera is the camera name, at most MaxCameraLen bytes of UTF-8.
	Camera string
	// Start is the wall-clock start of the segment, stored as Unix
	// nanoseconds; it is returned in UTC.
	Start time.Time
	// Codec is the codec string (for example "avc1.64001f"), printable ASCII.
	Codec string
	// InitHash is the SHA-256 of chunk 0's plaintext, the fMP4 init segment.
	InitHash [32]byte
	// Keys hold the segment's DEK, wrapped; [Create] fills them.
	Keys []WrappedKey
	// Version is the format version of the file, set when a header is read. [Create] ignores it and
	// writes FormatVersion.
	Version uint16
}

// version is the format version h was written in: FormatVersion for a header not read from a file.
func (h Header) version() uint16 {
	if h.Version == 0 {
		return FormatVersion
	}
	return h.Version
}

// WrappedKey is the DEK wrapped for one recipient. Type is one of
// KeyECIESP256 or KeyAgeRecovery; Data is opaque to callers.
type WrappedKey struct {
	Type uint8
	Data []byte
}

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

func validateHeader(h *Header) error {
	switch {
	case len(h.Camera) == 0 || len(h.Camera) > MaxCameraLen:
		return formatErr("camera name of %d bytes (want 1..%d)", len(h.Camera), MaxCameraLen)
	case !utf8.ValidString(h.Camera):
		return formatErr("camera name is not UTF-8")
	case len(h.Codec) > MaxCodecLen:
		return formatErr("codec of %d bytes (max %d)", len(h.Codec), MaxCodecLen)
	case len(h.Keys) == 0 || len(h.Keys) > MaxKeys:
		return formatErr("%d wrapped keys (want 1..%d)", len(h.Keys), MaxKeys)
	}
	for i := 0; i < len(h.Codec); i++ {
		if c := h.Codec[i]; c < 0x20 || c > 0x7e {
			return formatErr("codec has byte 0x%02x", c)
		}
	}
	for i, k := range h.Keys {
		if k.Type == 0 {
			return formatErr("wrapped key %d has type 0", i)
		}
		if len(k.Data) == 0 || len(k.Data) > MaxKeyData {
			return formatErr("wrapped key %d of %d bytes (want 1..%d)", i, len(k.Data), MaxKeyData)
		}
	}
	return nil
}

// marshalHeader encodes h. The encoding is canonical: parseHeader accepts
// exactly what marshalHeader produces.
func marshalHeader(h Header) ([]byte, error) {
	if err := validateHeader(&h); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 256)
	b = append(b, magic[:]...)
	b = binary.BigEndian.AppendUint16(b, h.version())
	b = binary.BigEndian.AppendUint32(b, 0) // length, patched below
	b = append(b, h.SegmentID[:]...)
	b = append(b, byte(len(h.Camera)))
	b = append(b, h.Camera...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Start.UnixNano()))
	b = append(b, byte(len(h.Codec)))
	b = append(b, h.Codec...)
	b = append(b, h.InitHash[:]...)
	b = append(b, byte(len(h.Keys)))
	for _, k := range h.Keys {
		b = append(b, k.Type)
		b = binary.BigEndian.AppendUint16(b, uint16(len(k.Data)))
		b = append(b, k.Data...)
	}
	if len(b) > MaxHeaderSize {
		return nil, formatErr("header of %d bytes (max %d)", len(b), MaxHeaderSize)
	}
	binary.BigEndian.PutUint32(b[8:12], uint32(len(b)))
	return b, nil
}

// headerLen checks the fixed prefix of a header and returns the total header
// length it declares.
func headerLen(prefix []byte) (int, error) {
	if len(prefix) < fixedPrefix {
		return 0, formatErr("header prefix of %d bytes", len(prefix))
	}
	if !bytes.Equal(prefix[:len(magic)], magic[:]) {
		return 0, formatErr("bad magic")
	}
	if v := binary.BigEndian.Uint16(prefix[6:8]); v < minFormatVersion || v > FormatVersion {
		return 0, formatErr("unsupported format version %d", v)
	}
	n := binary.BigEndian.Uint32(prefix[8:12])
	if n < uint32(fixedPrefix) || n > MaxHeaderSize {
		return 0, formatErr("header length %d out of range", n)
	}
	return int(n), nil
}

// cursor reads a header without ever indexing past its end.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) take(n int) []byte {
	if c.err != nil {
		return nil
	}
	if n < 0 || n > len(c.b) {
		c.err = formatErr("header ends early")
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) u8() uint8 {
	if v := c.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (c *cursor) u16() uint16 {
	if v := c.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (c *cursor) u64() uint64 {
	if v := c.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// parseHeader decodes a complete encoded header (exactly the declared
// length). Returned slices do not alias b.
func parseHeader(b []byte) (Header, error) {
	n, err := headerLen(b)
	if err != nil {
		return Header{}, err
	}
	if n != len(b) {
		return Header{}, formatErr("header length %d, have %d bytes", n, len(b))
	}
	c := &cursor{b: b[fixedPrefix:]}
	var h Header
	h.Version = binary.BigEndian.Uint16(b[6:8])
	copy(h.SegmentID[:], c.take(16))
	h.Camera = string(c.take(int(c.u8())))
	h.Start = time.Unix(0, int64(c.u64())).UTC()
	h.Codec = string(c.take(int(c.u8())))
	copy(h.InitHash[:], c.take(32))
	nk := int(c.u8())
	if c.err == nil && (nk == 0 || nk > MaxKeys) {
		return Header{}, formatErr("%d wrapped keys", nk)
	}
	for i := 0; i < nk && c.err == nil; i++ {
		t := c.u8()
		d := c.take(int(c.u16()))
		h.Keys = append(h.Keys, WrappedKey{Type: t, Data: bytes.Clone(d)})
	}
	if c.err != nil {
		return Header{}, c.err
	}
	if len(c.b) != 0 {
		return Header{}, formatErr("%d bytes after the last wrapped key", len(c.b))
	}
	if err := validateHeader(&h); err != nil {
		return Header{}, err
	}
	return h, nil
}

func cloneHeader(h Header) Header {
	keys := make([]WrappedKey, len(h.Keys))
	for i, k := range h.Keys {
		keys[i] = WrappedKey{Type: k.Type, Data: bytes.Clone(k.Data)}
	}
	h.Keys = keys
	return h
}

// chunkNonce is the chunk's nonce: in version 2, three zero bytes, the frame's flags and the 64-bit
// big-endian chunk index; in version 1, four zero bytes and the index (the flags left out).
func chunkNonce(version uint16, idx uint64, flags byte) [12]byte {
	var n [12]byte
	if version >= 2 {
		n[3] = flags
	}
	binary.BigEndian.PutUint64(n[4:], idx)
	return n
}

// chunkAAD binds a chunk to its segment header, its position and its flags.
func chunkAAD(hdrHash *[32]byte, idx uint64, flags byte) [41]byte {
	var a [41]byte
	copy(a[:32], hdrHash[:])
	binary.BigEndian.PutUint64(a[32:40], idx)
	a[40] = flags
	return a
}

// chain advances the plaintext hash chain by one chunk hash.
func chain(prev [32]byte, n uint64, h [32]byte) [32]byte {
	if n == 0 {
		return sha256.Sum256(h[:])
	}
	var buf [64]byte
	copy(buf[:32], prev[:])
	copy(buf[32:], h[:])
	return sha256.Sum256(buf[:])
}
