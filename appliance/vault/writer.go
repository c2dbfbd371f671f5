package vault

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Writer appends sealed chunks to a new segment file. It is not safe for
// concurrent use; one recording pipeline owns it.
type Writer struct {
	path    string
	f       *os.File
	h       Header
	hdrHash [32]byte
	dek     []byte
	aead    cipher.AEAD

	n     uint64 // chunks written, trailer excluded
	chain [32]byte
	size  int64
	// err is sticky: after a failed write the file may hold a torn frame, so
	// nothing more may be appended and Close leaves repair to Repair.
	err error
	// burned is the SHA-256 of a frame whose write failed and was rolled
	// back. Its bytes may have reached the disk, so index n may be sealed
	// again only with the same bytes (a retry), or as the trailer, whose
	// nonce carries the final flag (format version 2) and so differs: other
	// data under the same nonce would reuse the GCM keystream.
	burned *[32]byte
	closed bool
}

// Create makes a new segment file at path for header h and returns a Writer
// for its chunks. It draws a fresh DEK (and SegmentID, when h's is zero) from
// rnd, wraps the DEK to the vault public key to, and sets h.Keys, which must
// be empty on entry. Missing parent directories are created with mode 0700.
// The file is created exclusively (an existing file is an error), and the
// header, the file and its directory are fsynced before Create returns.
func Create(path string, h Header, to *ecdh.PublicKey, rnd io.Reader) (w *Writer, err error) {
	if len(h.Keys) != 0 {
		return nil, fmt.Errorf("vault: create %s: header keys must be empty, Create wraps the DEK", path)
	}
	if h.SegmentID == ([16]byte{}) {
		if _, err := io.ReadFull(rnd, h.SegmentID[:]); err != nil {
			return nil, fmt.Errorf("vault: create %s: segment id: %w", path, err)
		}
	}
	dek := make([]byte, dekSize)
	if _, err := io.ReadFull(rnd, dek); err != nil {
		return nil, fmt.Errorf("vault: create %s: DEK: %w", path, err)
	}
	defer func() {
		if err != nil {
			clear(dek)
		}
	}()
	blob, err := wrapDEK(dek, to, rnd)
	if err != nil {
		return nil, fmt.Errorf("vault: create %s: wrap DEK: %w", path, err)
	}
	h.Keys = []WrappedKey{{Type: KeyECIESP256, Data: blob}}
	h.Start = h.Start.UTC()
	h.Version = FormatVersion
	hdr, err := marshalHeader(h)
	if err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", path, err)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := mkdirAllSync(dir); err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vault: create: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close(), os.Remove(path))
		}
	}()
	if _, err := f.Write(hdr); err != nil {
		return nil, fmt.Errorf("vault: create %s: write header: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("vault: create %s: fsync: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", path, err)
	}
	return &Writer{
		path:    path,
		f:       f,
		h:       h,
		hdrHash: sha256.Sum256(hdr),
		dek:     dek,
		aead:    aead,
		size:    int64(len(hdr)),
	}, nil
}

// mkdirAllSync creates dir and its missing parents with mode 0700, fsyncing
// each parent after a child is created in it.
func mkdirAllSync(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("mkdir: %w", err)
		}
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	if err := d.Sync(); err != nil {
		return errors.Join(fmt.Errorf("fsync dir %s: %w", dir, err), d.Close())
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("close dir %s: %w", dir, err)
	}
	return nil
}

// Header returns the segment header, with SegmentID and Keys filled in.
func (w *Writer) Header() Header { return cloneHeader(w.h) }

// Chain returns the head of the plaintext hash chain over the chunks appended
// so far: chain_0 = SHA-256(hash_0), chain_i = SHA-256(chain_{i-1} || hash_i),
// where hash_i is the SHA-256 of chunk i's plaintext. The trailer is not part
// of the chain. It is all zeros before the first chunk.
func (w *Writer) Chain() [32]byte { return w.chain }

// Chunks returns the number of chunks appended, the trailer excluded.
func (w *Writer) Chunks() uint64 { return w.n }

// Size returns the number of bytes written to the file.
func (w *Writer) Size() int64 { return w.size }

// sealFrame encodes one chunk frame (length, flags, ciphertext and tag) into
// dst[:0] and returns it.
// framePool holds frame buffers for writeFrame.
var framePool = sync.Pool{New: func() any { return new([]byte) }}

func sealFrame(aead cipher.AEAD, version uint16, hdrHash *[32]byte, dst, plain []byte, idx uint64, flags byte) []byte {
	need := frameHeader + len(plain) + gcmTag
	if cap(dst) < need {
		dst = make([]byte, 0, need)
	}
	dst = dst[:frameHeader]
	binary.BigEndian.PutUint32(dst[0:4], uint32(len(plain)+gcmTag))
	dst[4] = flags
	nonce := chunkNonce(version, idx, flags)
	aad := chunkAAD(hdrHash, idx, flags)
	return aead.Seal(dst, nonce[:], plain, aad[:])
}

// Append seals plain as the next chunk, writes it and waits for it to reach
// stable storage (fdatasync) before returning. The first chunk must be the
// init segment whose SHA-256 is Header.InitHash. A failed write is rolled back
// (the partial frame truncated away) and the Writer stays usable; if the roll
// back or a sync fails, the Writer accepts nothing more and Close leaves the
// file for [Repair]. After a rolled-back write the same chunk may be retried
// with the same bytes, or the segment closed; other content is refused, since
// it would be sealed under the nonce of bytes that may be on the disk.
func (w *Writer) Append(plain []byte) (ChunkInfo, error) {
	info, err := w.Write(plain)
	if err != nil {
		return info, err
	}
	if err := w.Sync(); err != nil {
		return ChunkInfo{}, err
	}
	return info, nil
}

// Sync waits until every chunk written so far is on stable storage
// (fdatasync). A failed sync makes the Writer accept nothing more: what
// reached the disk is unknown, and Close leaves the file for [Repair].
func (w *Writer) Sync() error {
	if w.closed {
		return fmt.Errorf("vault: sync %s: writer closed", w.path)
	}
	if w.err != nil {
		return w.err
	}
	if err := unix.Fdatasync(int(w.f.Fd())); err != nil {
		w.err = fmt.Errorf("vault: sync %s after chunk %d: fdatasync: %w", w.path, w.n, err)
		return w.err
	}
	return nil
}

// Write is Append without the wait for stable storage: the chunk is sealed
// and written into the page cache, and the caller calls Sync. It lets a
// recorder give its plaintext buffer back before the slow part, the sync, so
// that buffers are not held by every recorder waiting on the disk at once.
func (w *Writer) Write(plain []byte) (ChunkInfo, error) {
	if w.closed {
		return ChunkInfo{}, fmt.Errorf("vault: append %s: writer closed", w.path)
	}
	if w.err != nil {
		return ChunkInfo{}, w.err
	}
	if len(plain) > MaxChunkSize {
		return ChunkInfo{}, fmt.Errorf("vault: append %s: chunk of %d bytes exceeds %d", w.path, len(plain), MaxChunkSize)
	}
	sum := sha256.Sum256(plain)
	if w.n == 0 && !equal32(sum, w.h.InitHash) {
		return ChunkInfo{}, fmt.Errorf("vault: append %s: chunk 0 does not match the header's init segment hash", w.path)
	}
	info, err := w.writeFrame(plain, 0)
	if err != nil {
		return ChunkInfo{}, err
	}
	info.Hash = sum
	w.chain = chain(w.chain, w.n, sum)
	w.n++
	return info, nil
}

func (w *Writer) writeFrame(plain []byte, flags byte) (ChunkInfo, error) {
	idx := w.n
	// Frames are sealed into buffers shared by every writer: a recorder seals about one chunk a second, so
	// a few buffers serve many cameras instead of one each.
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp) // before any sync: see Write
	frame := sealFrame(w.aead, w.h.version(), &w.hdrHash, (*bp)[:0], plain, idx, flags)
	*bp = frame
	if w.burned != nil && sha256.Sum256(frame) != *w.burned && (flags&flagFinal == 0 || len(plain) != 0) {
		w.err = fmt.Errorf("vault: append %s chunk %d: a failed write of other content used this chunk's nonce; close the segment and start a new one", w.path, idx)
		return ChunkInfo{}, w.err
	}
	if _, err := w.f.Write(frame); err != nil {
		werr := fmt.Errorf("vault: append %s chunk %d: write: %w", w.path, idx, err)
		// A failed write (a full disk, most often) may have left part of the frame behind. Cut it off and
		// the segment stays whole, so the caller may go on or close it; only if that fails is the error sticky.
		if rerr := w.rollback(); rerr != nil {
			w.err = errors.Join(werr, rerr)
			return ChunkInfo{}, w.err
		}
		sum := sha256.Sum256(frame)
		w.burned = &sum
		return ChunkInfo{}, werr
	}
	info := ChunkInfo{
		Index:  idx,
		Offset: w.size,
		Size:   int64(len(frame)),
		Plain:  len(plain),
		Final:  flags&flagFinal != 0,
	}
	w.size += int64(len(frame))
	w.burned = nil
	return info, nil
}

// rollback truncates the file to the end of the last complete frame and syncs that.
func (w *Writer) rollback() error {
	if err := w.f.Truncate(w.size); err != nil {
		return fmt.Errorf("vault: roll back %s: truncate: %w", w.path, err)
	}
	if _, err := w.f.Seek(w.size, io.SeekStart); err != nil {
		return fmt.Errorf("vault: roll back %s: seek: %w", w.path, err)
	}
	if err := unix.Fdatasync(int(w.f.Fd())); err != nil {
		return fmt.Errorf("vault: roll back %s: fdatasync: %w", w.path, err)
	}
	return nil
}

// Close appends the final trailer chunk (empty plaintext, final flag), fsyncs
// and closes the file, and zeroes the DEK. If an earlier write failed, Close
// only closes the file and returns that error; the segment then needs
// [Repair].
func (w *Writer) Close() error {
	if w.closed {
		return fmt.Errorf("vault: close %s: already closed", w.path)
	}
	w.closed = true
	defer w.wipe()
	if w.err != nil {
		return errors.Join(w.err, w.f.Close())
	}
	if _, err := w.writeFrame(nil, flagFinal); err != nil {
		return errors.Join(err, w.f.Close())
	}
	if err := w.f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("vault: close %s: fsync: %w", w.path, err), w.f.Close())
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("vault: close %s: %w", w.path, err)
	}
	return nil
}

// Abandon closes the file without a trailer, as a crash would leave it, and
// zeroes the DEK. The segment reads as truncated until [Repair] closes it.
func (w *Writer) Abandon() error {
	if w.closed {
		return fmt.Errorf("vault: abandon %s: already closed", w.path)
	}
	w.closed = true
	defer w.wipe()
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("vault: abandon %s: %w", w.path, err)
	}
	return nil
}

func (w *Writer) wipe() {
	clear(w.dek)
	w.aead = nil
}
