package appliance

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/camera"
	"github.com/edgenvr/nvr/appliance/ingest"
)

// Alarm is one alarm the appliance raised or cleared: from a camera (tamper, signal loss, video loss, a
// swapped camera), from the network wall, or from the appliance itself.
type Alarm struct {
	Time   time.Time
	Camera string
	Kind   string
	Active bool
	Detail string
}

// alarms keeps the most recent alarms for the dashboard and the display.
type alarms struct {
	mu   sync.Mutex
	list []Alarm
	log  *slog.Logger
}

const keepAlarms = 200

func (l *alarms) raise(a Alarm) {
	if a.Time.IsZero() {
		a.Time = time.Now()
	}
	l.log.Warn("alarm", "camera", a.Camera, "kind", a.Kind, "active", a.Active, "detail", a.Detail)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, a)
	if len(l.list) > keepAlarms {
		l.list = append([]Alarm(nil), l.list[len(l.list)-keepAlarms:]...)
	}
}

func (l *alarms) recent() []Alarm {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Alarm(nil), l.list...)
}

// cameraFleet ties the ONVIF camera manager to the recording pipelines: an adopted camera is recorded with
// its current (generated) credentials, a new password restarts its pipeline, and a quarantined (swapped) or
// forgotten camera stops being recorded at once.
type cameraFleet struct {
	m       *camera.Manager
	pl      *pipelines
	log     *slog.Logger
	changes chan string
	audit   accountAudit
}

func newCameraFleet(cfg *Config, sealer camera.Sealer, pl *pipelines, al *alarms, log *slog.Logger) (*cameraFleet, error) {
	f := &cameraFleet{pl: pl, log: log, changes: make(chan string, 256)}
	f.audit.log = log
	m, err := camera.New(camera.Config{
		Dir:            filepath.Join(cfg.DataDir, "cameras"),
		Sealer:         sealer,
		Interface:      cfg.CameraInterface,
		AllowPlainHTTP: cfg.AllowPlainHTTPCameras,
		Audit:          f.audit.event,
		Alarm: func(a camera.Alarm) {
			al.raise(Alarm{Time: a.Time, Camera: a.Camera, Kind: string(a.Kind), Active: a.Active, Detail: a.Detail})
		},
		Changed: func(id string) {
			select {
			case f.changes <- id:
			default:
				// The reconciler is far behind; it re-reads every camera when it catches up.
				log.Warn("camera changes queue full; resynchronising all cameras")
				select {
				case f.changes <- "":
				default:
				}
			}
		},
	}, log)
	if err != nil {
		return nil, err
	}
	f.m = m
	return f, nil
}

// run starts recording every adopted camera, then follows changes until ctx ends.
func (f *cameraFleet) run(ctx context.Context) error {
	f.syncAll()
	errc := make(chan error, 1)
	go func() { errc <- f.m.Run(ctx) }()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case id := <-f.changes:
			if id == "" {
				f.syncAll()
			} else {
				f.sync(id)
			}
		}
	}
}

func (f *cameraFleet) syncAll() {
	for _, c := range f.m.Cameras() {
		f.sync(c.ID)
	}
}

// sync starts, restarts or stops the pipeline of one adopted camera to match the manager.
func (f *cameraFleet) sync(id string) {
	src, err := f.m.Source(id)
	if err != nil {
		if !errors.Is(err, camera.ErrQuarantined) {
			f.log.Info("camera not recorded", "camera", id, "why", err)
		}
		f.pl.stop(id)
		return
	}
	if err := f.pl.start(Camera{Name: id, URL: src.URL, Username: src.Username, Password: src.Password}); err != nil {
		f.log.Error("cannot record adopted camera", "camera", id, "err", err)
	}
}

// event passes the ingest's stream events (video loss) to the manager's alarms.
func (f *cameraFleet) event(e ingest.Event) { f.m.HandleIngestEvent(e) }

// maxHeldAccountEvents bounds the camera account events held until the audit log opens.
const maxHeldAccountEvents = 512

// accountAudit passes the camera manager's account actions (accounts deleted, secured, left unsecured,
// kept, enforced) to the audit log. The manager starts before the audit log (authz opens with the web
// server), so events are held, bounded, until the log is attached; each is also in the manager's log.
type accountAudit struct {
	mu   sync.Mutex
	sink func(camera.AccountEvent)
	held []camera.AccountEvent
	lost int
	log  *slog.Logger
}

func (a *accountAudit) event(ev camera.AccountEvent) {
	a.mu.Lock()
	sink := a.sink
	if sink == nil {
		if len(a.held) >= maxHeldAccountEvents {
			a.held = a.held[1:]
			a.lost++
		}
		a.held = append(a.held, ev)
	}
	a.mu.Unlock()
	if sink != nil {
		sink(ev)
	}
}

// auditLog is the part of *authz.Service the camera account events go to.
type auditLog interface {
	Event(subject authz.Subject, action, object, result, reason, source string)
}

// attach sends the held events and every later one to az's audit log, until the returned detach is
// called (before az closes).
func (a *accountAudit) attach(az auditLog) (detach func()) {
	sink := func(ev camera.AccountEvent) {
		reason := ev.Detail
		if ev.Cause != "" {
			reason = strings.TrimSpace(ev.Cause + ": " + reason)
		}
		if ev.Level != "" {
			reason += " (level " + ev.Level + ")"
		}
		az.Event(authz.Subject{User: ev.By, Via: "camera-manager"}, "camera.account-"+ev.Action,
			"camera/"+ev.Camera+"/account/"+ev.Account, ev.Result, reason, "")
	}
	a.mu.Lock()
	held, lost := a.held, a.lost
	a.held, a.lost, a.sink = nil, 0, sink
	a.mu.Unlock()
	if lost > 0 && a.log != nil {
		a.log.Warn("camera account events dropped before the audit log opened (they are in this log)", "dropped", lost)
	}
	for _, ev := range held {
		sink(ev)
	}
	return func() {
		a.mu.Lock()
		a.sink = nil
		a.mu.Unlock()
	}
}

// auditCameraAccounts connects the camera manager's account actions to the audit log of az; the returned
// function disconnects them and must run before az closes. runAccess calls it once authz is open:
//
//	defer a.auditCameraAccounts(az)()
func (a *Appliance) auditCameraAccounts(az *authz.Service) func() {
	a.mu.Lock()
	f := a.fleet
	a.mu.Unlock()
	if f == nil {
		return func() {}
	}
	return f.audit.attach(az)
}
