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
	Camera   string
	From, To time.Time
	User     string // the exporting operator
	Reason   string
	// Passphrase, if set, encrypts the whole zip with age (scrypt recipient).
	Passphrase []byte
}

// ExportReport says what an export holds.
type ExportReport struct {
	Segments     int
	Fragments    int
	VideoBytes   int64
	Start, End   time.Time
	MediaMissing []string // segments whose recording could not be read
	Checkpoint   Checkpoint
}

// Export writes one evidence export to w: a zip (age-encrypted when a passphrase is given) holding
// video.mp4, manifest.json, manifest.sig, device-cert.pem and checkpoint.txt.
func (e *Exporter) Export(ctx context.Context, req ExportRequest, w io.Writer) (ExportReport, error) {
	var rep ExportReport
	if !req.To.After(req.From) {
		return rep, errors.New("export: the range ends before it starts")
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
	segs, err := e.Recordings.Segments(req.Camera, req.From, req.To)
	if err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	if len(segs) == 0 {
		return rep, fmt.Errorf("export %s: %w", req.Camera, ErrNothingToExport)
	}
	var maxIdx uint64
	for _, s := range segs {
		if s.LogIndex == 0 {
			return rep, fmt.Errorf("export: segment %x of %s (%s) is not in the evidence log yet; retry in a few seconds",
				s.ID, req.Camera, s.Start.Format(time.RFC3339))
		}
		maxIdx = max(maxIdx, s.LogIndex)
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
	vw, err := zw.CreateHeader(&zip.FileHeader{Name: EntryVideo, Method: zip.Store, Modified: now})
	if err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	man := &Manifest{
		Format: ManifestFormat, Appliance: id.Appliance, Camera: req.Camera, CameraURL: e.Recordings.CameraURL(req.Camera),
		From: req.From.UTC(), To: req.To.UTC(), ExportedAt: now, ExportedBy: req.User, Reason: req.Reason,
		Checkpoint: string(signedCkpt),
	}
	vid := &videoWriter{w: vw, whole: sha256.New(), sealed: sha256.New()}
	lo, hi := ticksOf(req.From), ticksOf(req.To)
	var initBytes []byte
	var info initInfo
	var lastEnd int64
	for _, s := range segs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		leaf, err := e.Log.Leaf(s.LogIndex)
		if err != nil {
			return rep, fmt.Errorf("export: %w", err)
		}
		proof, err := e.Log.InclusionProof(s.LogIndex, ckpt.Size)
		if err != nil {
			return rep, fmt.Errorf("export: %w", err)
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
				man.Video.InitSize = vid.n
				man.Start = timeOfTicks(f.base)
			} else if string(initBytes) != string(segInit) {
				return fmt.Errorf("the camera's parameter sets change at %s: export the ranges before and after separately", s.Start.Format(time.RFC3339))
			}
			if f.base < lastEnd {
				return fmt.Errorf("chunk %d overlaps the fragment before it", index)
			}
			mc.Offset, mc.Size = vid.n, int64(len(plain))
			if err := vid.write(plain); err != nil {
				return err
			}
			lastEnd = f.base + f.duration
			man.End = timeOfTicks(lastEnd)
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
				return rep, fmt.Errorf("export: segment %x: %w", s.ID, fe.err)
			}
			// The recording cannot be read: say so in the manifest, never hide the segment.
			ms.MediaMissing = err.Error()
			ms.Chunks = nil
			rep.MediaMissing = append(rep.MediaMissing, fmt.Sprintf("segment %x (%s): %v", s.ID, s.Start.Format(time.RFC3339), err))
			log.Warn("export: segment media unreadable; the export records the gap", "segment", hex.EncodeToString(s.ID[:]), "err", err)
		}
		if exported > 0 || ms.MediaMissing != "" {
			man.Segments = append(man.Segments, ms)
			rep.Segments++
		}
	}
	if rep.Fragments == 0 {
		return rep, fmt.Errorf("export %s: %w", req.Camera, ErrNothingToExport)
	}
	// The ONVIF seal: sign the file with the signature bytes zeroed, then write them in.
	pub := e.ExportKey.Public().(*rsa.PublicKey)
	oi := onvifInfo{
		UnitName: id.Appliance, UnitURL: e.UnitURL, ExportTime: now, Operator: req.User, TrackID: info.trackID,
		SourceName: req.Camera, SourceURL: man.CameraURL, Start: man.Start, Cert: e.CertDER,
		SigLen: pub.Size(), SaltLen: sha256.Size,
	}
	zeroMeta, _ := onvifMeta(oi, make([]byte, oi.SigLen))
	vid.sealed.Write(zeroMeta)
	sig, err := e.ExportKey.Sign(rand.Reader, vid.sealed.Sum(nil), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	if err != nil {
		return rep, fmt.Errorf("export: sign video: %w", err)
	}
	if len(sig) != oi.SigLen {
		return rep, fmt.Errorf("export: video signature of %d bytes, want %d", len(sig), oi.SigLen)
	}
	meta, _ := onvifMeta(oi, sig)
	vid.sealed = nil
	if err := vid.write(meta); err != nil {
		return rep, fmt.Errorf("export: %w", err)
	}
	man.Video = Video{Name: EntryVideo, Size: vid.n, SHA256: hex.EncodeToString(vid.whole.Sum(nil)), InitSize: man.Video.InitSize}
	rep.VideoBytes, rep.Start, rep.End = vid.n, man.Start, man.End

	mb, err := man.Marshal()
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
