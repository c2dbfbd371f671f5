package appliance

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
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

// AuditAnchor returns the audit log's anchor (authz.Config.Anchor): each audit checkpoint appends the audit
// chain head to the evidence log as an audit leaf, which the log's next TPM-signed checkpoint (every few
// seconds) covers; no TPM signature per audit checkpoint.
//
// When the evidence log cannot take the leaf (the index fails: a full or failing disk), the audit log does
// not stop and does not go unprotected: the anchor falls back to a checkpoint signed by the same TPM log key
// and written into the audit log itself (what the audit log did before the evidence log existed), logs the
// failure, and the next anchor that succeeds covers everything before it, the fallback period included.
// Access control keeps working: refusing every login and live view because the index is sick would blind
// the operators exactly when something is wrong, and no audit entry is lost or left unsigned either way.
// `nvr audit verify` says which entries are covered by what.
func (ev *Evidence) AuditAnchor(log *slog.Logger) authz.Anchor {
	return &auditAnchor{lg: ev.Log, fallback: authz.SignerAnchor{Signer: ev.LogKey}, log: log}
}

type auditAnchor struct {
	lg       *evidence.Log
	fallback authz.Anchor
	log      *slog.Logger
	checked  bool // the first anchor compared the audit log with the last one
}

// Anchor implements authz.Anchor. It is called under the audit log's lock, so never concurrently.
func (a *auditAnchor) Anchor(size uint64, head string, t time.Time) (*authz.Checkpoint, error) {
	h, err := hex.DecodeString(head)
	if err != nil || len(h) != 32 {
		return nil, fmt.Errorf("audit anchor: head %.16q is not a SHA-256", head)
	}
	if !a.checked {
		a.checked = true
		a.checkContinues(size)
	}
	idx, err := a.lg.AppendAudit(size, [32]byte(h), t)
	if err == nil {
		a.log.Debug("audit anchored in the evidence log", "entries", size, "leaf", idx)
		return nil, nil
	}
	a.log.Error("the evidence log could not anchor the audit log; signing a checkpoint into the audit log instead", "entries", size, "err", err)
	cp, ferr := a.fallback.Anchor(size, head, t)
	if ferr != nil {
		return nil, errors.Join(err, ferr)
	}
	return cp, nil
}

// checkContinues warns, loudly, when the audit log holds fewer entries than the evidence log last anchored:
// it was truncated or replaced while the appliance was stopped. (`nvr audit verify` proves which entries.)
func (a *auditAnchor) checkContinues(size uint64) {
	last, idx, ok, err := a.lg.LastAudit()
	switch {
	case err != nil:
		a.log.Error("reading the last audit anchor", "err", err)
	case ok && last.Size > size:
		a.log.Error("the audit log is shorter than the evidence log last anchored: it was truncated or replaced; run nvr audit verify",
			"anchored_entries", last.Size, "anchored_at", last.Time, "leaf", idx, "entries", size)
	}
}

// runEvidence runs the checkpoint signer until ctx ends.
func runEvidence(ctx context.Context, ev *Evidence) error { return ev.Log.Run(ctx) }
