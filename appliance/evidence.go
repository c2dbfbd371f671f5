package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/edgenvr/nvr/appliance/evidence"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
	"github.com/edgenvr/nvr/tpm"
)

// DeviceCertFile is where the appliance writes its device certificate (public) for operators to hand to
// whoever verifies its exports.
const DeviceCertFile = "device-cert.pem"

const metaDeviceCert = "device-cert"

// Evidence is the appliance's evidence side: the TPM's log and export keys, the device certificate and
// the log. Close releases the keys.
type Evidence struct {
	Log       *evidence.Log
	LogKey    *tpm.SigningKey
	ExportKey *tpm.SigningKey
	CertDER   []byte
	Appliance string
}

// OpenEvidence loads the TPM's log and export keys (creating them at first start), makes or reads the
// device certificate (kept in the index and written to DATA/device-cert.pem), opens the evidence log and
// logs every final segment that is not logged yet (closed by a recorder killed before it could log it,
// or closed by crash recovery).
func OpenEvidence(dataDir string, dev *tpm.TPM, db *store.DB, interval time.Duration, log *slog.Logger) (_ *Evidence, err error) {
	ev := &Evidence{}
	defer func() {
		if err != nil {
			err = errors.Join(err, ev.Close())
		}
	}()
	if ev.LogKey, err = dev.LogKey(); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	if ev.ExportKey, err = dev.ExportKey(); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	cert, err := db.EvidenceMeta(metaDeviceCert)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	if cert != nil {
		id, err := evidence.ParseDeviceCert(cert)
		if err != nil || !id.ExportKey.Equal(ev.ExportKey.Public()) || !id.LogKey.Equal(ev.LogKey.Public()) {
			log.Warn("the stored device certificate does not name this TPM's keys; making a new one", "err", err)
			cert = nil
		}
	}
	if cert == nil {
		if cert, err = evidence.NewDeviceCert(ev.ExportKey, ev.LogKey, time.Now()); err != nil {
			return nil, fmt.Errorf("evidence: %w", err)
		}
		if err := db.PutEvidenceMeta(metaDeviceCert, cert); err != nil {
			return nil, fmt.Errorf("evidence: %w", err)
		}
	}
	ev.CertDER = cert
	id, err := evidence.ParseDeviceCert(cert)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	ev.Appliance = id.Appliance
	if err := writeFileAtomic(filepath.Join(dataDir, DeviceCertFile), evidence.CertPEM(cert)); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	lfp, _ := evidence.KeyFingerprint(ev.LogKey.Public())
	efp, _ := evidence.KeyFingerprint(ev.ExportKey.Public())
	ev.Log, err = evidence.New(evidence.Config{
		Store: db, Key: ev.LogKey, Appliance: ev.Appliance,
		LogKeyFingerprint: lfp, ExportKeyFingerprint: efp, Interval: interval,
	}, log)
	if err != nil {
		return nil, err
	}
	n, err := reconcileLog(db, ev.Log)
	if err != nil {
		return nil, err
	}
	log.Info("evidence log open", "appliance", ev.Appliance, "entries", ev.Log.Size(), "logged_at_start", n)
	return ev, nil
}

// Close releases the TPM keys.
func (ev *Evidence) Close() error {
	var errs []error
	if ev.LogKey != nil {
		errs = append(errs, ev.LogKey.Close())
	}
	if ev.ExportKey != nil {
		errs = append(errs, ev.ExportKey.Close())
	}
	return errors.Join(errs...)
}

// LogSegment appends a closed segment to the log.
func (ev *Evidence) LogSegment(s store.Segment) (uint64, error) {
	return ev.Log.Append(SegmentEntry(s))
}

// SegmentEntry converts an index record into a log entry.
func SegmentEntry(s store.Segment) evidence.Segment {
	return evidence.Segment{ID: s.ID, Camera: s.Camera, Start: s.Start, End: s.End, Chunks: s.Chunks,
		Init: s.InitHash, Chain: s.Chain, Recovered: s.State == store.StateRecovered}
}

// reconcileLog logs, camera by camera in start order, every final segment from the camera's last logged
// one on that has no log position.
func reconcileLog(db *store.DB, lg *evidence.Log) (int, error) {
	cams, err := db.Cameras()
	if err != nil {
		return 0, fmt.Errorf("evidence: %w", err)
	}
	far := time.Unix(0, math.MaxInt64)
	n := 0
	for _, c := range cams {
		from, ok, err := lg.LastLogged(c.Name)
		if err != nil {
			return n, err
		}
		if !ok {
			from = time.Unix(0, 1)
		}
		segs, err := db.Segments(c.Name, from, far)
		if err != nil {
			return n, fmt.Errorf("evidence: %w", err)
		}
		for _, s := range segs {
			if s.State == store.StateOpen || s.LogIndex != 0 {
				continue
			}
			if _, err := lg.Append(SegmentEntry(s)); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Recordings reads a data directory's recordings for evidence exports: the index for segments, the
// vault (with the TPM's ECDH) for their authenticated plaintext.
type Recordings struct {
	DataDir string
	DB      *store.DB
	Keys    vault.Unwrapper
}

// Segments implements evidence.Recordings.
func (r Recordings) Segments(camera string, from, to time.Time) ([]evidence.RecordedSegment, error) {
	segs, err := r.DB.Segments(camera, from, to)
	if err != nil {
		return nil, err
	}
	var out []evidence.RecordedSegment
	for _, s := range segs {
		if s.State == store.StateOpen {
			continue
		}
		out = append(out, evidence.RecordedSegment{ID: s.ID, Start: s.Start, End: s.End, LogIndex: s.LogIndex})
	}
	return out, nil
}

// Chunks implements evidence.Recordings.
func (r Recordings) Chunks(id [16]byte, fn func(uint64, []byte) error) error {
	s, err := r.DB.Segment(id)
	if err != nil {
		return err
	}
	vr, err := vault.Open(filepath.Join(r.DataDir, s.Path), r.Keys)
	if err != nil {
		return err
	}
	defer vr.Close()
	if h := vr.Header(); h.SegmentID != s.ID || h.Camera != s.Camera {
		return errors.New("the segment file belongs to another segment or camera")
	}
	for {
		plain, info, err := vr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if info.Final {
			continue
		}
		if err := fn(info.Index, plain); err != nil {
			return err
		}
	}
}

// CameraURL implements evidence.Recordings.
func (r Recordings) CameraURL(camera string) string {
	c, err := r.DB.Camera(camera)
	if err != nil {
		return ""
	}
	return c.URL
}

// runEvidence runs the checkpoint signer until ctx ends.
func runEvidence(ctx context.Context, ev *Evidence) error { return ev.Log.Run(ctx) }
