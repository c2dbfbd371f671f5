package appliance

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
)

// pipelines owns the recording pipeline (ingest → record) of every camera: those named at start and those
// adopted, changed or forgotten while the appliance runs. Each pipeline is a goroutine that stops with its
// own context and seals its open segment before it returns.
type pipelines struct {
	log       *slog.Logger
	cfg       *Config
	vaultKey  *ecdh.PublicKey
	db        *store.DB
	needSpace func()
	onSegment func(store.Segment)
	onEvent   func(ingest.Event)

	mu      sync.Mutex
	ctx     context.Context // parent of every pipeline; nil once stopping
	running map[string]*pipeline
	wg      sync.WaitGroup
	errs    []error
}

type pipeline struct {
	cam    Camera
	rec    *record.Recorder
	in     *ingest.Camera
	cancel context.CancelFunc
	done   chan struct{}
}

func newPipelines(ctx context.Context, log *slog.Logger, cfg *Config, vaultKey *ecdh.PublicKey, db *store.DB,
	needSpace func(), onSegment func(store.Segment), onEvent func(ingest.Event)) *pipelines {
	return &pipelines{
		log: log, cfg: cfg, vaultKey: vaultKey, db: db, needSpace: needSpace, onSegment: onSegment,
		onEvent: onEvent, ctx: ctx, running: map[string]*pipeline{},
	}
}

// start records c, replacing a running pipeline of the same name (a new password, a new address): the old
// one seals its segment first.
func (p *pipelines) start(c Camera) error {
	if !record.ValidCameraName(c.Name) {
		return fmt.Errorf("camera name %q: use letters, digits, _ and - (at most 64)", c.Name)
	}
	p.stop(c.Name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil {
		return errors.New("appliance is stopping")
	}
	if err := p.db.PutCamera(store.Camera{Name: c.Name, URL: c.URL}); err != nil {
		return fmt.Errorf("index camera %s: %w", c.Name, err)
	}
	rec, err := record.New(record.Config{
		Camera:           c.Name,
		DataDir:          p.cfg.DataDir,
		SegmentDuration:  p.cfg.SegmentDuration,
		FragmentDuration: p.cfg.FragmentDuration,
		VaultKey:         p.vaultKey,
		Index:            p.db,
		NeedSpace:        p.needSpace,
		OnSegment:        p.onSegment,
	}, p.log.With("part", "record"))
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
		VideoLossAfter: p.cfg.VideoLossAfter,
	}, p.log.With("part", "ingest"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(p.ctx)
	pl := &pipeline{cam: c, rec: rec, in: in, cancel: cancel, done: make(chan struct{})}
	p.running[c.Name] = pl
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(pl.done)
		runErr := in.Run(ctx, handler{rec: rec, log: p.log.With("camera", c.Name), onEvent: p.onEvent})
		// Ingest has stopped and delivered everything it received: seal the open segment.
		if err := errors.Join(runErr, rec.Close()); err != nil {
			p.mu.Lock()
			p.errs = append(p.errs, fmt.Errorf("camera %s: %w", c.Name, err))
			p.mu.Unlock()
		}
	}()
	return nil
}

// stop ends a camera's pipeline and waits until its segment is sealed. Unknown names are ignored.
func (p *pipelines) stop(name string) {
	p.mu.Lock()
	pl := p.running[name]
	delete(p.running, name)
	p.mu.Unlock()
	if pl != nil {
		pl.cancel()
		<-pl.done
	}
}

// stopAll ends every pipeline, refuses new ones, waits for every segment to be sealed and returns what
// went wrong.
func (p *pipelines) stopAll() error {
	p.mu.Lock()
	p.ctx = nil
	for _, pl := range p.running {
		pl.cancel()
	}
	p.running = map[string]*pipeline{}
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.errs...)
}

// status returns each running camera's recorder status.
func (p *pipelines) status() map[string]record.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]record.Status, len(p.running))
	for n, pl := range p.running {
		out[n] = pl.rec.Status()
	}
	return out
}

// handler hands units to the recorder, and logs stream events and passes them on as they happen.
type handler struct {
	rec     *record.Recorder
	log     *slog.Logger
	onEvent func(ingest.Event)
}

func (h handler) Unit(u *ingest.Unit) { h.rec.Unit(u) }

func (h handler) Event(ev ingest.Event) {
	attrs := []any{"event", ev.Kind.String()}
	if ev.Err != nil {
		attrs = append(attrs, "err", ev.Err)
	}
	if ev.Count > 0 {
		attrs = append(attrs, "count", ev.Count)
	}
	h.log.Info("camera event", attrs...)
	h.rec.Event(ev)
	if h.onEvent != nil {
		h.onEvent(ev)
	}
}

// logSegment is the default segment observer: a log line per closed segment.
func logSegment(log *slog.Logger, s store.Segment) {
	log.Info("segment closed", "camera", s.Camera, "start", s.Start.Format(time.RFC3339Nano),
		"end", s.End.Format(time.RFC3339Nano), "chunks", s.Chunks, "bytes", s.Bytes)
}

// subscribe returns a live subscription to a recording camera's fragments.
func (p *pipelines) subscribe(name string) (<-chan record.LiveFragment, func(), error) {
	p.mu.Lock()
	pl := p.running[name]
	p.mu.Unlock()
	if pl == nil {
		return nil, nil, fmt.Errorf("camera %s is not recording", name)
	}
	ch, cancel := pl.rec.Subscribe()
	return ch, cancel, nil
}
