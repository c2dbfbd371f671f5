package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/evidence"
	"github.com/edgenvr/nvr/appliance/lcd"
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
	_, err := e.x.Export(ctx, evidence.ExportRequest{Camera: req.Camera, From: req.From, To: req.To, User: req.User, Reason: reason}, w)
	return err
}

// runAccess runs the access-control service and the HTTPS server until ctx ends. The setup code goes to
// stderr (the console, the journal under systemd), never to the logger.
// runAccess runs the access-control service, the HTTPS server and the local display (which shows the
// first-boot setup code) until ctx ends.
func (a *Appliance) runAccess(ctx context.Context, dev *tpm.TPM, db *store.DB, ev *Evidence) (err error) {
	tlsKey, err := dev.TLSKey()
	if err != nil {
		return fmt.Errorf("tls key: %w", err)
	}
	defer func() { err = errors.Join(err, tlsKey.Close()) }()
	az, err := authz.New(authz.Config{DataDir: a.cfg.DataDir, Signer: ev.LogKey, Sealer: dev,
		RPID: "localhost", RPOrigins: []string{"https://" + webOrigin(a.cfg.WebListen)}}, a.log.With("part", "authz"))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, az.Close()) }()
	codes := lcd.NewSetupCodes(az.NeedsSetup, nil)
	disp, dispDone, err := a.runDisplay(ctx, db, codes)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, dispDone()) }()
	srv, err := web.New(web.Config{
		Listen:     a.cfg.WebListen,
		Authz:      az,
		Key:        tlsKey,
		Status:     webStatus{a: a, dataDir: a.cfg.DataDir},
		Recordings: webRecordings{db: db},
		Exporter: webExporter{x: &evidence.Exporter{Log: ev.Log, Recordings: Recordings{DataDir: a.cfg.DataDir, DB: db, Keys: dev},
			ExportKey: ev.ExportKey, CertDER: ev.CertDER, Logger: a.log.With("part", "export")}},
		// The setup code goes to the local display only (the console under make run), never to the log.
		Display: func(code string, exp time.Time) {
			codes.Offer(code, exp)
			disp.Refresh()
		},
		Ready: func(addr net.Addr) { a.log.Info("web server listening", "url", "https://"+addr.String()+"/") },
	}, a.log.With("part", "web"))
	if err != nil {
		return err
	}
	azDone := make(chan error, 1)
	azCtx, stopAz := context.WithCancel(context.Background())
	go func() { azDone <- az.Run(azCtx) }()
	werr := srv.Run(ctx) // stops accepting when ctx ends
	stopAz()             // then the final audit checkpoint
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
