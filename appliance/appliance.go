// Package appliance wires the NVR together: the TPM, the index, start-up recovery, retention and one
// recording pipeline (ingest → record → vault → store) per camera. It owns the order of start and stop:
// recover before recording, stop ingest before closing segments, close the index last. It holds no logic of
// its own that a lower package could own.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/tpm"
	"golang.org/x/sync/errgroup"
)

// Camera is one camera to record.
type Camera struct {
	Name               string
	URL                string // rtsp:// or rtsps://, without credentials
	Username, Password string
	Transport          string // "tcp", "udp" or "" for automatic
	// PinnedCert is the DER certificate an rtsps:// camera must present (pinned at adoption).
	PinnedCert []byte
}

// Config is everything the appliance needs to run.
type Config struct {
	DataDir string
	// TPM is the TPM device: a path such as /dev/tpmrm0, swtpm:HOST:PORT or swtpm:unix:PATH.
	TPM     string
	Cameras []Camera

	SegmentDuration  time.Duration // default 60 s
	FragmentDuration time.Duration // default 1 s
	VideoLossAfter   time.Duration // default 5 s

	Retention      store.RetentionPolicy
	RetentionEvery time.Duration // default 10 s

	// CheckpointEvery is how often the evidence log signs a checkpoint (one TPM signature for all
	// cameras). Default 5 s.
	CheckpointEvery time.Duration

	// Ready, if set, is called once recovery is done and every camera pipeline has started.
	Ready func()
}

// Appliance is a running NVR.
type Appliance struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	recorders map[string]*record.Recorder
	ingests   map[string]*ingest.Camera
}

// New checks the configuration.
func New(cfg Config, log *slog.Logger) (*Appliance, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("appliance: no data directory")
	}
	if cfg.TPM == "" {
		return nil, errors.New("appliance: no TPM device")
	}
	seen := map[string]bool{}
	for _, c := range cfg.Cameras {
		if !record.ValidCameraName(c.Name) {
			return nil, fmt.Errorf("appliance: camera name %q: use letters, digits, _ and - (at most 64)", c.Name)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("appliance: camera %s named twice", c.Name)
		}
		seen[c.Name] = true
	}
	if cfg.RetentionEvery <= 0 {
		cfg.RetentionEvery = 10 * time.Second
	}
	if cfg.Retention.HighWater == 0 {
		cfg.Retention.HighWater, cfg.Retention.LowWater = 0.90, 0.85
	}
	return &Appliance{cfg: cfg, log: log, recorders: map[string]*record.Recorder{}, ingests: map[string]*ingest.Camera{}}, nil
}

// Run starts the appliance and runs it until ctx ends, then stops it in order. A kill at any instant is
// recovered by the next Run.
func (a *Appliance) Run(ctx context.Context) (err error) {
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	dev, err := tpm.Open(a.cfg.TPM, a.log.With("part", "tpm"))
	if err != nil {
		return fmt.Errorf("open TPM: %w", err)
	}
	defer func() {
		if cerr := dev.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close TPM: %w", cerr)
		}
	}()
	vaultKey, err := dev.VaultKey()
	if err != nil {
		return fmt.Errorf("vault key: %w", err)
	}
	db, err := store.Open(filepath.Join(a.cfg.DataDir, "index.db"), store.Options{Timeout: 5 * time.Second}, a.log.With("part", "store"))
	if err != nil {
		return fmt.Errorf("open index: %w", err)
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close index: %w", cerr)
		}
	}()

	start := time.Now()
	rep, err := record.Recover(a.cfg.DataDir, db, dev, a.log.With("part", "recover"))
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	a.log.Info("recovery done", "repaired", rep.Repaired, "removed", rep.Removed, "orphans", rep.Orphans,
		"truncated_bytes", rep.TruncatedBytes, "took", time.Since(start).Round(time.Millisecond))

	ev, err := OpenEvidence(a.cfg.DataDir, dev, db, a.cfg.CheckpointEvery, a.log.With("part", "evidence"))
	if err != nil {
		return fmt.Errorf("evidence: %w", err)
	}
	defer func() {
		if cerr := ev.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close evidence keys: %w", cerr)
		}
	}()
	// The checkpoint signer outlives the recorders, so its last checkpoint covers the last segments.
	ckCtx, stopCk := context.WithCancel(context.Background())
	defer stopCk()
	ckDone := make(chan error, 1)
	go func() { ckDone <- runEvidence(ckCtx, ev) }()

	kick := make(chan struct{}, 1)
	needSpace := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	ret := store.NewRetention(db, a.cfg.DataDir, a.cfg.Retention, nil, nil, a.log.With("part", "retention"))

	// Ingest stops with camCtx; retention keeps running until every segment is closed.
	g, gctx := errgroup.WithContext(ctx)
	camCtx, stopCams := context.WithCancel(gctx)
	defer stopCams()
	retCtx, stopRet := context.WithCancel(context.Background())
	defer stopRet()
	retDone := make(chan error, 1)
	go func() { retDone <- a.retention(retCtx, ret, kick) }()

	for _, c := range a.cfg.Cameras {
		if err := db.PutCamera(store.Camera{Name: c.Name, URL: c.URL}); err != nil {
			return fmt.Errorf("index camera %s: %w", c.Name, err)
		}
		rec, err := record.New(record.Config{
			Camera:           c.Name,
			DataDir:          a.cfg.DataDir,
			SegmentDuration:  a.cfg.SegmentDuration,
			FragmentDuration: a.cfg.FragmentDuration,
			VaultKey:         vaultKey,
			Index:            db,
			NeedSpace:        needSpace,
			OnSegment: func(s store.Segment) {
				a.log.Info("segment closed", "camera", s.Camera, "start", s.Start.Format(time.RFC3339Nano),
					"end", s.End.Format(time.RFC3339Nano), "chunks", s.Chunks, "bytes", s.Bytes)
				if _, err := ev.LogSegment(s); err != nil {
					// The segment stays final and unlogged; the next start logs it (reconcileLog).
					a.log.Error("evidence log append failed", "camera", s.Camera, "err", err)
				}
			},
		}, a.log.With("part", "record"))
		if err != nil {
			return err
		}
		in, err := ingest.New(ingest.Config{
			Name:           c.Name,
			URL:            c.URL,
			Username:       c.Username,
			Password:       c.Password,
			Transport:      c.Transport,
			PinnedCert:     c.PinnedCert,
			VideoLossAfter: a.cfg.VideoLossAfter,
		}, a.log.With("part", "ingest"))
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.recorders[c.Name] = rec
		a.ingests[c.Name] = in
		a.mu.Unlock()
		g.Go(func() error {
			runErr := in.Run(camCtx, eventLogger{rec: rec, log: a.log.With("camera", c.Name)})
			// Ingest has stopped and delivered everything it received: seal the open segment.
			closeErr := rec.Close()
			return errors.Join(runErr, closeErr)
		})
	}
	a.log.Info("recording", "cameras", len(a.cfg.Cameras), "data", a.cfg.DataDir)
	if a.cfg.Ready != nil {
		a.cfg.Ready()
	}
	<-ctx.Done()
	a.log.Info("stopping: closing segments")
	stopCams()
	werr := g.Wait()
	stopRet()
	rerr := <-retDone
	stopCk()
	cerr := <-ckDone
	a.log.Info("stopped")
	return errors.Join(werr, rerr, cerr)
}

// retention runs a retention pass on a timer and whenever a recorder ran out of space.
func (a *Appliance) retention(ctx context.Context, ret *store.Retention, kick <-chan struct{}) error {
	t := time.NewTicker(a.cfg.RetentionEvery)
	defer t.Stop()
	for {
		res, err := ret.RunOnce(time.Now())
		if err != nil {
			a.log.Error("retention pass failed", "err", err)
		} else if res.AgeDeleted+res.SpaceDeleted > 0 || res.SpaceShort {
			a.log.Info("retention", "age_deleted", res.AgeDeleted, "space_deleted", res.SpaceDeleted,
				"freed_bytes", res.FreedBytes, "space_short", res.SpaceShort)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-kick:
		}
	}
}

// Status returns each camera's recorder status.
func (a *Appliance) Status() map[string]record.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]record.Status, len(a.recorders))
	for n, r := range a.recorders {
		out[n] = r.Status()
	}
	return out
}

// eventLogger hands units to the recorder and logs stream events as they happen.
type eventLogger struct {
	rec *record.Recorder
	log *slog.Logger
}

func (e eventLogger) Unit(u *ingest.Unit) { e.rec.Unit(u) }

func (e eventLogger) Event(ev ingest.Event) {
	attrs := []any{"event", ev.Kind.String()}
	if ev.Err != nil {
		attrs = append(attrs, "err", ev.Err)
	}
	if ev.Count > 0 {
		attrs = append(attrs, "count", ev.Count)
	}
	e.log.Info("camera event", attrs...)
	e.rec.Event(ev)
}

// Healthy reports whether every camera pipeline wrote a fragment within maxAge: what a watchdog should be
// fed on. An appliance with no cameras is healthy. It returns the names of the cameras that are not.
func (a *Appliance) Healthy(maxAge time.Duration) (bool, []string) {
	now := time.Now()
	var stale []string
	for name, st := range a.Status() {
		if now.Sub(st.LastWrite) > maxAge {
			stale = append(stale, name)
		}
	}
	return len(stale) == 0, stale
}
