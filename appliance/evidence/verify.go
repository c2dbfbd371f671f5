package evidence

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// Passphrase decrypts an age-encrypted export.
	Passphrase []byte
	// DeviceCert, if set (PEM or DER), pins the signer: the export's certificate must be this one.
	DeviceCert []byte
	// TempDir holds the decrypted archive of an encrypted export while it is checked. Default os.TempDir.
	TempDir string
	// MaxSize bounds the (decrypted) archive. Default 1 TiB.
	MaxSize int64
}

// Check is one verification step and its outcome, in plain words.
type Check struct {
	// Camera is the camera the check is about; empty for the checks of the whole export (archive,
	// certificate, signatures, checkpoint).
	Camera string
	Name   string
	OK     bool
	Detail string
}

// String names the check with its camera.
func (c Check) String() string {
	if c.Camera == "" {
		return c.Name
	}
	return "camera " + c.Camera + ": " + c.Name
}

// CameraSummary is what the verifier found of one camera of an export.
type CameraSummary struct {
	Camera     string
	Video      string // its entry in the zip
	Start, End time.Time
	Segments   int
	Fragments  int
	VideoBytes int64
	// Gaps are the spans of the requested range without the camera's recording, as the manifest states
	// them and the verifier recomputed them from the signed leaves (format 2 only).
	Gaps []Gap
}

// Report is the outcome of verifying an export.
type Report struct {
	Signer string // appliance id and certificate fingerprint, once known
	Pinned bool   // the certificate matched the pinned one
	// Format is the manifest's format, once read.
	Format string
	// Camera, Start and End are those of a single-camera export; Cameras describes every camera.
	Camera     string
	Start, End time.Time
	From, To   time.Time // the requested range
	Cameras    []CameraSummary
	ExportedAt time.Time
	ExportedBy string
	Reason     string
	Checkpoint string // "size N, signed at T"
	Checks     []Check
	Fragments  int
	VideoBytes int64
}

// OK reports whether every check passed and the signer was pinned.
func (r *Report) OK() bool {
	if !r.Pinned || len(r.Checks) == 0 {
		return false
	}
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// CameraOK reports whether every check of the camera and of the whole export passed.
func (r *Report) CameraOK(camera string) bool {
	found := false
	for _, c := range r.Checks {
		if c.Camera == camera {
			found = true
		}
		if !c.OK && (c.Camera == camera || c.Camera == "") {
			return false
		}
	}
	return found
}

// Failed returns the checks that failed.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

func (r *Report) add(name string, err error, okDetail string) bool {
	if err != nil {
		r.Checks = append(r.Checks, Check{Name: name, Detail: err.Error()})
		return false
	}
	r.Checks = append(r.Checks, Check{Name: name, OK: true, Detail: okDetail})
	return true
}

// Print writes the report in plain words: the checks of the whole export, then each camera's checks and
// outcome, ending with a one-line verdict that names every failed check and its camera.
func (r *Report) Print(w io.Writer) {
	if r.Signer != "" {
		fmt.Fprintf(w, "Signer:      %s\n", r.Signer)
	}
	if !r.ExportedAt.IsZero() {
		fmt.Fprintf(w, "Exported:    %s by %q, reason %q\n", r.ExportedAt.Format(time.RFC3339), r.ExportedBy, r.Reason)
		fmt.Fprintf(w, "Requested:   %s to %s\n", r.From.Format(time.RFC3339Nano), r.To.Format(time.RFC3339Nano))
	}
	if r.Checkpoint != "" {
		fmt.Fprintf(w, "Log:         %s\n", r.Checkpoint)
	}
	if len(r.Cameras) > 1 {
		names := make([]string, len(r.Cameras))
		for i, c := range r.Cameras {
			names[i] = c.Camera
		}
		fmt.Fprintf(w, "Cameras:     %d (%s), one manifest, one checkpoint\n", len(r.Cameras), strings.Join(names, ", "))
	}
	mark := func(c Check) string {
		if c.OK {
			return "ok  "
		}
		return "FAIL"
	}
	fmt.Fprintln(w, "Checks of the export:")
	for _, c := range r.Checks {
		if c.Camera == "" {
			fmt.Fprintf(w, "  [%s] %s: %s\n", mark(c), c.Name, c.Detail)
		}
	}
	for _, cs := range r.Cameras {
		fmt.Fprintf(w, "Camera %s (%s):\n", cs.Camera, cs.Video)
		if !cs.Start.IsZero() {
			fmt.Fprintf(w, "  Recorded:  %s to %s (%s), %d fragments from %d segments, %d bytes\n", cs.Start.Format(time.RFC3339Nano),
				cs.End.Format(time.RFC3339Nano), cs.End.Sub(cs.Start).Round(time.Millisecond), cs.Fragments, cs.Segments, cs.VideoBytes)
		}
		if cs.Gaps != nil {
			if len(cs.Gaps) == 0 {
				fmt.Fprintln(w, "  Gaps:      none: recorded throughout the requested range")
			}
			for _, g := range cs.Gaps {
				fmt.Fprintf(w, "  Gap:       %s to %s (%s): %s\n", g.From.Format(time.RFC3339Nano), g.To.Format(time.RFC3339Nano), g.To.Sub(g.From).Round(time.Millisecond), g.Reason)
			}
		}
		failed := 0
		for _, c := range r.Checks {
			if c.Camera == cs.Camera {
				fmt.Fprintf(w, "  [%s] %s: %s\n", mark(c), c.Name, c.Detail)
				if !c.OK {
					failed++
				}
			}
		}
		switch {
		case failed > 0:
			fmt.Fprintf(w, "  => camera %s: NOT AUTHENTIC: %d check(s) failed\n", cs.Camera, failed)
		case r.CameraOK(cs.Camera):
			fmt.Fprintf(w, "  => camera %s: every check passed\n", cs.Camera)
		default:
			fmt.Fprintf(w, "  => camera %s: its own checks passed, but a check of the whole export failed\n", cs.Camera)
		}
	}
	switch {
	case r.OK():
		what := "the recording is"
		if len(r.Cameras) > 1 {
			what = fmt.Sprintf("the recordings of all %d cameras are", len(r.Cameras))
		}
		fmt.Fprintf(w, "VERDICT: AUTHENTIC: every check passed; %s complete and unaltered as signed by %s.\n", what, r.Signer)
	case len(r.Failed()) == 0 && !r.Pinned:
		fmt.Fprintln(w, "VERDICT: NOT ESTABLISHED: the export is consistent, but its signer is not pinned; verify again with -device-cert.")
	default:
		names := make([]string, 0)
		for _, c := range r.Failed() {
			names = append(names, c.String())
		}
		fmt.Fprintf(w, "VERDICT: NOT AUTHENTIC: %d check(s) failed: %s.\n", len(names), strings.Join(names, "; "))
	}
}

// ageMagic begins every age-encrypted file.
const ageMagic = "age-encryption.org/v1\n"

// VerifyFile verifies the export at path. The error is for problems that prevent checking at all (an
// unreadable file, a wrong passphrase); what the checks find is in the report.
func VerifyFile(path string, opts VerifyOptions) (*Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open export: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open export: %w", err)
	}
	maxSize := opts.MaxSize
	if maxSize <= 0 {
		maxSize = 1 << 40
	}
	var head [len(ageMagic)]byte
	n, _ := f.ReadAt(head[:], 0)
	if string(head[:n]) != ageMagic {
		if st.Size() > maxSize {
			return nil, fmt.Errorf("export of %d bytes is larger than the %d allowed", st.Size(), maxSize)
		}
		return Verify(f, st.Size(), opts), nil
	}
	if len(opts.Passphrase) == 0 {
		return nil, errors.New("the export is encrypted (age): give the passphrase")
	}
	id, err := age.NewScryptIdentity(string(opts.Passphrase))
	if err != nil {
		return nil, fmt.Errorf("passphrase: %w", err)
	}
	dr, err := age.Decrypt(bufio.NewReader(f), id)
	if err != nil {
		return nil, fmt.Errorf("decrypt export: %w", err)
	}
	tmp, err := os.CreateTemp(opts.TempDir, ".nvr-verify-*.zip")
	if err != nil {
		return nil, fmt.Errorf("decrypt export: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := os.Remove(tmp.Name()); err != nil { // nothing decrypted outlives the process
		return nil, fmt.Errorf("decrypt export: %w", err)
	}
	size, err := io.Copy(tmp, io.LimitReader(dr, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("decrypt export: %w", err)
	}
	if size > maxSize {
		return nil, fmt.Errorf("decrypted export is larger than the %d bytes allowed", maxSize)
	}
	return Verify(tmp, size, opts), nil
}

// camView is one camera of an export as the verifier checks it: a format-1 manifest of that camera alone
// (for format 2, made from the camera's part and the shared fields), its video entry and stated gaps.
type camView struct {
	man   *Manifest
	entry string
	gaps  []Gap // nil in format 1, which states none
	multi bool
}

// manifestViews parses a manifest of either format into one view per camera.
func manifestViews(b []byte) ([]camView, *Manifest, error) {
	format, err := ManifestFormatOf(b)
	if err != nil {
		return nil, nil, err
	}
	if format != ManifestFormatMulti {
		m, err := ParseManifest(b)
		if err != nil {
			return nil, nil, err
		}
		return []camView{{man: m, entry: EntryVideo}}, m, nil
	}
	mm, err := ParseMultiManifest(b)
	if err != nil {
		return nil, nil, err
	}
	common := &Manifest{Format: mm.Format, Appliance: mm.Appliance, From: mm.From, To: mm.To, ExportedAt: mm.ExportedAt,
		ExportedBy: mm.ExportedBy, Reason: mm.Reason, Checkpoint: mm.Checkpoint}
	views := make([]camView, 0, len(mm.Cameras))
	for _, p := range mm.Cameras {
		m := *common
		m.Camera, m.CameraURL, m.Start, m.End, m.Video, m.Segments = p.Camera, p.CameraURL, p.Start, p.End, p.Video, p.Segments
		gaps := p.Gaps
		if gaps == nil {
			gaps = []Gap{}
		}
		views = append(views, camView{man: &m, entry: VideoEntry(p.Camera, true), gaps: gaps, multi: true})
	}
	return views, common, nil
}

// Verify checks an unencrypted export archive, of one camera (manifest format 1) or several (format 2),
// and reports every check: those of the whole export, then each camera's.
func Verify(r io.ReaderAt, size int64, opts VerifyOptions) *Report {
	rep := &Report{}
	z, err := openExportZip(r, size)
	if !rep.add("archive", err, "the entries of an evidence export, nothing else, within their size limits") {
		return rep
	}
	certPEM, err := z.read(EntryCert)
	var id *Identity
	if err == nil {
		id, err = ParseDeviceCert(certPEM)
	}
	if !rep.add("device certificate", err, "") {
		return rep
	}
	rep.Checks[len(rep.Checks)-1].Detail = fmt.Sprintf("self-signed by the export key of appliance %s, names its log key", id.Appliance)
	rep.Signer = fmt.Sprintf("appliance %s (certificate SHA-256 %s)", id.Appliance, id.Fingerprint())
	if opts.DeviceCert != nil {
		pin, perr := ParseDeviceCert(opts.DeviceCert)
		switch {
		case perr != nil:
			err = fmt.Errorf("the pinned certificate is unusable: %w", perr)
		case !bytes.Equal(pin.DER, id.DER):
			err = fmt.Errorf("the export is signed by %s, not by the pinned device %s (%s)", id.Appliance, pin.Appliance, pin.Fingerprint())
		default:
			err = nil
		}
		rep.Pinned = rep.add("signer pinned", err, "the export's certificate is the pinned device certificate")
	}

	mb, err := z.read(EntryManifest)
	msig, serr := z.read(EntrySignature)
	if err == nil {
		err = serr
	}
	if err == nil {
		d := sha256.Sum256(mb)
		if verr := rsa.VerifyPSS(id.ExportKey, crypto.SHA256, d[:], msig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}); verr != nil {
			err = errors.New("manifest.sig is not the device's export-key signature over manifest.json: the manifest was changed or signed by another key")
		}
	}
	rep.add("export signature", err, "manifest.json is signed by the device's export key (RSASSA-PSS, SHA-256)")
	views, man, err := manifestViews(mb)
	if !rep.add("manifest", err, "") {
		return rep
	}
	rep.Format = man.Format
	segs := 0
	names := make([]string, len(views))
	for i, v := range views {
		segs += len(v.man.Segments)
		names[i] = v.man.Camera
	}
	if len(views) == 1 {
		rep.Checks[len(rep.Checks)-1].Detail = fmt.Sprintf("%d segments of camera %s", segs, views[0].man.Camera)
		rep.Camera, rep.Start, rep.End = views[0].man.Camera, views[0].man.Start, views[0].man.End
	} else {
		rep.Checks[len(rep.Checks)-1].Detail = fmt.Sprintf("format 2: %d cameras (%s), %d segments, one checkpoint", len(views), strings.Join(names, ", "), segs)
	}
	rep.From, rep.To = man.From, man.To
	rep.ExportedAt, rep.ExportedBy, rep.Reason = man.ExportedAt, man.ExportedBy, man.Reason
	if man.Appliance != id.Appliance {
		rep.add("appliance", fmt.Errorf("the manifest names appliance %.40q, the certificate %s", man.Appliance, id.Appliance), "")
	}
	// Every video entry belongs to a camera of the manifest; a camera's missing entry is that camera's failure.
	for _, name := range z.videos {
		if !slices.ContainsFunc(views, func(v camView) bool { return v.entry == name }) {
			rep.add("archive", fmt.Errorf("%s is in the archive but no camera of the manifest names it", name), "")
		}
	}

	// Checkpoint: signed by the log key at recording time, one for every camera.
	ckptFile, err := z.read(EntryCheckpoint)
	var ckpt Checkpoint
	if err == nil && !bytes.Equal(ckptFile, []byte(man.Checkpoint)) {
		err = errors.New("checkpoint.txt differs from the checkpoint in the manifest")
	}
	if err == nil {
		ckpt, err = OpenCheckpoint(ckptFile, id.LogKey)
	}
	if err == nil && ckpt.Origin != Origin(id.Appliance) {
		err = fmt.Errorf("the checkpoint is of log %.60q, not of appliance %s", ckpt.Origin, id.Appliance)
	}
	ckptOK := rep.add("checkpoint signature", err, "")
	if ckptOK {
		rep.Checkpoint = fmt.Sprintf("%s, %d entries, signed %s", ckpt.Origin, ckpt.Size, ckpt.Time.Format(time.RFC3339))
		rep.Checks[len(rep.Checks)-1].Detail = "the log checkpoint is signed by the device's log key (ECDSA P-256)"
	}

	for _, v := range views {
		rep.verifyCamera(z, v, id, ckpt, ckptOK)
	}
	return rep
}

// verifyCamera checks one camera: its segments against the checkpoint, its stated gaps (format 2) and its
// video entry, streamed once.
func (rep *Report) verifyCamera(z *exportZip, v camView, id *Identity, ckpt Checkpoint, ckptOK bool) {
	cam := v.man.Camera
	cs := CameraSummary{Camera: cam, Video: v.entry, Start: v.man.Start, End: v.man.End, Segments: len(v.man.Segments), Gaps: v.gaps}
	first := len(rep.Checks)
	expect, segChecks, spans := checkSegments(v.man, id, ckpt, ckptOK)
	rep.Checks = append(rep.Checks, segChecks...)
	if v.multi {
		if v.man.Video.Name != v.entry {
			rep.add("video", fmt.Errorf("the manifest names its video %.80q, but camera %s's video is %s", v.man.Video.Name, cam, v.entry), "")
		}
		if spans != nil {
			want := computeGaps(v.man.From, v.man.To, spans)
			rep.add("gaps", sameGaps(v.gaps, want), gapsDetail(want))
		}
	}
	f := z.files[v.entry]
	if f == nil {
		rep.add("video", fmt.Errorf("%s is missing from the archive: the camera's recording was removed from the export", v.entry), "")
	} else {
		vr, err := f.Open()
		if err == nil {
			var vres videoResult
			vres, err = walkVideo(vr, v.man, expect, id)
			vr.Close()
			cs.Fragments, cs.VideoBytes = vres.fragments, vres.size
			rep.Checks = append(rep.Checks, vres.checks...)
		}
		if err != nil {
			rep.add(EntryVideo, err, "")
		}
	}
	for i := first; i < len(rep.Checks); i++ {
		c := &rep.Checks[i]
		c.Camera = cam
		if v.entry != EntryVideo { // walkVideo names the file video.mp4
			c.Name = strings.ReplaceAll(c.Name, EntryVideo, v.entry)
			c.Detail = strings.ReplaceAll(c.Detail, EntryVideo, v.entry)
		}
	}
	rep.Cameras = append(rep.Cameras, cs)
}

// sameGaps compares the gaps a manifest states with those the signed leaves show.
func sameGaps(stated, want []Gap) error {
	if len(stated) == len(want) {
		same := true
		for i := range want {
			if !stated[i].From.Equal(want[i].From) || !stated[i].To.Equal(want[i].To) || stated[i].Reason != want[i].Reason {
				same = false
			}
		}
		if same {
			return nil
		}
	}
	return fmt.Errorf("the manifest states %d gap(s), the logged segments show %s", len(stated), gapsDetail(want))
}

func gapsDetail(gaps []Gap) string {
	if len(gaps) == 0 {
		return "no gap: the logged segments cover the requested range"
	}
	parts := make([]string, len(gaps))
	for i, g := range gaps {
		parts[i] = fmt.Sprintf("%s to %s %s", g.From.Format(time.RFC3339), g.To.Format(time.RFC3339), g.Reason)
	}
	return fmt.Sprintf("%d gap(s) in the requested range, as the logged segments show: %s", len(gaps), strings.Join(parts, "; "))
}

// expectedChunk is a fragment the manifest says is in video.mp4.
type expectedChunk struct {
	seg    int
	index  uint64
	hash   [32]byte
	offset int64
	size   int64
	leaf   SegmentLeaf
}

// checkSegments checks each segment's leaf, inclusion proof, chain and the sequence of segments, and
// returns the fragments expected in video.mp4 in order.
//
// It also returns the segments' logged time ranges for the gaps check, or nil when a leaf is unreadable.
func checkSegments(man *Manifest, id *Identity, ckpt Checkpoint, ckptOK bool) ([]expectedChunk, []Check, []gapSpan) {
	var checks []Check
	spans := []gapSpan{}
	fail := func(name, format string, a ...any) {
		checks = append(checks, Check{Name: name, Detail: fmt.Sprintf(format, a...)})
	}
	var expect []expectedChunk
	var prev *SegmentLeaf
	var prevHash [32]byte
	included, chained := 0, 0
	for i, ms := range man.Segments {
		name := fmt.Sprintf("segment %d", i+1)
		leaf, err := ParseSegmentLeaf([]byte(ms.Leaf))
		if err != nil {
			fail(name, "log entry unreadable: %v", err)
			spans = nil
			continue
		}
		if spans != nil {
			spans = append(spans, gapSpan{start: leaf.Start, end: leaf.End, missing: ms.MediaMissing != ""})
		}
		name = fmt.Sprintf("segment %x (seq %d, %s)", leaf.Segment[:4], leaf.Seq, leaf.Start.Format(time.RFC3339))
		if leaf.Appliance != id.Appliance || leaf.Camera != man.Camera {
			fail(name, "log entry is of appliance %s camera %s, not of this export", leaf.Appliance, leaf.Camera)
		}
		lh := LeafHash([]byte(ms.Leaf))
		if ckptOK {
			proof := make(tlog.RecordProof, len(ms.Proof))
			for j, p := range ms.Proof {
				h, _ := decodeHex32(p) // checked by ParseManifest
				proof[j] = tlog.Hash(h)
			}
			switch {
			case ms.LogIndex >= ckpt.Size:
				fail(name, "log entry %d is not covered by the checkpoint of %d entries: an older checkpoint was substituted", ms.LogIndex, ckpt.Size)
			case tlog.CheckRecord(proof, int64(ckpt.Size), tlog.Hash(ckpt.Root), int64(ms.LogIndex), tlog.Hash(lh)) != nil:
				fail(name, "inclusion proof of log entry %d does not lead to the signed checkpoint's root: the entry or the checkpoint was altered", ms.LogIndex)
			default:
				included++
			}
		}
		if prev != nil {
			switch {
			case leaf.Seq <= prev.Seq:
				fail(name, "segments out of order: seq %d follows seq %d", leaf.Seq, prev.Seq)
			case leaf.Seq != prev.Seq+1:
				fail("completeness", "the log shows %d segment(s) of camera %s between %s and %s (seq %d to %d) that are missing from the export",
					leaf.Seq-prev.Seq-1, man.Camera, prev.End.Format(time.RFC3339), leaf.Start.Format(time.RFC3339), prev.Seq+1, leaf.Seq-1)
			case leaf.Prev != prevHash:
				fail(name, "its log entry does not link to the previous segment's entry")
			}
		}
		prev, prevHash = &leaf, lh
		if ms.MediaMissing != "" {
			fail("completeness", "segment seq %d of camera %s (%s to %s) is in the log, but its recording is missing from the export: %s",
				leaf.Seq, man.Camera, leaf.Start.Format(time.RFC3339), leaf.End.Format(time.RFC3339), ms.MediaMissing)
			continue
		}
		init, _ := base64.StdEncoding.DecodeString(ms.Init)
		hashes := [][32]byte{sha256.Sum256(init)}
		if hashes[0] != leaf.Init {
			fail(name, "the init segment in the manifest is not the one recorded")
		}
		ok := true
		for j, c := range ms.Chunks {
			if c.Index != uint64(j+1) {
				fail(name, "chunk list out of order: chunk %d where %d belongs", c.Index, j+1)
				ok = false
				break
			}
			h, _ := decodeHex32(c.SHA256)
			hashes = append(hashes, h)
			if c.Size > 0 {
				expect = append(expect, expectedChunk{seg: i, index: c.Index, hash: h, offset: c.Offset, size: c.Size, leaf: leaf})
			}
		}
		if !ok {
			continue
		}
		switch {
		case uint64(len(hashes)) != leaf.Chunks:
			fail(name, "the manifest lists %d chunks, the recording had %d", len(hashes), leaf.Chunks)
		case Chain(hashes) != leaf.Chain:
			fail(name, "the chunk hashes do not chain to the hash signed at recording time: a chunk was altered, removed or reordered")
		default:
			chained++
		}
	}
	if ckptOK && included == len(man.Segments) {
		checks = append(checks, Check{Name: "log inclusion", OK: true,
			Detail: fmt.Sprintf("all %d segments are in the signed log (checkpoint of %d entries)", included, ckpt.Size)})
	}
	if chained == len(man.Segments) {
		checks = append(checks, Check{Name: "hash chains", OK: true,
			Detail: fmt.Sprintf("every chunk hash of the %d segments chains to the head logged at recording time", chained)})
	}
	if len(man.Segments) > 0 && !hasFailure(checks, "completeness") {
		checks = append(checks, Check{Name: "completeness", OK: true,
			Detail: "consecutive segments in the log, none missing between the first and the last"})
	}
	return expect, checks, spans
}

func hasFailure(cs []Check, name string) bool {
	for _, c := range cs {
		if c.Name == name && !c.OK {
			return true
		}
	}
	return false
}

type videoResult struct {
	checks    []Check
	fragments int
	size      int64
}

// countingReader feeds what it reads to hashes and counts it.
type videoReader struct {
	r      *bufio.Reader
	off    int64
	whole  hash.Hash
	sealed hash.Hash
}

func (v *videoReader) readFull(n int64, limit int64, what string) ([]byte, error) {
	if n > limit {
		return nil, fmt.Errorf("%w: %s of %d bytes, more than %d", ErrFormat, what, n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(v.r, b); err != nil {
		return nil, fmt.Errorf("%w: %s truncated at offset %d", ErrFormat, what, v.off)
	}
	v.off += n
	return b, nil
}

func (v *videoReader) header() (boxHeader, []byte, error) {
	peek, err := v.r.Peek(8)
	if err != nil {
		return boxHeader{}, nil, err
	}
	hl := 8
	if binary32(peek[:4]) == 1 {
		hl = 16
	}
	raw, err := v.readFull(int64(hl), 16, "box header")
	if err != nil {
		return boxHeader{}, nil, err
	}
	h, err := readBoxHeader(bytes.NewReader(raw))
	return h, raw, err
}

func binary32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// walkVideo reads video.mp4 once: the export init, each fragment against the manifest, the ONVIF seal.
func walkVideo(r io.Reader, man *Manifest, expect []expectedChunk, id *Identity) (videoResult, error) {
	var res videoResult
	v := &videoReader{r: bufio.NewReaderSize(r, 64<<10), whole: sha256.New(), sealed: sha256.New()}
	feed := func(b []byte) { v.whole.Write(b); v.sealed.Write(b) }
	fail := func(name, format string, a ...any) {
		res.checks = append(res.checks, Check{Name: name, Detail: fmt.Sprintf(format, a...)})
	}
	if man.Video.InitSize <= 0 || man.Video.InitSize > maxInit {
		return res, fmt.Errorf("%w: manifest gives an init of %d bytes", ErrFormat, man.Video.InitSize)
	}
	initB, err := v.readFull(man.Video.InitSize, maxInit, "ftyp+moov")
	if err != nil {
		return res, err
	}
	feed(initB)
	exp, err := parseInit(initB)
	if err != nil {
		return res, fmt.Errorf("export init: %w", err)
	}
	// The codec configuration shown to players must be the recorded one.
	if len(man.Segments) > 0 && man.Segments[0].MediaMissing == "" {
		rec, _ := base64.StdEncoding.DecodeString(man.Segments[0].Init)
		if ri, err := parseInit(rec); err != nil || !bytes.Equal(ri.stsd, exp.stsd) {
			fail("video.mp4 codec", "the sample description in video.mp4 is not the recorded one")
		}
	}
	var lastEnd, firstBase int64 = -1, -1
	next := 0
	var meta []byte
	for {
		h, raw, err := v.header()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("video.mp4 at offset %d: %w", v.off, err)
		}
		start := v.off - int64(len(raw))
		if meta != nil {
			return res, fmt.Errorf("%w: video.mp4 has a %q box after its ONVIF seal", ErrFormat, printable(h.typ))
		}
		switch h.typ {
		case "moof":
			moof, err := v.readFull(h.size-int64(h.hdr), maxMoof, "moof")
			if err != nil {
				return res, err
			}
			fh := sha256.New()
			for _, b := range [][]byte{raw, moof} {
				feed(b)
				fh.Write(b)
			}
			mh, mraw, err := v.header()
			if err != nil || mh.typ != "mdat" {
				return res, fmt.Errorf("%w: video.mp4: moof at offset %d is not followed by an mdat", ErrFormat, start)
			}
			feed(mraw)
			fh.Write(mraw)
			body := mh.size - int64(mh.hdr)
			if body > maxMdat {
				return res, fmt.Errorf("%w: mdat of %d bytes", ErrFormat, body)
			}
			if _, err := io.CopyN(io.MultiWriter(v.whole, v.sealed, fh), v.r, body); err != nil {
				return res, fmt.Errorf("%w: video.mp4 mdat truncated", ErrFormat)
			}
			v.off += body
			res.fragments++
			f, ferr := parseMoof(moof, exp.defDuration)
			when := ""
			if ferr == nil {
				when = timeOfTicks(f.base).Format(time.RFC3339Nano)
			}
			sum := [32]byte(fh.Sum(nil))
			size := v.off - start
			switch {
			case next < len(expect) && sum == expect[next].hash:
				e := expect[next]
				if e.offset != start || e.size != size {
					fail("video.mp4 layout", "fragment %d (chunk %d) is at offset %d, the manifest says %d", res.fragments, e.index, start, e.offset)
				}
				if ferr == nil && (timeOfTicks(f.base).Before(e.leaf.Start.Add(-time.Second)) || timeOfTicks(f.base+f.duration).After(e.leaf.End.Add(time.Second))) {
					fail("video.mp4 timing", "fragment at %s lies outside its segment's logged time %s to %s", when, e.leaf.Start.Format(time.RFC3339), e.leaf.End.Format(time.RFC3339))
				}
				next++
			default:
				if at := findChunk(expect, sum); at > next {
					fail("video.mp4 fragments", "fragment %d at offset %d (%s) is chunk %d of segment %x, but chunk %d of segment %x (%d fragment(s)) comes first in the recording: fragments were removed or reordered",
						res.fragments, start, when, expect[at].index, expect[at].leaf.Segment[:4], expect[next].index, expect[next].leaf.Segment[:4], at-next)
					next = at + 1
				} else if at >= 0 {
					fail("video.mp4 fragments", "fragment %d at offset %d (%s) is chunk %d of segment %x, which belongs earlier: fragments were reordered",
						res.fragments, start, when, expect[at].index, expect[at].leaf.Segment[:4])
				} else {
					exp := "no further fragment"
					if next < len(expect) {
						exp = fmt.Sprintf("chunk %d of segment %x", expect[next].index, expect[next].leaf.Segment[:4])
						next++
					}
					fail("video.mp4 fragments", "fragment %d at offset %d (%s) matches no recorded chunk (expected %s): its bytes were altered",
						res.fragments, start, when, exp)
				}
			}
			if ferr != nil {
				fail("video.mp4 fragments", "fragment %d at offset %d: %v", res.fragments, start, ferr)
				continue
			}
			if firstBase < 0 {
				firstBase = f.base
			}
			if f.base < lastEnd {
				fail("video.mp4 timing", "fragment %d at %s starts before the previous one ends: fragments out of order", res.fragments, when)
			}
			lastEnd = max(lastEnd, f.base+f.duration)
		case "meta":
			b, err := v.readFull(h.size-int64(h.hdr), maxMeta, "meta")
			if err != nil {
				return res, err
			}
			meta = append(append([]byte(nil), raw...), b...)
		default:
			return res, fmt.Errorf("%w: video.mp4 has an unexpected %q box at offset %d", ErrFormat, printable(h.typ), start)
		}
	}
	res.size = v.off
	if next < len(expect) {
		fail("video.mp4 fragments", "%d recorded fragment(s) listed in the manifest are missing from video.mp4, from chunk %d of segment %x on",
			len(expect)-next, expect[next].index, expect[next].leaf.Segment[:4])
	}
	if !hasFailure(res.checks, "video.mp4 fragments") {
		res.checks = append(res.checks, Check{Name: "video.mp4 fragments", OK: true,
			Detail: fmt.Sprintf("all %d fragments are the recorded bytes, in recorded order", res.fragments)})
	}
	// Time range: the manifest's claims against the fragments' own decode times.
	switch {
	case firstBase < 0:
		fail("time range", "video.mp4 holds no fragment")
	case !timeOfTicks(firstBase).Equal(man.Start) || !timeOfTicks(lastEnd).Equal(man.End):
		fail("time range", "the manifest says %s to %s, the video's fragments span %s to %s",
			man.Start.Format(time.RFC3339Nano), man.End.Format(time.RFC3339Nano), timeOfTicks(firstBase).Format(time.RFC3339Nano), timeOfTicks(lastEnd).Format(time.RFC3339Nano))
	case !man.Start.Before(man.To) || !man.End.After(man.From):
		fail("time range", "the video (%s to %s) lies outside the requested range %s to %s",
			man.Start.Format(time.RFC3339), man.End.Format(time.RFC3339), man.From.Format(time.RFC3339), man.To.Format(time.RFC3339))
	default:
		res.checks = append(res.checks, Check{Name: "time range", OK: true,
			Detail: fmt.Sprintf("%s to %s, as the fragments' own timestamps say", man.Start.Format(time.RFC3339Nano), man.End.Format(time.RFC3339Nano))})
	}
	if ed, err := editStart(initB); err != nil || ed != firstBase {
		fail("video.mp4 edit list", "the edit list does not start presentation at the first fragment")
	}
	// The ONVIF seal.
	if meta == nil {
		fail("ONVIF signature", "video.mp4 has no ONVIF meta box")
	} else if seal, err := parseOnvifMeta(meta); err != nil {
		fail("ONVIF signature", "%v", err)
	} else {
		v.whole.Write(meta)
		zeroed := append([]byte(nil), meta...)
		clear(zeroed[seal.sigOff : seal.sigOff+len(seal.sig)])
		v.sealed.Write(zeroed)
		switch {
		case !bytes.Equal(seal.info.Cert, id.DER):
			fail("ONVIF signature", "the certificate in video.mp4's cert box is not the device certificate")
		case rsa.VerifyPSS(id.ExportKey, crypto.SHA256, v.sealed.Sum(nil), seal.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) != nil:
			fail("ONVIF signature", "the RSASSA-PSS signature in video.mp4's sibo box does not match the file: video.mp4 was altered")
		default:
			res.checks = append(res.checks, Check{Name: "ONVIF signature", OK: true,
				Detail: fmt.Sprintf("video.mp4 is sealed by the export key (exported by %s, operator %q)", seal.info.UnitName, seal.info.Operator)})
		}
	}
	if got := hex.EncodeToString(v.whole.Sum(nil)); got != man.Video.SHA256 || v.off != man.Video.Size {
		fail("video.mp4 hash", "SHA-256 %s (%d bytes), the manifest says %s (%d bytes)", got, v.off, man.Video.SHA256, man.Video.Size)
	} else {
		res.checks = append(res.checks, Check{Name: "video.mp4 hash", OK: true, Detail: "SHA-256 " + got})
	}
	return res, nil
}

func findChunk(expect []expectedChunk, sum [32]byte) int {
	for i, e := range expect {
		if e.hash == sum {
			return i
		}
	}
	return -1
}

// editStart returns the media time of the export init's first edit.
func editStart(init []byte) (int64, error) {
	top, err := parseBoxes(init)
	if err != nil || len(top) < 2 {
		return 0, fmt.Errorf("%w: init", ErrFormat)
	}
	elst, err := findPath(top[1].payload, "trak", "edts", "elst")
	if err != nil {
		return 0, err
	}
	p := elst[8:]
	if len(p) < 4+4+20 || p[0] != 1 {
		return 0, fmt.Errorf("%w: elst", ErrFormat)
	}
	return int64(binary64(p[16:24])), nil
}

func binary64(b []byte) uint64 { return uint64(binary32(b[:4]))<<32 | uint64(binary32(b[4:8])) }
