package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/authz/directory"
	"github.com/edgenvr/nvr/appliance/evidence"
	"github.com/edgenvr/nvr/appliance/lcd"
	"github.com/edgenvr/nvr/appliance/playback"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/web"
	"github.com/edgenvr/nvr/tpm"
	"golang.org/x/sys/unix"
)

// webStatus fills the dashboard from the recorders' status and the data directory's file system.
type webStatus struct {
	a       *Appliance
	dataDir string
}

func (w webStatus) Dashboard() web.Dashboard {
	var d web.Dashboard
	st := w.a.Status()
	names := make([]string, 0, len(st))
	for n := range st {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := st[n]
		state := "recording"
		switch {
		case s.VideoLost:
			state = "video loss"
			d.Alarms = append(d.Alarms, web.Alarm{Time: s.LastWrite, Camera: n, Kind: "video loss", Text: "no video from the camera"})
		case !s.Recording:
			state = "connecting"
		}
		d.Cameras = append(d.Cameras, web.CameraStatus{Name: n, Recording: s.Recording && !s.VideoLost, State: state, LastWrite: s.LastWrite, Bytes: s.Bytes})
	}
	var fs unix.Statfs_t
	if unix.Statfs(w.dataDir, &fs) == nil {
		total := fs.Blocks * uint64(fs.Bsize)
		d.Disk = web.DiskStatus{Path: w.dataDir, TotalBytes: total, UsedBytes: total - fs.Bavail*uint64(fs.Bsize)}
	}
	return d
}

// webRecordings lists closed segments from the index.
type webRecordings struct{ db *store.DB }

func (r webRecordings) Segments(camera string, from, to time.Time) ([]web.Segment, error) {
	segs, err := r.db.Segments(camera, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]web.Segment, 0, len(segs))
	for _, s := range segs {
		out = append(out, web.Segment{Start: s.Start, End: s.End, Bytes: s.Bytes})
	}
	return out, nil
}

// webExporter hands allowed (and approved) exports to the evidence exporter.
type webExporter struct{ x *evidence.Exporter }

func (e webExporter) Export(ctx context.Context, req web.ExportRequest, w io.Writer) error {
	reason := req.Reason
	if req.ApprovedBy != "" {
		reason += " (approved by " + req.ApprovedBy + ")"
	}
	_, err := e.x.Export(ctx, evidence.ExportRequest{Camera: req.Camera, Cameras: req.Cameras, From: req.From, To: req.To, User: req.User,
		Reason: reason, Passphrase: req.Passphrase}, w)
	return err
}

type recordStatus = record.Status

// webMetrics gives the metrics endpoint the recorders' counters and the recording file system's use.
type webMetrics struct {
	a       *Appliance
	dataDir string
}

func (m webMetrics) Metrics() []web.Metric {
	st := m.a.Status()
	names := make([]string, 0, len(st))
	for n := range st {
		names = append(names, n)
	}
	sort.Strings(names)
	now := time.Now()
	fam := func(name, help, typ string, val func(s recordStatus) float64) web.Metric {
		f := web.Metric{Name: name, Help: help, Type: typ}
		for _, n := range names {
			f.Samples = append(f.Samples, web.Sample{Labels: []web.Label{{Name: "camera", Value: n}}, Value: val(st[n])})
		}
		return f
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	out := []web.Metric{
		{Name: "nvr_cameras", Help: "Cameras with a recording pipeline.", Type: "gauge", Samples: []web.Sample{{Value: float64(len(names))}}},
		fam("nvr_camera_recording", "1 while the camera's video is being recorded.", "gauge", func(s recordStatus) float64 { return b2f(s.Recording && !s.VideoLost) }),
		fam("nvr_camera_video_lost", "1 while the camera has raised video loss.", "gauge", func(s recordStatus) float64 { return b2f(s.VideoLost) }),
		fam("nvr_camera_last_fragment_age_seconds", "Seconds since the camera's last fragment was written.", "gauge", func(s recordStatus) float64 {
			if s.LastWrite.IsZero() {
				return -1
			}
			return now.Sub(s.LastWrite).Seconds()
		}),
		fam("nvr_recorded_bytes_total", "Bytes written to segment files since start.", "counter", func(s recordStatus) float64 { return float64(s.Bytes) }),
		fam("nvr_recorded_fragments_total", "Fragments written since start.", "counter", func(s recordStatus) float64 { return float64(s.Fragments) }),
		fam("nvr_segments_closed_total", "Segments closed since start.", "counter", func(s recordStatus) float64 { return float64(s.Segments) }),
		fam("nvr_dropped_pictures_total", "Pictures dropped (waiting for a key frame or lost with a failed write).", "counter", func(s recordStatus) float64 { return float64(s.Dropped) }),
		fam("nvr_write_errors_total", "Failed segment writes.", "counter", func(s recordStatus) float64 { return float64(s.WriteErrs) }),
	}
	var fs unix.Statfs_t
	if unix.Statfs(m.dataDir, &fs) == nil {
		total := float64(fs.Blocks) * float64(fs.Bsize)
		avail := float64(fs.Bavail) * float64(fs.Bsize)
		out = append(out,
			web.Metric{Name: "nvr_storage_bytes", Help: "Size of the recording file system.", Type: "gauge", Samples: []web.Sample{{Value: total}}},
			web.Metric{Name: "nvr_storage_used_bytes", Help: "Bytes in use on the recording file system.", Type: "gauge", Samples: []web.Sample{{Value: total - avail}}},
			web.Metric{Name: "nvr_storage_available_bytes", Help: "Bytes available on the recording file system.", Type: "gauge", Samples: []web.Sample{{Value: avail}}})
	}
	out = append(out, web.Metric{Name: "nvr_alarms", Help: "Alarms held in memory (most recent).", Type: "gauge", Samples: []web.Sample{{Value: float64(len(m.a.Alarms()))}}})
	return out
}

// runAccess runs the access-control service and the HTTPS server until ctx ends. The setup code goes to
// stderr (the console, the journal under systemd), never to the logger.
// runAccess runs the access-control service, the HTTPS server and the local display (which shows the
// first-boot setup code) until ctx ends.
func (a *Appliance) runAccess(ctx context.Context, dev *tpm.TPM, db *store.DB, ev *Evidence) (err error) {
	// Everything started here stops when this returns, whatever the reason (a web server that could not
	// listen included), not only when the appliance stops.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tlsKey, err := dev.TLSKey()
	if err != nil {
		return fmt.Errorf("tls key: %w", err)
	}
	defer func() { err = errors.Join(err, tlsKey.Close()) }()
	az, err := authz.New(authz.Config{DataDir: a.cfg.DataDir, Signer: ev.LogKey, Anchor: ev.AuditAnchor(a.log.With("part", "audit")), Sealer: dev,
		RPID: "localhost", RPOrigins: []string{"https://" + webOrigin(a.cfg.WebListen)}}, a.log.With("part", "authz"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, az.Close()) }()
	// Camera account changes (deleted, secured, appeared) go to the audit log while authz is open.
	defer a.auditCameraAccounts(az)()
	// Directory login (LDAP/AD, Kerberos): settings in DATA/directory.json, secrets sealed by the TPM,
	// edited at /config/directory. Off until an administrator configures it.
	dirMgr, err := directory.NewManager(directory.ManagerConfig{Path: filepath.Join(a.cfg.DataDir, "directory.json"), Sealer: dev},
		a.log.With("part", "directory"))
	if err != nil {
		return err
	}
	az.SetDirectory(dirMgr)
	// Sessions of users the directory no longer vouches for (disabled, deleted, out of every mapped group)
	// end within 5 minutes; it stops before authz closes.
	reval, err := directory.NewRevalidator(directory.RevalidatorConfig{Authz: az, Directory: dirMgr}, a.log.With("part", "directory"))
	if err != nil {
		return err
	}
	revalCtx, stopReval := context.WithCancel(ctx)
	revalDone := make(chan error, 1)
	go func() { revalDone <- reval.Run(revalCtx) }()
	defer func() { stopReval(); err = errors.Join(err, <-revalDone) }()
	codes := lcd.NewSetupCodes(az.NeedsSetup, nil)
	disp, dispDone, err := a.runDisplay(ctx, db, codes)
	if err != nil {
		return err
	}
	defer func() { cancel(); err = errors.Join(err, dispDone()) }()
	pb, err := playback.New(playback.Config{DataDir: a.cfg.DataDir, Index: db, Keys: dev}, a.log.With("part", "playback"))
	if err != nil {
		return err
	}
	pbCtx, stopPb := context.WithCancel(context.Background())
	pbDone := make(chan error, 1)
	go func() { pbDone <- pb.Run(pbCtx) }()
	defer func() { stopPb(); err = errors.Join(err, <-pbDone) }() // drops every cached segment key
	// The bridge's credentials are opened before the web server, whose bridge page issues them.
	var bridgeCreds web.BridgeCredentials
	var bst *bridgeStore
	if a.cfg.Bridge.Enabled() {
		if bst, err = a.openBridgeStore(az, dev); err != nil {
			return err
		}
		bridgeCreds = bst
	}
	srv, err := web.New(web.Config{
		Listen:     a.cfg.WebListen,
		Authz:      az,
		Directory:  dirMgr,
		Key:        tlsKey,
		Status:     webStatus{a: a, dataDir: a.cfg.DataDir},
		Recordings: webRecordings{db: db},
		Live:       a,
		Playback:   pb,
		Metrics:    webMetrics{a: a, dataDir: a.cfg.DataDir},
		Bridge:     bridgeCreds,
		// The camera pages and API (behind the cameras right) on the ONVIF camera manager.
		Cameras: &web.Cameras{Fleet: a.fleet.m},
		Exporter: webExporter{x: &evidence.Exporter{Log: ev.Log, Recordings: Recordings{DataDir: a.cfg.DataDir, DB: db, Keys: dev},
			ExportKey: ev.ExportKey, CertDER: ev.CertDER, Logger: a.log.With("part", "export")}},
		// The setup code goes to the local display only (the console under make run), never to the log.
		Display: func(code string, exp time.Time) {
			codes.Offer(code, exp)
			disp.Refresh()
		},
		Ready: func(addr net.Addr) {
			a.log.Info("web server listening", "url", "https://"+addr.String()+"/")
			if a.webListening != nil {
				a.webListening()
			}
		},
	}, a.log.With("part", "web"))
	if err != nil {
		return err
	}
	azDone := make(chan error, 1)
	azCtx, stopAz := context.WithCancel(context.Background())
	go func() { azDone <- az.Run(azCtx) }()
	// The RTSP(S) bridge for external systems lives beside the web server: it shares its accounts (authz)
	// and its TPM-held TLS key.
	bridgeDone := make(chan error, 1)
	go func() {
		if bst == nil {
			bridgeDone <- nil
			return
		}
		bridgeDone <- a.runBridge(ctx, a.cfg.Bridge, bst, srv.TLSConfig(), dev, db)
	}()
	werr := srv.Run(ctx) // stops accepting when ctx ends
	cancel()             // a web server that stopped by itself takes the bridge with it
	werr = errors.Join(werr, <-bridgeDone)
	stopAz() // then the final audit checkpoint
	return errors.Join(werr, <-azDone)
}

// webOrigin is the host:port browsers use for the web pages: localhost for a loopback or unspecified
// listen address (security keys need a name, not an address).
func webOrigin(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "localhost:8443"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified())) {
		host = "localhost"
	}
	if port == "443" {
		return host
	}
	return net.JoinHostPort(host, port)
}
