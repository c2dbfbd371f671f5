package evidence

import (
	"archive/zip"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"slices"
	"time"

	"filippo.io/age"
)

// Names of the entries of an export zip.
const (
	EntryVideo      = "video.mp4"
	EntryManifest   = "manifest.json"
	EntrySignature  = "manifest.sig"
	EntryCert       = "device-cert.pem"
	EntryCheckpoint = "checkpoint.txt"
)

// ErrNothingToExport is returned when the range holds no recorded fragment of the camera.
var ErrNothingToExport = errors.New("nothing recorded in that range")

// RecordedSegment is a segment as the index knows it.
type RecordedSegment struct {
	ID       [16]byte
	Start    time.Time
	End      time.Time
	LogIndex uint64 // its leaf; 0 while not logged
}

// Recordings is what an export reads from the appliance: the index's final segments and their decrypted,
// authenticated chunks.
type Recordings interface {
	// Segments returns the camera's final (closed or recovered) segments that overlap [from, to), by start.
	Segments(camera string, from, to time.Time) ([]RecordedSegment, error)
	// Chunks calls fn with each plaintext chunk of the segment in order, chunk 0 being the init segment.
	Chunks(id [16]byte, fn func(index uint64, plain []byte) error) error
	// CameraURL returns the camera's stream URL (without credentials), or "".
	CameraURL(camera string) string
}

// Exporter makes evidence exports.
type Exporter struct {
	Log        *Log
	Recordings Recordings
	// ExportKey signs the manifest and the ONVIF file (RSASSA-PSS, SHA-256): the TPM's export key.
	ExportKey crypto.Signer
	// CertDER is the device certificate.
	CertDER []byte
	// UnitURL is the appliance's address, for the ONVIF export information. May be empty.
	UnitURL string
	// Clock gives the export time. Nil means time.Now.
	Clock  func() time.Time
	Logger *slog.Logger
}

// ExportRequest says what to export.
type ExportRequest struct {
	// Camera is the camera of a single-camera export; Cameras lists several cameras over the one range.
	// Both may be given: the export holds Camera, then Cameras, each once. One camera makes a format-1
	// export (video.mp4), several a format-2 export (video-<camera>.mp4 each, one manifest).
	Camera   string
	Cameras  []string
	From, To time.Time
	User     string // the exporting operator
	Reason   string
	// Passphrase, if set, encrypts the whole zip with age (scrypt recipient).
	Passphrase []byte
}

// CameraList returns the request's cameras, in order, each once, checked: at least one, at most
// [MaxExportCameras], each a valid camera name.
func (r ExportRequest) CameraList() ([]string, error) {
	var out []string
	for _, c := range append([]string{r.Camera}, r.Cameras...) {
		if c == "" || slices.Contains(out, c) {
			continue
		}
		if !ValidCameraName(c) {
			return nil, fmt.Errorf("export: camera name %.80q: letters, digits, _ and - (at most 64)", c)
		}
		out = append(out, c)
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("export: no camera given")
	case len(out) > MaxExportCameras:
		return nil, fmt.Errorf("export: %d cameras, at most %d in one export", len(out), MaxExportCameras)
	}
	return out, nil
}

// ExportReport says what an export holds: totals over its cameras, and each camera.
type ExportReport struct {
	Segments     int
	Fragments    int
	VideoBytes   int64
	Start, End   time.Time // the earliest and latest exported instant of any camera
	MediaMissing []string  // segments whose recording could not be read, named with their camera
	Checkpoint   Checkpoint
	Cameras      []CameraReport
}

// CameraReport says what an export holds of one camera.
type CameraReport struct {
	Camera       string
	Video        string // its entry in the zip
	Segments     int
	Fragments    int
	VideoBytes   int64
	Start, End   time.Time
	MediaMissing []string
	// Gaps are the spans of the requested range without the camera's recording (see [CameraPart]).
	Gaps []Gap
}

// Export writes one evidence export to w: a zip (age-encrypted when a passphrase is given) holding each
// camera's video (video.mp4 for one camera, video-<camera>.mp4 for several), manifest.json, manifest.sig,
// device-cert.pem and checkpoint.txt. Every camera's segments are proven against one checkpoint and the
// manifest is signed once. A camera with nothing recorded in the range fails the whole export
// ([ErrNothingToExport], naming it) rather than being left out.
func (e *Exporter) Export(ctx context.Context, req ExportRequest, w io.Writer) (ExportReport, error) {
	var rep ExportReport
	if !req.To.After(req.From) {
		return rep, errors.New("export: the range ends before it starts")
	}
	cams, err := req.CameraList()
	if err != nil {
		return rep, err
	}
	clock := e.Clock
	if clock == nil {
		clock = time.Now
	}
	log := e.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, err := ParseDeviceCert(e.CertDER)
	if err != nil {
		return rep, fmt.Errorf("export: device certificate: %w", err)
	}
	// Every camera's segments, all logged, before a byte is written: one checkpoint covers them all.
	segsOf := make([][]RecordedSegment, len(cams))
	var maxIdx uint64
	for i, cam := range cams {
		segs, err := e.Recordings.Segments(cam, req.From, req.To)
		if err != nil {
			return rep, fmt.Errorf("export %s: %w", cam, err)
		}
		if len(segs) == 0 {
			return rep, fmt.Errorf("export %s: %w", cam, ErrNothingToExport)
		}
		for _, s := range segs {
			if s.LogIndex == 0 {
				return rep, fmt.Errorf("export: segment %x of %s (%s) is not in the evidence log yet; retry in a few seconds",
					s.ID, cam, s.Start.Format(time.RFC3339))
			}
			maxIdx = max(maxIdx, s.LogIndex)
		}
		segsOf[i] = segs
	}
	ckpt, signedCkpt, err := e.Log.CheckpointCovering(maxIdx)
	if err != nil {
		return rep, fmt.Errorf("export: checkpoint: %w", err)
	}
	rep.Checkpoint = ckpt

	out := w
	var encw io.WriteCloser
	if len(req.Passphrase) > 0 {
		r, err := age.NewScryptRecipient(string(req.Passphrase))
		if err != nil {
			return rep, fmt.Errorf("export: passphrase: %w", err)
		}
		if encw, err = age.Encrypt(w, r); err != nil {
			return rep, fmt.Errorf("export: encrypt: %w", err)
		}
		out = encw
	}
	now := clock().UTC()
	zw := zip.NewWriter(out)
	multi := len(cams) > 1
	parts := make([]CameraPart, 0, len(cams))
	for i, cam := range cams {
		cx := cameraExport{e: e, ctx: ctx, req: req, camera: cam, entry: VideoEntry(cam, multi), segs: segsOf[i],
			ckpt: ckpt, now: now, id: id, log: log}
		part, crep, err := cx.write(zw)
		if err != nil {
			return rep, err
		}
		parts = append(parts, part)
		rep.Cameras = append(rep.Cameras, crep)
		rep.Segments += crep.Segments
		rep.Fragments += crep.Fragments
		rep.VideoBytes += crep.VideoBytes
		rep.MediaMissing = append(rep.MediaMissing, crep.MediaMissing...)
		if rep.Start.IsZero() || crep.Start.Before(rep.Start) {
			rep.Start = crep.Start
		}
		if crep.End.After(rep.End) {
			rep.End = crep.End
		}
	}

	var mb []byte
	if !multi {
		p := parts[0]
		man := &Manifest{
			Format: ManifestFormat, Appliance: id.Appliance, Camera: p.Camera, CameraURL: p.CameraURL,
			From: req.From.UTC(), To: req.To.UTC(), Start: p.Start, End: p.End, ExportedAt: now, ExportedBy: req.User,
			Reason: req.Reason, Video: p.Video, Segments: p.Segments, Checkpoint: string(signedCkpt),
		}
		mb, err = man.Marshal()
	} else {
		man := &MultiManifest{
			Format: ManifestFormatMulti, Appliance: id.Appliance, From: req.From.UTC(), To: req.To.UTC(),
			ExportedAt: now, ExportedBy: req.User, Reason: req.Reason, Cameras: parts, Checkpoint: string(signedCkpt),
		}
		mb, err = man.Marshal()
	}
	if err != nil {
		return rep, err
	}
	d := sha256.Sum256(mb)
	msig, err := e.ExportKey.Sign(rand.Reader, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	if err != nil {
		return rep, fmt.Errorf("export: sign manifest: %w", err)
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{EntryManifest, mb}, {EntrySignature, msig}, {EntryCert, CertPEM(e.CertDER)}, {EntryCheckpoint, signedCkpt}} {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: now})
		if err != nil {
			return rep, fmt.Errorf("export: %w", err)
		}
		if _, err := fw.Write(f.b); err != nil {
			return rep, fmt.Errorf("export: write %s: %w", f.name, err)
		}
	}
	if err := zw.Close(); err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	if encw != nil {
		if err := encw.Close(); err != nil {
			return rep, fmt.Errorf("export: encrypt: %w", err)
		}
	}
	return rep, nil
}

// cameraExport writes one camera's video entry and describes it.
type cameraExport struct {
	e      *Exporter
	ctx    context.Context
	req    ExportRequest
	camera string
	entry  string
	segs   []RecordedSegment
	ckpt   Checkpoint
	now    time.Time
	id     *Identity
	log    *slog.Logger
}

// write streams the camera's ONVIF export file into the zip: the export init, every recorded fragment of
// the range byte for byte, and the ONVIF seal.
func (cx *cameraExport) write(zw *zip.Writer) (CameraPart, CameraReport, error) {
	e, req, cam := cx.e, cx.req, cx.camera
	part := CameraPart{Camera: cam, CameraURL: e.Recordings.CameraURL(cam)}
	rep := CameraReport{Camera: cam, Video: cx.entry}
	vw, err := zw.CreateHeader(&zip.FileHeader{Name: cx.entry, Method: zip.Store, Modified: cx.now})
	if err != nil {
		return part, rep, fmt.Errorf("export: %w", err)
	}
	vid := &videoWriter{w: vw, whole: sha256.New(), sealed: sha256.New()}
	lo, hi := ticksOf(req.From), ticksOf(req.To)
	var initBytes []byte
	var info initInfo
	var lastEnd int64
	var spans []gapSpan
	for _, s := range cx.segs {
		if err := cx.ctx.Err(); err != nil {
			return part, rep, err
		}
		leaf, err := e.Log.Leaf(s.LogIndex)
		if err != nil {
			return part, rep, fmt.Errorf("export: %w", err)
		}
		proof, err := e.Log.InclusionProof(s.LogIndex, cx.ckpt.Size)
		if err != nil {
			return part, rep, fmt.Errorf("export: %w", err)
		}
		ms := ManifestSegment{LogIndex: s.LogIndex, Leaf: string(leaf), Proof: hexHashes(proof)}
		var segInit []byte
		exported := 0
		handle := func(index uint64, plain []byte) error {
			sum := sha256.Sum256(plain)
			if index == 0 {
				segInit = append([]byte(nil), plain...)
				ms.Init = base64.StdEncoding.EncodeToString(plain)
				return nil
			}
			mc := ManifestChunk{Index: index, SHA256: hex.EncodeToString(sum[:])}
			defer func() { ms.Chunks = append(ms.Chunks, mc) }()
			if segInit == nil {
				return fmt.Errorf("chunk %d before the init segment", index)
			}
			if initBytes == nil {
				var err error
				if info, err = parseInit(segInit); err != nil {
					return err
				}
			}
			f, err := parseFragment(plain, info.defDuration)
			if err != nil {
				return fmt.Errorf("chunk %d: %w", index, err)
			}
			if f.base+f.duration <= lo || f.base >= hi {
				return nil
			}
			if initBytes == nil {
				initBytes = segInit
				if err := vid.write(exportInit(info, f.base)); err != nil {
					return err
				}
				part.Video.InitSize = vid.n
				part.Start = timeOfTicks(f.base)
			} else if string(initBytes) != string(segInit) {
				return fmt.Errorf("the parameter sets of camera %s change at %s: export the ranges before and after separately", cam, s.Start.Format(time.RFC3339))
			}
			if f.base < lastEnd {
				return fmt.Errorf("chunk %d overlaps the fragment before it", index)
			}
			mc.Offset, mc.Size = vid.n, int64(len(plain))
			if err := vid.write(plain); err != nil {
				return err
			}
			lastEnd = f.base + f.duration
			part.End = timeOfTicks(lastEnd)
			rep.Fragments++
			exported++
			return nil
		}
		err = e.Recordings.Chunks(s.ID, func(index uint64, plain []byte) error {
			if err := handle(index, plain); err != nil {
				return fatalError{err}
			}
			return nil
		})
		if err != nil {
			var fe fatalError
			if errors.As(err, &fe) {
				return part, rep, fmt.Errorf("export %s: segment %x: %w", cam, s.ID, fe.err)
			}
			// The recording cannot be read: say so in the manifest, never hide the segment.
			ms.MediaMissing = err.Error()
			ms.Chunks = nil
			rep.MediaMissing = append(rep.MediaMissing, fmt.Sprintf("camera %s segment %x (%s): %v", cam, s.ID, s.Start.Format(time.RFC3339), err))
			cx.log.Warn("export: segment media unreadable; the export records the gap", "camera", cam, "segment", hex.EncodeToString(s.ID[:]), "err", err)
		}
		if exported > 0 || ms.MediaMissing != "" {
			part.Segments = append(part.Segments, ms)
			rep.Segments++
			if l, err := ParseSegmentLeaf(leaf); err == nil {
				spans = append(spans, gapSpan{start: l.Start, end: l.End, missing: ms.MediaMissing != ""})
			}
		}
	}
	if rep.Fragments == 0 {
		return part, rep, fmt.Errorf("export %s: %w", cam, ErrNothingToExport)
	}
	// The ONVIF seal: sign the file with the signature bytes zeroed, then write them in.
	pub := e.ExportKey.Public().(*rsa.PublicKey)
	oi := onvifInfo{
		UnitName: cx.id.Appliance, UnitURL: e.UnitURL, ExportTime: cx.now, Operator: req.User, TrackID: info.trackID,
		SourceName: cam, SourceURL: part.CameraURL, Start: part.Start, Cert: e.CertDER,
		SigLen: pub.Size(), SaltLen: sha256.Size,
	}
	zeroMeta, _ := onvifMeta(oi, make([]byte, oi.SigLen))
	vid.sealed.Write(zeroMeta)
	sig, err := e.ExportKey.Sign(rand.Reader, vid.sealed.Sum(nil), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	if err != nil {
		return part, rep, fmt.Errorf("export: sign video of %s: %w", cam, err)
	}
	if len(sig) != oi.SigLen {
		return part, rep, fmt.Errorf("export: video signature of %d bytes, want %d", len(sig), oi.SigLen)
	}
	meta, _ := onvifMeta(oi, sig)
	vid.sealed = nil
	if err := vid.write(meta); err != nil {
		return part, rep, fmt.Errorf("export: %w", err)
	}
	part.Video = Video{Name: cx.entry, Size: vid.n, SHA256: hex.EncodeToString(vid.whole.Sum(nil)), InitSize: part.Video.InitSize}
	part.Gaps = computeGaps(req.From, req.To, spans)
	rep.VideoBytes, rep.Start, rep.End, rep.Gaps = vid.n, part.Start, part.End, part.Gaps
	return part, rep, nil
}

var errWrite = errors.New("write export")

// fatalError marks an error of the export itself (not of reading a recording), which stops the export.
type fatalError struct{ err error }

func (f fatalError) Error() string { return f.err.Error() }
func (f fatalError) Unwrap() error { return f.err }

// videoWriter writes video.mp4 into the zip, hashing it whole and for the ONVIF seal.
type videoWriter struct {
	w      io.Writer
	whole  hash.Hash
	sealed hash.Hash
	n      int64
}

func (v *videoWriter) write(b []byte) error {
	if _, err := v.w.Write(b); err != nil {
		return fmt.Errorf("%w: %w", errWrite, err)
	}
	v.whole.Write(b)
	if v.sealed != nil {
		v.sealed.Write(b)
	}
	v.n += int64(len(b))
	return nil
}

// parseFragment reads the timing of a whole recorded fragment (moof+mdat).
func parseFragment(b []byte, defDuration uint32) (fragmentInfo, error) {
	boxes, err := parseBoxes(b)
	if err != nil {
		return fragmentInfo{}, err
	}
	if len(boxes) != 2 || boxes[0].typ != "moof" || boxes[1].typ != "mdat" {
		return fragmentInfo{}, fmt.Errorf("%w: fragment is not moof+mdat", ErrFormat)
	}
	return parseMoof(boxes[0].payload, defDuration)
}

// TimeScale is the recording timeline's clock: 90 kHz since the Unix epoch.
const TimeScale = 90000

func ticksOf(t time.Time) int64 {
	return t.Unix()*TimeScale + int64(t.Nanosecond())*TimeScale/int64(time.Second)
}

func timeOfTicks(t int64) time.Time {
	return time.Unix(t/TimeScale, (t%TimeScale)*int64(time.Second)/TimeScale).UTC()
}

func hexHashes(hs [][32]byte) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}
