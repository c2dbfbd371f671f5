package vault

import (
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// ChunkInfo describes one chunk of a segment.
type ChunkInfo struct {
	// Index is the chunk's position; chunk 0 is the init segment.
	Index uint64
	// Offset is where the chunk's frame starts in the file, and Size its
	// length on disk including the length and flags framing.
	Offset, Size int64
	// Plain is the plaintext length.
	Plain int
	// Hash is the SHA-256 of the plaintext.
	Hash [32]byte
	// Final is set on the trailer chunk that closes a segment.
	Final bool
}

// Reader authenticates and decrypts the chunks of a segment in order. It is
// not safe for concurrent use.
type Reader struct {
	path    string
	f       *os.File
	size    int64
	h       Header
	hdrHash [32]byte
	aead    cipher.AEAD

	off   int64
	n     uint64
	chain [32]byte
	buf   []byte
	done  bool
	err   error
}

// Open opens the segment at path for reading, unwrapping its DEK with u (the
// TPM's ECDH through the type-1 wrapped key).
func Open(path string, u Unwrapper) (*Reader, error) {
	return OpenCached(path, u, nil)
}

// OpenCached is [Open] with a [KeyCache]: the DEK is taken from c when it
// holds the segment's key, and stored in it after an unwrap. A nil c
// disables caching.
func OpenCached(path string, u Unwrapper, c *KeyCache) (r *Reader, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vault: open: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close())
		}
	}()
	size, h, hdr, err := readHeader(f)
	if err != nil {
		return nil, fmt.Errorf("vault: open %s: %w", path, err)
	}
	dek, err := dekFor(&h, u, c)
	if err != nil {
		return nil, fmt.Errorf("vault: open %s: %w", path, err)
	}
	aead, err := newGCM(dek)
	clear(dek)
	if err != nil {
		return nil, fmt.Errorf("vault: open %s: %w", path, err)
	}
	return &Reader{
		path:    path,
		f:       f,
		size:    size,
		h:       h,
		hdrHash: sha256.Sum256(hdr),
		aead:    aead,
		off:     int64(len(hdr)),
	}, nil
}

// readHeader reads and parses the header of f and returns the file size, the
// header and its encoding.
func readHeader(f *os.File) (int64, Header, []byte, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, Header{}, nil, fmt.Errorf("stat: %w", err)
	}
	size := st.Size()
	if size < int64(fixedPrefix) {
		return 0, Header{}, nil, formatErr("header torn: file of %d bytes", size)
	}
	var prefix [fixedPrefix]byte
	if _, err := f.ReadAt(prefix[:], 0); err != nil {
		return 0, Header{}, nil, fmt.Errorf("read header: %w", err)
	}
	n, err := headerLen(prefix[:])
	if err != nil {
		return 0, Header{}, nil, err
	}
	if int64(n) > size {
		return 0, Header{}, nil, formatErr("header torn: %d of %d bytes", size, n)
	}
	hdr := make([]byte, n)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return 0, Header{}, nil, fmt.Errorf("read header: %w", err)
	}
	h, err := parseHeader(hdr)
	if err != nil {
		return 0, Header{}, nil, err
	}
	return size, h, hdr, nil
}

// errEnd marks a file that ends exactly on a frame boundary.
var errEnd = errors.New("end of file")

// readFrame reads the frame at off, checking every length against bounds and
// against the file size before allocating. buf is reused when large enough.
func readFrame(f *os.File, size, off int64, buf []byte) (flags byte, payload []byte, err error) {
	left := size - off
	if left == 0 {
		return 0, buf, errEnd
	}
	if left < frameHeader {
		return 0, buf, fmt.Errorf("%w: torn frame header", ErrTruncated)
	}
	var fh [frameHeader]byte
	if _, err := f.ReadAt(fh[:], off); err != nil {
		return 0, buf, fmt.Errorf("read frame: %w", err)
	}
	n := int64(binary.BigEndian.Uint32(fh[:4]))
	flags = fh[4]
	if n < gcmTag || n > maxFrameLen {
		return 0, buf, formatErr("frame length %d out of range", n)
	}
	if flags&^flagFinal != 0 {
		return 0, buf, formatErr("reserved flags 0x%02x", flags)
	}
	if n > left-frameHeader {
		return 0, buf, fmt.Errorf("%w: frame of %d bytes, %d left", ErrTruncated, n, left-frameHeader)
	}
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := f.ReadAt(buf, off+frameHeader); err != nil {
		return 0, buf, fmt.Errorf("read frame: %w", err)
	}
	return flags, buf, nil
}

// openChunk reads, authenticates and decrypts chunk idx at off. A trailer
// must be empty; chunk 0 must match the header's init hash. buf is scratch.
func openChunk(f *os.File, size, off int64, idx uint64, h *Header, hdrHash *[32]byte, aead cipher.AEAD, buf []byte) ([]byte, ChunkInfo, []byte, error) {
	flags, ct, err := readFrame(f, size, off, buf)
	if err != nil {
		return nil, ChunkInfo{}, ct, err
	}
	nonce := chunkNonce(h.version(), idx, flags)
	aad := chunkAAD(hdrHash, idx, flags)
	plain, err := aead.Open(make([]byte, 0, len(ct)-gcmTag), nonce[:], ct, aad[:])
	if err != nil {
		return nil, ChunkInfo{}, ct, ErrAuth
	}
	info := ChunkInfo{
		Index:  idx,
		Offset: off,
		Size:   frameHeader + int64(len(ct)),
		Plain:  len(plain),
		Hash:   sha256.Sum256(plain),
		Final:  flags&flagFinal != 0,
	}
	if info.Final && len(plain) != 0 {
		return nil, ChunkInfo{}, ct, formatErr("trailer holds %d bytes", len(plain))
	}
	if idx == 0 && !info.Final && !equal32(info.Hash, h.InitHash) {
		return nil, ChunkInfo{}, ct, fmt.Errorf("%w: init segment hash mismatch", ErrAuth)
	}
	return plain, info, ct, nil
}

// Header returns the segment header.
func (r *Reader) Header() Header { return cloneHeader(r.h) }

// Next returns the next chunk's plaintext, starting with chunk 0 (the init
// segment). After the final trailer it returns io.EOF; the trailer itself is
// not returned. A file that ends without a trailer yields a *ChunkError
// wrapping [ErrTruncated]; a chunk that fails authentication one wrapping
// [ErrAuth]; bad framing or bytes after the trailer one wrapping [ErrFormat].
// Errors are sticky.
func (r *Reader) Next() ([]byte, ChunkInfo, error) {
	if r.err != nil {
		return nil, ChunkInfo{}, r.err
	}
	if r.done {
		return nil, ChunkInfo{}, io.EOF
	}
	plain, info, buf, err := openChunk(r.f, r.size, r.off, r.n, &r.h, &r.hdrHash, r.aead, r.buf)
	r.buf = buf
	if errors.Is(err, errEnd) {
		err = fmt.Errorf("%w: no trailer", ErrTruncated)
	}
	if err != nil {
		r.err = &ChunkError{Path: r.path, Index: r.n, Err: err}
		return nil, ChunkInfo{}, r.err
	}
	r.off += info.Size
	if info.Final {
		if r.off != r.size {
			r.err = &ChunkError{Path: r.path, Index: r.n, Err: formatErr("%d bytes after the trailer", r.size-r.off)}
			return nil, ChunkInfo{}, r.err
		}
		r.done = true
		return nil, ChunkInfo{}, io.EOF
	}
	r.chain = chain(r.chain, r.n, info.Hash)
	r.n++
	return plain, info, nil
}

// Chain returns the plaintext hash chain head over the chunks returned so
// far (see [Writer.Chain]).
func (r *Reader) Chain() [32]byte { return r.chain }

// Close closes the file.
func (r *Reader) Close() error {
	r.aead = nil
	clear(r.buf)
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("vault: close %s: %w", r.path, err)
	}
	return nil
}

// ScanResult is the structure of a segment file as seen without its key.
type ScanResult struct {
	// Chunks counts the complete frames before the trailer (or before the
	// end), the trailer excluded. They are not authenticated.
	Chunks uint64
	// Final is set when a frame with the final flag closes the walk.
	Final bool
	// Size is the file size.
	Size int64
	// TornBytes counts bytes after the last well-formed frame: a partial
	// frame left by a crash, or anything after the trailer.
	TornBytes int64
}

// Scan reads the header of the segment at path and walks its chunk framing
// without a key: nothing is decrypted or authenticated, so the result is a
// structural summary, not proof. A torn or malformed header is [ErrFormat].
func Scan(path string) (Header, ScanResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, ScanResult{}, fmt.Errorf("vault: scan: %w", err)
	}
	h, res, err := scanFile(f)
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return Header{}, ScanResult{}, fmt.Errorf("vault: scan %s: %w", path, err)
	}
	return h, res, nil
}

func scanFile(f *os.File) (Header, ScanResult, error) {
	size, h, hdr, err := readHeader(f)
	if err != nil {
		return Header{}, ScanResult{}, err
	}
	res := ScanResult{Size: size}
	off := int64(len(hdr))
	for off < size {
		if size-off < frameHeader {
			break
		}
		var fh [frameHeader]byte
		if _, err := f.ReadAt(fh[:], off); err != nil {
			return Header{}, ScanResult{}, fmt.Errorf("read frame: %w", err)
		}
		n := int64(binary.BigEndian.Uint32(fh[:4]))
		flags := fh[4]
		if n < gcmTag || n > maxFrameLen || flags&^flagFinal != 0 || n > size-off-frameHeader {
			break
		}
		off += frameHeader + n
		if flags&flagFinal != 0 {
			res.Final = true
			break
		}
		res.Chunks++
	}
	res.TornBytes = size - off
	return h, res, nil
}
