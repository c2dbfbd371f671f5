// Package appliance wires the NVR together: the TPM, the index, start-up recovery, retention and one
// recording pipeline (ingest → record → vault → store) per camera. It owns the order of start and stop:
// recover before recording, stop ingest before closing segments, close the index last. It holds no logic of
// its own that a lower package could own.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/board"
	"github.com/edgenvr/nvr/netconfig"
	"github.com/edgenvr/nvr/tpm"
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

	// Network, if set, is the camera network the appliance walls off and serves (netconfig). Nil: the
	// cameras' network is managed elsewhere (make run, tests).
	Network *netconfig.ManagerConfig

	// CameraInterface is the camera network interface ONVIF discovery probes go out on.
	CameraInterface string
	// AllowPlainHTTPCameras permits adopting cameras without HTTPS (their new password then crosses the
	// camera network in clear).
	AllowPlainHTTPCameras bool

	// WebListen is the HTTPS address of the web pages and API, such as 127.0.0.1:8443. Empty: no web server
	// (and no local display).
	WebListen string
	// Bridge is the RTSP(S) bridge for external systems; off when both listeners are empty. It runs with the
	// web server (whose accounts and TLS key it shares).
	Bridge BridgeConfig
	// Board is the hardware profile: its display and buttons show status and the first-boot setup code.
	Board board.Profile
	// Console is where a console display writes (default standard error).
	Console io.Writer

	// Ready, if set, is called once recovery is done and every camera pipeline has started.
	Ready func()
}

// Appliance is a running NVR.
type Appliance struct {
	cfg Config
	log *slog.Logger

	// webListening is called once the web server accepts connections.
	webListening func()

	mu     sync.Mutex
	pl     *pipelines
	fleet  *cameraFleet
	alarms *alarms
	health pipelineHealth
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
	return &Appliance{cfg: cfg, log: log}, nil
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
	ret := newRetainer(a, db)

	// Pipelines stop first; retention and the checkpoint signer keep running until every segment is sealed.
	retCtx, stopRet := context.WithCancel(context.Background())
	defer stopRet()
	retDone := make(chan error, 1)
	go func() { retDone <- ret.run(retCtx, a.cfg.RetentionEvery, kick) }()

	pl := newPipelines(ctx, a.log, &a.cfg, vaultKey, db, needSpace, func(s store.Segment) {
		logSegment(a.log, s)
		if _, err := ev.LogSegment(s); err != nil {
			// The segment stays final and unlogged; the next start logs it (reconcileLog).
			a.log.Error("evidence log append failed", "camera", s.Camera, "err", err)
		}
	}, nil)
	al := &alarms{log: a.log.With("part", "alarms")}
	netDone := func() error { return nil }
	if a.cfg.Network != nil {
		netCtx, stopNet := context.WithCancel(ctx)
		defer stopNet()
		if netDone, err = a.runNetwork(netCtx, al); err != nil {
			return err
		}
	}
	fleet, err := newCameraFleet(&a.cfg, dev, pl, al, a.log.With("part", "camera"))
	if err != nil {
		return fmt.Errorf("cameras: %w", err)
	}
	pl.onEvent = fleet.event
	a.mu.Lock()
	a.pl, a.fleet, a.alarms = pl, fleet, al
	a.mu.Unlock()
	for _, c := range a.cfg.Cameras {
		if err := pl.start(c); err != nil {
			pl.stopAll()
			return err
		}
	}
	// Adopted cameras start recording from the fleet; it stops before the pipelines so that nothing restarts
	// a pipeline while they are being sealed.
	fleetCtx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.run(fleetCtx) }()

	webDone := make(chan error, 1)
	webUp := make(chan struct{})
	if a.cfg.WebListen != "" {
		webCtx, stopWeb := context.WithCancel(ctx)
		defer stopWeb()
		var once sync.Once
		a.webListening = func() { once.Do(func() { close(webUp) }) }
		go func() {
			err := a.runAccess(webCtx, dev, db, ev)
			if err != nil && webCtx.Err() == nil {
				a.log.Error("web server stopped", "err", err)
			}
			webDone <- err
		}()
	} else {
		close(webUp)
		webDone <- nil
	}

	a.log.Info("recording", "cameras", len(a.cfg.Cameras)+len(fleet.m.Cameras()), "data", a.cfg.DataDir)
	// Ready means storage, the TPM, the pipelines and the web pages are up. A web server that cannot start
	// (its address taken) is a configuration error: the daemon stops and says so.
	var startErr error
	webFailed := (<-chan error)(webDone)
	if a.cfg.WebListen == "" {
		webFailed = nil // no web server: nothing can fail to start
	}
	select {
	case <-webUp:
		if a.cfg.Ready != nil {
			a.cfg.Ready()
		}
		<-ctx.Done()
	case werr := <-webFailed:
		webDone <- werr // for the shutdown below
		if ctx.Err() == nil {
			startErr = errors.New("web server could not start")
			if werr != nil {
				startErr = fmt.Errorf("web server could not start: %w", werr)
			}
			a.log.Error("stopping", "err", startErr)
		}
	case <-ctx.Done():
	}
	a.log.Info("stopping: closing segments")
	stopFleet()
	ferr := <-fleetDone
	aerr := <-webDone
	werr := errors.Join(pl.stopAll(), ferr, aerr, netDone())
	stopRet()
	rerr := <-retDone
	stopCk()
	cerr := <-ckDone
	a.log.Info("stopped")
	return errors.Join(startErr, werr, rerr, cerr)
}

// Status returns each recording camera's status.
func (a *Appliance) Status() map[string]record.Status {
	a.mu.Lock()
	pl := a.pl
	a.mu.Unlock()
	if pl == nil {
		return nil
	}
	return pl.status()
}

// Live subscribes to a recording camera's fragments as they are written: the init segment first, then
// fragments from the next key frame on. The caller must call cancel. Access decisions are the caller's
// (through authz) before it subscribes.
func (a *Appliance) Live(camera string) (<-chan record.LiveFragment, func(), error) {
	a.mu.Lock()
	pl := a.pl
	a.mu.Unlock()
	if pl == nil {
		return nil, nil, errors.New("appliance is not running")
	}
	return pl.subscribe(camera)
}

// Alarms returns the most recent alarms, oldest first.
func (a *Appliance) Alarms() []Alarm {
	a.mu.Lock()
	al := a.alarms
	a.mu.Unlock()
	if al == nil {
		return nil
	}
	return al.recent()
}

// Healthy reports whether every camera pipeline is alive: it wrote a fragment within maxAge, or it keeps
// reporting its camera as lost while ingest reconnects (health.go). A wedged pipeline (no progress and no
// events) makes it false: what a watchdog should be fed on. An appliance with no cameras is healthy. It
// returns the names of the cameras that are not.
func (a *Appliance) Healthy(maxAge time.Duration) (bool, []string) {
	return a.health.check(time.Now(), maxAge, a.Status())
}
