package evidence

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Manifest formats. Format 1 describes one camera (video.mp4); format 2 describes several cameras over
// one time range, each in its own video-<camera>.mp4, all proven against one checkpoint. A single-camera
// export is still written in format 1, so that it stays verifiable by every verifier ever shipped and by
// the by-hand procedure; a verifier accepts both.
const (
	ManifestFormat      = "edgenvr-evidence-manifest/1"
	ManifestFormatMulti = "edgenvr-evidence-manifest/2"
)

// MaxExportCameras bounds the cameras of one export.
const MaxExportCameras = 64

// Bounds on a manifest.
const (
	maxManifest        = 64 << 20
	maxManifestChunks  = 1 << 22
	maxManifestProof   = 64
	maxManifestSegment = 1 << 17
)

// Manifest describes an export: who exported what and why, and everything needed to tie each byte of
// video.mp4 to the signed log. It is JSON; the export signature covers its exact bytes.
type Manifest struct {
	Format     string            `json:"format"`
	Appliance  string            `json:"appliance"`
	Camera     string            `json:"camera"`
	CameraURL  string            `json:"camera_url,omitempty"`
	From       time.Time         `json:"requested_from"`
	To         time.Time         `json:"requested_to"`
	Start      time.Time         `json:"start"` // of the first exported fragment
	End        time.Time         `json:"end"`   // of the last exported fragment
	ExportedAt time.Time         `json:"exported_at"`
	ExportedBy string            `json:"exported_by"`
	Reason     string            `json:"reason"`
	Video      Video             `json:"video"`
	Segments   []ManifestSegment `json:"segments"`
	// Checkpoint is the signed checkpoint (a signed note) the inclusion proofs lead to.
	Checkpoint string `json:"checkpoint"`
}

// Video describes video.mp4.
type Video struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// InitSize is the length of the export's ftyp+moov at the start of the file.
	InitSize int64 `json:"init_size"`
}

// ManifestSegment is one recorded segment: its log leaf and proof, its init segment and every chunk's hash.
type ManifestSegment struct {
	LogIndex uint64   `json:"log_index"`
	Leaf     string   `json:"leaf"`            // the leaf's exact text
	Proof    []string `json:"inclusion_proof"` // hex hashes, RFC 6962 audit path to the checkpoint
	Init     string   `json:"init"`            // base64 of the recorded init segment (chunk 0)
	// Chunks lists chunks 1 … n-1 (the fragments) in order; those in video.mp4 give their place there.
	Chunks []ManifestChunk `json:"chunks"`
	// MediaMissing is set when the segment is logged but its recording could not be read at export.
	MediaMissing string `json:"media_missing,omitempty"`
}

// ManifestChunk is one recorded fragment.
type ManifestChunk struct {
	Index  uint64 `json:"index"`
	SHA256 string `json:"sha256"`
	Offset int64  `json:"offset,omitempty"` // in video.mp4; 0 when not exported
	Size   int64  `json:"size,omitempty"`
}

// MultiManifest is the manifest of an export of several cameras (format 2): who exported what and why,
// one part per camera, and the one signed checkpoint every camera's inclusion proofs lead to. It is JSON;
// the export signature covers its exact bytes.
type MultiManifest struct {
	Format     string       `json:"format"`
	Appliance  string       `json:"appliance"`
	From       time.Time    `json:"requested_from"`
	To         time.Time    `json:"requested_to"`
	ExportedAt time.Time    `json:"exported_at"`
	ExportedBy string       `json:"exported_by"`
	Reason     string       `json:"reason"`
	Cameras    []CameraPart `json:"cameras"`
	// Checkpoint is the signed checkpoint (a signed note) every part's inclusion proofs lead to.
	Checkpoint string `json:"checkpoint"`
}

// CameraPart is one camera of a [MultiManifest]: its video file and segments, as a format-1 manifest
// describes its one camera, and the gaps of its recording within the requested range.
type CameraPart struct {
	Camera    string    `json:"camera"`
	CameraURL string    `json:"camera_url,omitempty"`
	Start     time.Time `json:"start"` // of the camera's first exported fragment
	End       time.Time `json:"end"`   // of its last exported fragment
	Video     Video     `json:"video"`
	// Gaps are the spans of the requested range that the camera's logged segments do not cover, and those
	// of logged segments whose recording could not be read; empty when the camera recorded throughout.
	Gaps     []Gap             `json:"gaps"`
	Segments []ManifestSegment `json:"segments"`
}

// Gap is a span of the requested range without a camera's recording.
type Gap struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Reason string    `json:"reason"` // GapNotRecorded or GapMediaMissing
}

// Gap reasons.
const (
	// GapNotRecorded: no logged segment of the camera covers the span (the camera was off, unreachable
	// or not yet added).
	GapNotRecorded = "not recorded"
	// GapMediaMissing: a logged segment covers the span but its recording could not be read at export.
	GapMediaMissing = "recording unreadable"
)

// gapTolerance is the longest hole between two segments that is not reported as a gap: segment
// rotation leaves none, but a reconnection may leave a fraction of a second.
const gapTolerance = time.Second

// gapSpan is a logged segment's time range, as its leaf states it.
type gapSpan struct {
	start, end time.Time
	missing    bool
}

// computeGaps returns the gaps of [from, to) given a camera's logged segments in order: the exporter
// states them, and the verifier recomputes them from the signed leaves.
func computeGaps(from, to time.Time, spans []gapSpan) []Gap {
	gaps := []Gap{}
	cur := from
	add := func(a, b time.Time, reason string) {
		if a.Before(from) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		if b.Sub(a) <= gapTolerance && reason == GapNotRecorded || !b.After(a) {
			return
		}
		if n := len(gaps); n > 0 && gaps[n-1].Reason == reason && !a.After(gaps[n-1].To) {
			gaps[n-1].To = b
			return
		}
		gaps = append(gaps, Gap{From: a.UTC(), To: b.UTC(), Reason: reason})
	}
	for _, s := range spans {
		if s.start.After(cur) {
			add(cur, s.start, GapNotRecorded)
		}
		if s.missing {
			add(s.start, s.end, GapMediaMissing)
		}
		if s.end.After(cur) {
			cur = s.end
		}
	}
	if to.After(cur) {
		add(cur, to, GapNotRecorded)
	}
	return gaps
}

// Marshal encodes the manifest as indented JSON ending in a newline.
func (m *MultiManifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// Marshal encodes the manifest as indented JSON ending in a newline.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// ManifestFormatOf returns the format a manifest declares, reading nothing else of it.
func ManifestFormatOf(b []byte) (string, error) {
	if len(b) > maxManifest {
		return "", fmt.Errorf("%w: manifest of %d bytes", ErrFormat, len(b))
	}
	var head struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return "", fmt.Errorf("%w: manifest: %v", ErrFormat, err)
	}
	return head.Format, nil
}

// ParseMultiManifest decodes a format-2 manifest strictly: known fields only, one JSON value, bounded
// sizes, decodable hashes, distinct camera names fit for an entry name.
func ParseMultiManifest(b []byte) (*MultiManifest, error) {
	if len(b) > maxManifest {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrFormat, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m MultiManifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrFormat, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: manifest: data after the JSON object", ErrFormat)
	}
	if m.Format != ManifestFormatMulti {
		return nil, fmt.Errorf("%w: manifest format %.60q, want %s", ErrFormat, m.Format, ManifestFormatMulti)
	}
	if len(m.Cameras) < 2 || len(m.Cameras) > MaxExportCameras {
		return nil, fmt.Errorf("%w: manifest of %d cameras (format 2 holds 2 to %d)", ErrFormat, len(m.Cameras), MaxExportCameras)
	}
	seen := map[string]bool{}
	segs, chunks := 0, 0
	for _, c := range m.Cameras {
		if !ValidCameraName(c.Camera) {
			return nil, fmt.Errorf("%w: camera name %.80q", ErrFormat, c.Camera)
		}
		if seen[c.Camera] {
			return nil, fmt.Errorf("%w: camera %s appears twice", ErrFormat, c.Camera)
		}
		seen[c.Camera] = true
		if len(c.Gaps) > maxManifestSegment {
			return nil, fmt.Errorf("%w: camera %s: %d gaps", ErrFormat, c.Camera, len(c.Gaps))
		}
		if err := checkSegmentsBounds(c.Video, c.Segments, &segs, &chunks); err != nil {
			return nil, fmt.Errorf("camera %s: %w", c.Camera, err)
		}
	}
	return &m, nil
}

// ValidCameraName reports whether name is a camera name as the appliance allows it: letters, digits, _
// and -, at most 64. Only such names make entry names (video-<camera>.mp4).
func ValidCameraName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// VideoEntry is the name of a camera's video file in an export: video.mp4 in a single-camera (format 1)
// export, video-<camera>.mp4 in a format-2 export.
func VideoEntry(camera string, multi bool) string {
	if !multi {
		return EntryVideo
	}
	return "video-" + camera + ".mp4"
}

// ParseManifest decodes a manifest strictly: known fields only, one JSON value, bounded sizes, decodable
// hashes.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > maxManifest {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrFormat, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrFormat, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: manifest: data after the JSON object", ErrFormat)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("%w: manifest format %.60q, want %s", ErrFormat, m.Format, ManifestFormat)
	}
	segs, chunks := 0, 0
	if err := checkSegmentsBounds(m.Video, m.Segments, &segs, &chunks); err != nil {
		return nil, err
	}
	return &m, nil
}

// checkSegmentsBounds checks a camera's video hash and segments, counting segments and chunks across the
// cameras of a manifest against the bounds.
func checkSegmentsBounds(v Video, segments []ManifestSegment, segs, total *int) error {
	*segs += len(segments)
	if len(segments) == 0 || *segs > maxManifestSegment {
		return fmt.Errorf("%w: manifest of %d segments", ErrFormat, len(segments))
	}
	if _, err := decodeHex32(v.SHA256); err != nil {
		return fmt.Errorf("%w: manifest video sha256: %v", ErrFormat, err)
	}
	for i, s := range segments {
		if len(s.Proof) > maxManifestProof {
			return fmt.Errorf("%w: segment %d: proof of %d hashes", ErrFormat, i, len(s.Proof))
		}
		for _, p := range s.Proof {
			if _, err := decodeHex32(p); err != nil {
				return fmt.Errorf("%w: segment %d proof: %v", ErrFormat, i, err)
			}
		}
		if len(s.Leaf) > maxLeaf {
			return fmt.Errorf("%w: segment %d: leaf of %d bytes", ErrFormat, i, len(s.Leaf))
		}
		if _, err := base64.StdEncoding.DecodeString(s.Init); err != nil {
			return fmt.Errorf("%w: segment %d init: %v", ErrFormat, i, err)
		}
		*total += len(s.Chunks)
		if *total > maxManifestChunks {
			return fmt.Errorf("%w: manifest of more than %d chunks", ErrFormat, maxManifestChunks)
		}
		for _, c := range s.Chunks {
			if _, err := decodeHex32(c.SHA256); err != nil {
				return fmt.Errorf("%w: segment %d chunk %d: %v", ErrFormat, i, c.Index, err)
			}
			if c.Offset < 0 || c.Size < 0 {
				return fmt.Errorf("%w: segment %d chunk %d: negative place", ErrFormat, i, c.Index)
			}
		}
	}
	return nil
}

func decodeHex32(s string) ([32]byte, error) {
	var out [32]byte
	if len(s) != 64 {
		return out, fmt.Errorf("hash of %d hex digits, want 64", len(s))
	}
	if _, err := hex.Decode(out[:], []byte(s)); err != nil {
		return out, err
	}
	return out, nil
}
