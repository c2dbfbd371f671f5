package evidence

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// Bounds on an export zip.
const (
	maxZipEntries  = 4 + MaxExportCameras
	maxCentralDir  = 1 << 20
	maxSmallEntry  = 64 << 10 // certificate, signature, checkpoint
	eocdLen        = 22
	zip64LocLen    = 20
	zip64EOCDLen   = 56
	maxEOCDComment = 0xffff
)

// entryLimits is the largest uncompressed size allowed per entry name; no other name is allowed but
// the video entries (isVideoEntry).
var entryLimits = map[string]uint64{
	EntryManifest:   maxManifest,
	EntrySignature:  maxSmallEntry,
	EntryCert:       maxSmallEntry,
	EntryCheckpoint: maxSmallEntry,
}

// maxVideoEntry bounds a video entry's declared size; it is also bounded by the archive's own size, as it
// must be stored uncompressed.
const maxVideoEntry = 1 << 42

// isVideoEntry reports whether name is a video entry's name: video.mp4 (format 1) or video-<camera>.mp4
// (format 2) with a valid camera name.
func isVideoEntry(name string) bool {
	if name == EntryVideo {
		return true
	}
	cam, ok := strings.CutPrefix(name, "video-")
	if !ok {
		return false
	}
	cam, ok = strings.CutSuffix(cam, ".mp4")
	return ok && ValidCameraName(cam)
}

func limitOf(name string) (uint64, bool) {
	if isVideoEntry(name) {
		return maxVideoEntry, true
	}
	l, ok := entryLimits[name]
	return l, ok
}

// checkDirectory reads the zip's end-of-central-directory record (and its zip64 form) and refuses an
// archive whose directory would cost more than the bounds to read, before archive/zip reads it.
func checkDirectory(r io.ReaderAt, size int64) error {
	if size < eocdLen {
		return fmt.Errorf("%w: %d bytes is too short for a zip archive", ErrFormat, size)
	}
	tail := min(size, eocdLen+maxEOCDComment)
	buf := make([]byte, tail)
	if _, err := r.ReadAt(buf, size-tail); err != nil && err != io.EOF {
		return fmt.Errorf("read zip directory: %w", err)
	}
	i := bytes.LastIndex(buf, []byte("PK\x05\x06"))
	if i < 0 || len(buf)-i < eocdLen {
		return fmt.Errorf("%w: not a zip archive (no end of central directory)", ErrFormat)
	}
	e := buf[i:]
	entries := uint64(binary.LittleEndian.Uint16(e[10:12]))
	dirSize := uint64(binary.LittleEndian.Uint32(e[12:16]))
	dirOff := uint64(binary.LittleEndian.Uint32(e[16:20]))
	if entries == 0xffff || dirSize == 0xffffffff || dirOff == 0xffffffff {
		pos := size - tail + int64(i) - zip64LocLen
		if pos < 0 {
			return fmt.Errorf("%w: zip64 archive without a locator", ErrFormat)
		}
		var loc [zip64LocLen]byte
		if _, err := r.ReadAt(loc[:], pos); err != nil {
			return fmt.Errorf("read zip64 locator: %w", err)
		}
		if string(loc[:4]) != "PK\x06\x07" {
			return fmt.Errorf("%w: zip64 archive without a locator", ErrFormat)
		}
		off := binary.LittleEndian.Uint64(loc[8:16])
		if off > uint64(size)-zip64EOCDLen {
			return fmt.Errorf("%w: zip64 directory record out of the file", ErrFormat)
		}
		var z [zip64EOCDLen]byte
		if _, err := r.ReadAt(z[:], int64(off)); err != nil {
			return fmt.Errorf("read zip64 directory record: %w", err)
		}
		if string(z[:4]) != "PK\x06\x06" {
			return fmt.Errorf("%w: bad zip64 directory record", ErrFormat)
		}
		entries = binary.LittleEndian.Uint64(z[32:40])
		dirSize = binary.LittleEndian.Uint64(z[40:48])
	}
	if entries > maxZipEntries {
		return fmt.Errorf("%w: the archive has %d entries; an evidence export has at most %d", ErrFormat, entries, maxZipEntries)
	}
	if dirSize > maxCentralDir {
		return fmt.Errorf("%w: zip directory of %d bytes", ErrFormat, dirSize)
	}
	return nil
}

// exportZip is an opened export archive whose entries passed the name and size checks.
type exportZip struct {
	files  map[string]*zip.File
	videos []string // the video entries, in archive order
}

// openExportZip opens an export archive, refusing anything but the four small entries and one or more
// video entries, duplicates, oversized entries and a compressed video (whose size could not be bounded by
// the archive's). Which video entries belong is the manifest's to say; the verifier checks it.
func openExportZip(r io.ReaderAt, size int64) (*exportZip, error) {
	if err := checkDirectory(r, size); err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("%w: zip: %v", ErrFormat, err)
	}
	z := &exportZip{files: map[string]*zip.File{}}
	for _, f := range zr.File {
		limit, ok := limitOf(f.Name)
		if !ok {
			return nil, fmt.Errorf("%w: entry %.80q is not part of an evidence export", ErrFormat, f.Name)
		}
		if z.files[f.Name] != nil {
			return nil, fmt.Errorf("%w: entry %s appears twice", ErrFormat, f.Name)
		}
		if f.UncompressedSize64 > limit {
			return nil, fmt.Errorf("%w: entry %s declares %d bytes, more than the %d allowed", ErrFormat, f.Name, f.UncompressedSize64, limit)
		}
		video := isVideoEntry(f.Name)
		if video && (f.Method != zip.Store || f.UncompressedSize64 != f.CompressedSize64) {
			return nil, fmt.Errorf("%w: %s must be stored uncompressed", ErrFormat, f.Name)
		}
		if f.Method != zip.Store && f.Method != zip.Deflate {
			return nil, fmt.Errorf("%w: entry %s uses compression method %d", ErrFormat, f.Name, f.Method)
		}
		z.files[f.Name] = f
		if video {
			z.videos = append(z.videos, f.Name)
		}
	}
	for _, name := range []string{EntryManifest, EntrySignature, EntryCert, EntryCheckpoint} {
		if z.files[name] == nil {
			return nil, fmt.Errorf("%w: the archive has no %s", ErrFormat, name)
		}
	}
	if len(z.videos) == 0 {
		return nil, fmt.Errorf("%w: the archive has no video entry", ErrFormat)
	}
	if len(z.videos) > MaxExportCameras {
		return nil, fmt.Errorf("%w: the archive has %d video entries, at most %d", ErrFormat, len(z.videos), MaxExportCameras)
	}
	return z, nil
}

// read reads a small entry whole, never more than its limit: archive/zip stops at the declared size and
// checks the CRC.
func (z *exportZip) read(name string) ([]byte, error) {
	f := z.files[name]
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(entryLimits[name])+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
	}
	if uint64(len(b)) > entryLimits[name] {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrFormat, name, entryLimits[name])
	}
	return b, nil
}
