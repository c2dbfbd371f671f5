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

// ManifestFormat is the format name a manifest carries.
const ManifestFormat = "edgenvr-evidence-manifest/1"

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

// Marshal encodes the manifest as indented JSON ending in a newline.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return append(b, '\n'), nil
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
	if len(m.Segments) == 0 || len(m.Segments) > maxManifestSegment {
		return nil, fmt.Errorf("%w: manifest of %d segments", ErrFormat, len(m.Segments))
	}
	if _, err := decodeHex32(m.Video.SHA256); err != nil {
		return nil, fmt.Errorf("%w: manifest video sha256: %v", ErrFormat, err)
	}
	total := 0
	for i, s := range m.Segments {
		if len(s.Proof) > maxManifestProof {
			return nil, fmt.Errorf("%w: segment %d: proof of %d hashes", ErrFormat, i, len(s.Proof))
		}
		for _, p := range s.Proof {
			if _, err := decodeHex32(p); err != nil {
				return nil, fmt.Errorf("%w: segment %d proof: %v", ErrFormat, i, err)
			}
		}
		if len(s.Leaf) > maxLeaf {
			return nil, fmt.Errorf("%w: segment %d: leaf of %d bytes", ErrFormat, i, len(s.Leaf))
		}
		if _, err := base64.StdEncoding.DecodeString(s.Init); err != nil {
			return nil, fmt.Errorf("%w: segment %d init: %v", ErrFormat, i, err)
		}
		total += len(s.Chunks)
		if total > maxManifestChunks {
			return nil, fmt.Errorf("%w: manifest of more than %d chunks", ErrFormat, maxManifestChunks)
		}
		for _, c := range s.Chunks {
			if _, err := decodeHex32(c.SHA256); err != nil {
				return nil, fmt.Errorf("%w: segment %d chunk %d: %v", ErrFormat, i, c.Index, err)
			}
			if c.Offset < 0 || c.Size < 0 {
				return nil, fmt.Errorf("%w: segment %d chunk %d: negative place", ErrFormat, i, c.Index)
			}
		}
	}
	return &m, nil
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
