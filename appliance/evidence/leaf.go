package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// ErrFormat is wrapped by every error about bytes that do not follow the evidence format.
var ErrFormat = errors.New("evidence format")

// Leaf kinds: the first line of a leaf.
const (
	genesisMagic = "edgenvr/genesis/v1"
	segmentMagic = "edgenvr/segment/v1"
	auditMagic   = "edgenvr/audit/v1"
)

// maxLeaf bounds the bytes of one leaf.
const maxLeaf = 4 << 10

// SegmentLeaf is the log entry of one closed segment of one camera.
type SegmentLeaf struct {
	Appliance string   // the appliance's id
	Camera    string   // camera name
	Seq       uint64   // 1 for the camera's first logged segment, then +1 per segment
	Prev      [32]byte // leaf hash of the camera's previous segment; zero for Seq 1
	Segment   [16]byte // segment id
	Start     time.Time
	End       time.Time
	Chunks    uint64   // init + fragments (the chain's length)
	Init      [32]byte // SHA-256 of the init segment (chunk 0)
	Chain     [32]byte // head of the plaintext hash chain over all chunks
	Recovered bool     // closed by crash recovery rather than by the recorder
}

// GenesisLeaf is leaf 0 of every log: it binds the log to the device's keys.
type GenesisLeaf struct {
	Appliance string
	LogKey    [32]byte // SHA-256 of the log key's SubjectPublicKeyInfo (DER)
	ExportKey [32]byte // SHA-256 of the export key's SubjectPublicKeyInfo (DER)
	Created   time.Time
}

// AuditLeaf anchors the appliance's audit log (authz's hash-chained audit.jsonl) in the evidence log: it
// names how many audit entries there were and the hash of the last one, the head of the audit hash chain.
// The log's next signed checkpoint then covers the whole audit log up to that entry, so editing, deleting,
// reordering or truncating those entries shows against the leaf, even with the chain recomputed.
type AuditLeaf struct {
	Appliance string   // the appliance's id
	Size      uint64   // audit entries covered: 1 … Size
	Head      [32]byte // SHA-256 of entry Size as stored (the audit chain head)
	Time      time.Time
}

// LeafHash is the RFC 6962 leaf hash of leaf bytes: SHA-256(0x00 ‖ leaf).
func LeafHash(leaf []byte) [32]byte { return [32]byte(tlog.RecordHash(leaf)) }

// Marshal encodes the leaf: one "key value" line per field, in a fixed order, each ending in "\n".
func (l SegmentLeaf) Marshal() []byte {
	var b bytes.Buffer
	state := "closed"
	if l.Recovered {
		state = "recovered"
	}
	fmt.Fprintf(&b, "%s\nappliance %s\ncamera %s\nseq %d\nprev %x\nsegment %x\nstart %d\nend %d\nchunks %d\ninit %x\nchain %x\nstate %s\n",
		segmentMagic, l.Appliance, l.Camera, l.Seq, l.Prev, l.Segment, l.Start.UnixNano(), l.End.UnixNano(),
		l.Chunks, l.Init, l.Chain, state)
	return b.Bytes()
}

// Marshal encodes the genesis leaf.
func (g GenesisLeaf) Marshal() []byte {
	return fmt.Appendf(nil, "%s\nappliance %s\nlog-key %x\nexport-key %x\ncreated %d\n",
		genesisMagic, g.Appliance, g.LogKey, g.ExportKey, g.Created.UnixNano())
}

// Marshal encodes the audit leaf.
func (a AuditLeaf) Marshal() []byte {
	return fmt.Appendf(nil, "%s\nappliance %s\nsize %d\nhead %x\ntime %d\n", auditMagic, a.Appliance, a.Size, a.Head, a.Time.UnixNano())
}

// LeafKind returns the kind line of a leaf ("edgenvr/segment/v1", …), or "" when b has none within the
// leaf size bound. It parses nothing else.
func LeafKind(b []byte) string {
	b = b[:min(len(b), 64)]
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return ""
	}
	return string(b[:i])
}

// IsAuditLeaf reports whether leaf bytes claim to be an audit leaf (parse them with [ParseAuditLeaf]).
func IsAuditLeaf(b []byte) bool { return LeafKind(b) == auditMagic }

// lineReader reads the "key value" lines of a leaf in a fixed order.
type lineReader struct {
	lines []string
	err   error
}

func newLineReader(b []byte, magic string) (*lineReader, error) {
	if len(b) > maxLeaf {
		return nil, fmt.Errorf("%w: leaf of %d bytes", ErrFormat, len(b))
	}
	s := string(b)
	if !strings.HasSuffix(s, "\n") {
		return nil, fmt.Errorf("%w: leaf does not end in a newline", ErrFormat)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if lines[0] != magic {
		return nil, fmt.Errorf("%w: leaf kind %.40q, want %s", ErrFormat, lines[0], magic)
	}
	return &lineReader{lines: lines[1:]}, nil
}

func (r *lineReader) next(key string) string {
	if r.err != nil {
		return ""
	}
	if len(r.lines) == 0 {
		r.err = fmt.Errorf("%w: leaf ends before %q", ErrFormat, key)
		return ""
	}
	line := r.lines[0]
	r.lines = r.lines[1:]
	v, ok := strings.CutPrefix(line, key+" ")
	if !ok || v == "" || strings.ContainsAny(v, " \t\r") {
		r.err = fmt.Errorf("%w: leaf line %.60q, want %q and a value", ErrFormat, line, key)
		return ""
	}
	return v
}

func (r *lineReader) uint(key string) uint64 {
	v := r.next(key)
	if r.err != nil {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != v {
		r.err = fmt.Errorf("%w: leaf %s %.30q is not a canonical number", ErrFormat, key, v)
	}
	return n
}

func (r *lineReader) time(key string) time.Time {
	v := r.next(key)
	if r.err != nil {
		return time.Time{}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || strconv.FormatInt(n, 10) != v || n <= 0 {
		r.err = fmt.Errorf("%w: leaf %s %.30q is not a positive Unix time in ns", ErrFormat, key, v)
	}
	return time.Unix(0, n).UTC()
}

func (r *lineReader) hex(key string, out []byte) {
	v := r.next(key)
	if r.err != nil {
		return
	}
	if len(v) != 2*len(out) || strings.ToLower(v) != v {
		r.err = fmt.Errorf("%w: leaf %s is not %d lower-case hex bytes", ErrFormat, key, len(out))
		return
	}
	if _, err := hex.Decode(out, []byte(v)); err != nil {
		r.err = fmt.Errorf("%w: leaf %s: %v", ErrFormat, key, err)
	}
}

func (r *lineReader) end() error {
	if r.err == nil && len(r.lines) > 0 {
		r.err = fmt.Errorf("%w: leaf has %d extra lines", ErrFormat, len(r.lines))
	}
	return r.err
}

// ParseSegmentLeaf decodes a segment leaf, accepting only the exact bytes Marshal produces.
func ParseSegmentLeaf(b []byte) (SegmentLeaf, error) {
	var l SegmentLeaf
	r, err := newLineReader(b, segmentMagic)
	if err != nil {
		return l, err
	}
	l.Appliance = r.next("appliance")
	l.Camera = r.next("camera")
	l.Seq = r.uint("seq")
	r.hex("prev", l.Prev[:])
	r.hex("segment", l.Segment[:])
	l.Start = r.time("start")
	l.End = r.time("end")
	l.Chunks = r.uint("chunks")
	r.hex("init", l.Init[:])
	r.hex("chain", l.Chain[:])
	switch st := r.next("state"); {
	case r.err != nil:
	case st == "recovered":
		l.Recovered = true
	case st != "closed":
		r.err = fmt.Errorf("%w: leaf state %.20q", ErrFormat, st)
	}
	if err := r.end(); err != nil {
		return SegmentLeaf{}, err
	}
	switch {
	case l.Seq == 0:
		return SegmentLeaf{}, fmt.Errorf("%w: leaf seq 0", ErrFormat)
	case l.End.Before(l.Start):
		return SegmentLeaf{}, fmt.Errorf("%w: leaf ends before it starts", ErrFormat)
	case l.Chunks == 0:
		return SegmentLeaf{}, fmt.Errorf("%w: leaf of no chunks", ErrFormat)
	}
	if !bytes.Equal(l.Marshal(), b) {
		return SegmentLeaf{}, fmt.Errorf("%w: leaf is not in canonical form", ErrFormat)
	}
	return l, nil
}

// ParseGenesisLeaf decodes the genesis leaf.
func ParseGenesisLeaf(b []byte) (GenesisLeaf, error) {
	var g GenesisLeaf
	r, err := newLineReader(b, genesisMagic)
	if err != nil {
		return g, err
	}
	g.Appliance = r.next("appliance")
	r.hex("log-key", g.LogKey[:])
	r.hex("export-key", g.ExportKey[:])
	g.Created = r.time("created")
	if err := r.end(); err != nil {
		return GenesisLeaf{}, err
	}
	if !bytes.Equal(g.Marshal(), b) {
		return GenesisLeaf{}, fmt.Errorf("%w: genesis leaf is not in canonical form", ErrFormat)
	}
	return g, nil
}

// ParseAuditLeaf decodes an audit leaf, accepting only the exact bytes Marshal produces.
func ParseAuditLeaf(b []byte) (AuditLeaf, error) {
	var a AuditLeaf
	r, err := newLineReader(b, auditMagic)
	if err != nil {
		return a, err
	}
	a.Appliance = r.next("appliance")
	a.Size = r.uint("size")
	r.hex("head", a.Head[:])
	a.Time = r.time("time")
	if err := r.end(); err != nil {
		return AuditLeaf{}, err
	}
	if a.Size == 0 {
		return AuditLeaf{}, fmt.Errorf("%w: audit leaf of no entries", ErrFormat)
	}
	if !bytes.Equal(a.Marshal(), b) {
		return AuditLeaf{}, fmt.Errorf("%w: audit leaf is not in canonical form", ErrFormat)
	}
	return a, nil
}

// Chain recomputes a segment's plaintext hash chain from its chunk hashes, as the vault does:
// c_0 = SHA-256(h_0), c_i = SHA-256(c_{i-1} ‖ h_i).
func Chain(hashes [][32]byte) [32]byte {
	var c [32]byte
	for i, h := range hashes {
		if i == 0 {
			c = sha256.Sum256(h[:])
			continue
		}
		var buf [64]byte
		copy(buf[:32], c[:])
		copy(buf[32:], h[:])
		c = sha256.Sum256(buf[:])
	}
	return c
}
