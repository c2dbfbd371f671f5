package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgenvr/nvr/appliance"
	"github.com/edgenvr/nvr/appliance/evidence"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/internal/cli"
)

const evidenceUsage = `  nvr export -evidence -data DIR -tpm DEVICE -camera NAME [-camera NAME …] -from TIME -to TIME -user NAME
             -reason TEXT [-passphrase-file F] -o FILE.zip     (-camera A,B,C also names several cameras)
  nvr verify FILE [-passphrase-file F] [-device-cert CERT]
  nvr hold -data DIR -camera NAME -from TIME -to TIME -reason TEXT
  nvr hold -data DIR -list | -release ID
  nvr log-check -data DIR [-device-cert CERT]`

// Exit codes of nvr verify.
const (
	exitVerified  = 0
	exitFailed    = 1
	exitUsage     = 2
	exitNotPinned = 3
	maxPassphrase = 4 << 10
)

// isEvidenceExport reports whether export arguments ask for an evidence export.
func isEvidenceExport(args []string) bool {
	return slices.Contains(args, "-evidence") || slices.Contains(args, "--evidence")
}

// readPassphrase reads a passphrase file: its first line, at most 4 KiB. The passphrase is never printed.
func readPassphrase(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPassphrase+1))
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	if len(b) > maxPassphrase {
		return nil, fmt.Errorf("passphrase file %s is longer than %d bytes", path, maxPassphrase)
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("passphrase file %s is empty", path)
	}
	return b, nil
}

// cameraFlag collects -camera: repeated, or a comma-separated list, or both; each camera once, in order.
type cameraFlag []string

func (c *cameraFlag) String() string { return strings.Join(*c, ",") }

func (c *cameraFlag) Set(v string) error {
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			return errors.New("empty camera name")
		}
		if !evidence.ValidCameraName(name) {
			return fmt.Errorf("camera name %.80q: letters, digits, _ and - (at most 64)", name)
		}
		if !slices.Contains(*c, name) {
			*c = append(*c, name)
		}
	}
	return nil
}

func evidenceExport(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("nvr export -evidence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Bool("evidence", true, "make a signed evidence export (zip)")
	dataDir := fs.String("data", "/var/lib/nvr", "data directory of a stopped appliance")
	tpmDev := fs.String("tpm", "/dev/tpmrm0", "TPM: a device path, swtpm:HOST:PORT or swtpm:unix:PATH")
	var cameras cameraFlag
	fs.Var(&cameras, "camera", "camera name; repeat it, or give a comma-separated list, to export several cameras over the range in one file")
	fromS := fs.String("from", "", "start of the range")
	toS := fs.String("to", "", "end of the range")
	user := fs.String("user", "", "the exporting operator, recorded in the export")
	reason := fs.String("reason", "", "why the export is made, recorded in the export")
	passFile := fs.String("passphrase-file", "", "encrypt the export with age (scrypt) under the passphrase in this file")
	out := fs.String("o", "", "output file (zip, or age-encrypted zip)")
	if err := fs.Parse(args); err != nil {
		return exitUsage, err
	}
	now := time.Now()
	from, err := cli.ParseTime(*fromS, now)
	if err != nil {
		return exitUsage, fmt.Errorf("-from: %w", err)
	}
	to, err := cli.ParseTime(*toS, now)
	if err != nil {
		return exitUsage, fmt.Errorf("-to: %w", err)
	}
	if len(cameras) == 0 || *out == "" || *user == "" || *reason == "" {
		return exitUsage, errors.New("-camera, -o, -user and -reason are required")
	}
	if len(cameras) > evidence.MaxExportCameras {
		return exitUsage, fmt.Errorf("%d cameras: at most %d in one export", len(cameras), evidence.MaxExportCameras)
	}
	pass, err := readPassphrase(*passFile)
	if err != nil {
		return exitUsage, err
	}
	log, err := cli.Logger(stderr, "warn", "text")
	if err != nil {
		return 1, err
	}
	db, dev, closeAll, err := openStopped(*dataDir, *tpmDev, log)
	if err != nil {
		return 1, err
	}
	defer closeAll()
	ev, err := appliance.OpenEvidence(*dataDir, dev, db, 0, log)
	if err != nil {
		return 1, err
	}
	defer ev.Close()
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".export-*.zip")
	if err != nil {
		return 1, fmt.Errorf("output: %w", err)
	}
	defer os.Remove(tmp.Name())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ex := &evidence.Exporter{
		Log: ev.Log, Recordings: appliance.Recordings{DataDir: *dataDir, DB: db, Keys: dev},
		ExportKey: ev.ExportKey, CertDER: ev.CertDER, Logger: log,
	}
	rep, err := ex.Export(ctx, evidence.ExportRequest{Cameras: cameras, From: from, To: to, User: *user, Reason: *reason, Passphrase: pass}, tmp)
	if err != nil {
		tmp.Close()
		return 1, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 1, fmt.Errorf("output: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 1, fmt.Errorf("output: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return 1, fmt.Errorf("output: %w", err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return 1, fmt.Errorf("output: %w", err)
	}
	printExportReport(stdout, rep, ev.Appliance)
	fmt.Fprintf(stdout, "verify with: nvr verify %s -device-cert %s\n", *out, filepath.Join(*dataDir, appliance.DeviceCertFile))
	return 0, nil
}

// printExportReport says what an export holds: each camera, its gaps, and what could not be read.
func printExportReport(w io.Writer, rep evidence.ExportReport, appliance string) {
	if len(rep.Cameras) > 1 {
		fmt.Fprintf(w, "evidence export of %d cameras (one manifest, one log checkpoint): %d fragments from %d segments, %d bytes of video\n",
			len(rep.Cameras), rep.Fragments, rep.Segments, rep.VideoBytes)
	}
	for _, c := range rep.Cameras {
		fmt.Fprintf(w, "evidence export of %s: %s to %s, %d fragments from %d segments, %d bytes of video (%s)\n",
			c.Camera, c.Start.Format(time.RFC3339), c.End.Format(time.RFC3339), c.Fragments, c.Segments, c.VideoBytes, c.Video)
		if len(rep.Cameras) > 1 {
			for _, g := range c.Gaps {
				fmt.Fprintf(w, "  gap in %s: %s to %s (%s): %s\n", c.Camera, g.From.Format(time.RFC3339), g.To.Format(time.RFC3339), g.To.Sub(g.From).Round(time.Second), g.Reason)
			}
		}
	}
	fmt.Fprintf(w, "signed by appliance %s; log checkpoint of %d entries signed %s\n", appliance, rep.Checkpoint.Size, rep.Checkpoint.Time.Format(time.RFC3339))
	for _, m := range rep.MediaMissing {
		fmt.Fprintf(w, "WARNING: logged but unreadable, recorded as missing in the export: %s\n", m)
	}
}

func verify(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("nvr verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	passFile := fs.String("passphrase-file", "", "passphrase of an encrypted export")
	certFile := fs.String("device-cert", "", "the device certificate to pin the signer to (PEM or DER)")
	var file string
	// FILE may come before or after the flags.
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return exitUsage, err
		}
		if fs.NArg() == 0 {
			break
		}
		if file != "" {
			return exitUsage, fmt.Errorf("one export at a time: %q and %q", file, fs.Arg(0))
		}
		file, args = fs.Arg(0), fs.Args()[1:]
	}
	if file == "" {
		return exitUsage, errors.New("usage: nvr verify FILE [-passphrase-file F] [-device-cert CERT]")
	}
	pass, err := readPassphrase(*passFile)
	if err != nil {
		return exitUsage, err
	}
	var pin []byte
	if *certFile != "" {
		if pin, err = os.ReadFile(*certFile); err != nil {
			return exitUsage, fmt.Errorf("device certificate: %w", err)
		}
	}
	rep, err := evidence.VerifyFile(file, evidence.VerifyOptions{Passphrase: pass, DeviceCert: pin})
	if err != nil {
		fmt.Fprintf(stdout, "VERDICT: NOT VERIFIED: %v\n", err)
		return exitFailed, nil
	}
	rep.Print(stdout)
	switch {
	case rep.OK():
		return exitVerified, nil
	case len(rep.Failed()) == 0 && !rep.Pinned:
		return exitNotPinned, nil
	}
	return exitFailed, nil
}

func hold(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("nvr hold", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "/var/lib/nvr", "data directory of a stopped appliance")
	camera := fs.String("camera", "", "camera name (empty: every camera)")
	fromS := fs.String("from", "", "start of the held range")
	toS := fs.String("to", "", "end of the held range")
	reason := fs.String("reason", "", "why the range is held")
	list := fs.Bool("list", false, "list the holds")
	release := fs.String("release", "", "remove the hold with this ID")
	if err := fs.Parse(args); err != nil {
		return exitUsage, err
	}
	db, err := openIndex(*dataDir)
	if err != nil {
		return 1, err
	}
	defer db.Close()
	switch {
	case *list:
		hs, err := db.Holds()
		if err != nil {
			return 1, err
		}
		for _, h := range hs {
			cam := h.Camera
			if cam == "" {
				cam = "(all cameras)"
			}
			fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\t%q\n", h.ID, cam, h.From.Format(time.RFC3339), h.To.Format(time.RFC3339), h.Reason)
		}
		return 0, nil
	case *release != "":
		id, err := strconv.ParseUint(*release, 10, 64)
		if err != nil {
			return exitUsage, fmt.Errorf("-release: %w", err)
		}
		if err := db.DeleteHold(id); err != nil {
			return 1, err
		}
		fmt.Fprintf(stdout, "hold %d released\n", id)
		return 0, nil
	}
	now := time.Now()
	from, err := cli.ParseTime(*fromS, now)
	if err != nil {
		return exitUsage, fmt.Errorf("-from: %w", err)
	}
	to, err := cli.ParseTime(*toS, now)
	if err != nil {
		return exitUsage, fmt.Errorf("-to: %w", err)
	}
	if *reason == "" {
		return exitUsage, errors.New("-reason is required")
	}
	id, err := db.PutHold(store.Hold{Camera: *camera, From: from, To: to, Reason: *reason})
	if err != nil {
		return 1, err
	}
	fmt.Fprintf(stdout, "hold %d: %s %s to %s is kept whatever retention says\n", id, *camera, from.Format(time.RFC3339), to.Format(time.RFC3339))
	return 0, nil
}

// logCheck checks the evidence log of a data directory offline, with the device certificate's log key.
func logCheck(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("nvr log-check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "/var/lib/nvr", "data directory of a stopped appliance")
	certFile := fs.String("device-cert", "", "device certificate (default DATA/device-cert.pem)")
	if err := fs.Parse(args); err != nil {
		return exitUsage, err
	}
	if *certFile == "" {
		*certFile = filepath.Join(*dataDir, appliance.DeviceCertFile)
	}
	cert, err := os.ReadFile(*certFile)
	if err != nil {
		return 1, fmt.Errorf("device certificate: %w", err)
	}
	id, err := evidence.ParseDeviceCert(cert)
	if err != nil {
		return 1, err
	}
	db, err := openIndex(*dataDir)
	if err != nil {
		return 1, err
	}
	defer db.Close()
	n, size, err := evidence.CheckCheckpoints(db, id)
	if err != nil {
		fmt.Fprintf(stdout, "log-check: FAILED after %d checkpoints: %v\n", n, err)
		return 1, nil
	}
	fmt.Fprintf(stdout, "log-check: %d entries; all %d checkpoints signed by %s and consistent with each other\n", size, n, id.Appliance)
	return 0, nil
}
