package vault

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
)

// RepairResult reports what [Repair] kept.
type RepairResult struct {
	// Chunks is the number of authentic chunks kept (init and media), the
	// trailer excluded.
	Chunks uint64
	// TruncatedBytes is how many bytes were cut from the end of the file.
	TruncatedBytes int64
	// HadTrailer is set when the segment was already properly closed.
	HadTrailer bool
	// Chain is the plaintext hash chain head over the kept chunks.
	Chain [32]byte
	// End is the file size after repair.
	End int64
}

// Repair closes a segment left open by a crash or by [Writer.Abandon]. It
// authenticates the chunks in order, cuts the file after the last authentic
// one (dropping a torn partial frame and anything that fails to
// authenticate), appends the trailer if it is missing, and fsyncs. A closed,
// intact segment is left unchanged. A segment whose header is torn or
// malformed (a crash right after creation) returns an error wrapping
// [ErrFormat], and the caller may delete it. If the DEK cannot be unwrapped
// the file is not touched.
//
// Repair trusts that a chunk failing authentication is a torn tail; it is
// meant for segments the index marks open, not for checking arbitrary files.
func Repair(path string, u Unwrapper) (res RepairResult, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return RepairResult{}, fmt.Errorf("vault: repair: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("vault: repair %s: close: %w", path, cerr))
		}
	}()
	size, h, hdr, err := readHeader(f)
	if err != nil {
		return RepairResult{}, fmt.Errorf("vault: repair %s: %w", path, err)
	}
	dek, err := unwrapDEK(&h, u)
	if err != nil {
		return RepairResult{}, fmt.Errorf("vault: repair %s: %w", path, err)
	}
	aead, err := newGCM(dek)
	clear(dek)
	if err != nil {
		return RepairResult{}, fmt.Errorf("vault: repair %s: %w", path, err)
	}
	hdrHash := sha256.Sum256(hdr)
	off := int64(len(hdr))
	var buf []byte
	for {
		_, info, b, err := openChunk(f, size, off, res.Chunks, &h, &hdrHash, aead, buf)
		buf = b
		if err != nil {
			if errors.Is(err, errEnd) || errors.Is(err, ErrAuth) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrFormat) {
				break
			}
			return RepairResult{}, fmt.Errorf("vault: repair %s chunk %d: %w", path, res.Chunks, err)
		}
		off += info.Size
		if info.Final {
			res.HadTrailer = true
			break
		}
		res.Chain = chain(res.Chain, res.Chunks, info.Hash)
		res.Chunks++
	}
	clear(buf)
	res.TruncatedBytes = size - off
	if res.TruncatedBytes > 0 {
		if err := f.Truncate(off); err != nil {
			return RepairResult{}, fmt.Errorf("vault: repair %s: truncate: %w", path, err)
		}
	}
	if !res.HadTrailer {
		frame := sealFrame(aead, h.version(), &hdrHash, nil, nil, res.Chunks, flagFinal)
		if _, err := f.WriteAt(frame, off); err != nil {
			return RepairResult{}, fmt.Errorf("vault: repair %s: write trailer: %w", path, err)
		}
		off += int64(len(frame))
	}
	if res.TruncatedBytes > 0 || !res.HadTrailer {
		if err := f.Sync(); err != nil {
			return RepairResult{}, fmt.Errorf("vault: repair %s: fsync: %w", path, err)
		}
	}
	res.End = off
	return res, nil
}
