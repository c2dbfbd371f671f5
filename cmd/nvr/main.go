// Command nvr is the operator's and the court's tool: it exports recordings from a stopped appliance's data
// directory and checks the index against the segment files.
//
//	nvr export -data DIR -tpm DEVICE -camera NAME -from TIME -to TIME -o out.mp4
//	nvr fsck -data DIR
//	nvr segments -data DIR [-camera NAME] [-from TIME] [-to TIME]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/internal/cli"
	"github.com/edgenvr/nvr/tpm"
)

func main() {
	code, err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nvr:", err)
	}
	os.Exit(code)
}

const usage = `usage:
  nvr export -data DIR -tpm DEVICE -camera NAME -from TIME -to TIME -o FILE.mp4
  nvr fsck -data DIR
  nvr segments -data DIR [-camera NAME] [-from TIME] [-to TIME]
` + evidenceUsage + `
TIME is RFC 3339, Unix seconds, or -DURATION before now.`

func run(args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2, nil
	}
	switch args[0] {
	case "export":
		if isEvidenceExport(args[1:]) {
			return evidenceExport(args[1:], stdout, stderr)
		}
		return export(args[1:], stdout, stderr)
	case "verify":
		return verify(args[1:], stdout, stderr)
	case "hold":
		return hold(args[1:], stdout, stderr)
	case "log-check":
		return logCheck(args[1:], stdout, stderr)
	case "fsck":
		return fsck(args[1:], stdout, stderr)
	case "audit":
		return audit(args[1:], stdout, stderr)
	case "segments":
		return segments(args[1:], stdout, stderr)
	case "release":
		return release(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, usage)
		return 0, nil
	}
	fmt.Fprintln(stderr, usage)
	return 2, fmt.Errorf("unknown command %q", args[0])
}

func openIndex(dataDir string) (*store.DB, error) {
	path := filepath.Join(dataDir, "index.db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	db, err := store.Open(path, store.Options{Timeout: 2 * time.Second}, nil)
	if err != nil {
		return nil, fmt.Errorf("open index (is nvrd still running on this data directory?): %w", err)
	}
	return db, nil
}

// openStopped opens a stopped appliance's index and its TPM, for the commands that read recordings. close
// releases both.
func openStopped(dataDir, tpmDev string, log *slog.Logger) (*store.DB, *tpm.TPM, func(), error) {
	db, err := openIndex(dataDir)
	if err != nil {
		return nil, nil, nil, err
	}
	dev, err := tpm.Open(tpmDev, log)
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	return db, dev, func() { dev.Close(); db.Close() }, nil
}

func export(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("nvr export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "/var/lib/nvr", "data directory of a stopped appliance")
	tpmDev := fs.String("tpm", "/dev/tpmrm0", "TPM: a device path, swtpm:HOST:PORT or swtpm:unix:PATH")
	camera := fs.String("camera", "", "camera name")
	fromS := fs.String("from", "", "start of the range")
	toS := fs.String("to", "", "end of the range")
	out := fs.String("o", "", "output MP4 file")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	now := time.Now()
	from, err := cli.ParseTime(*fromS, now)
	if err != nil {
		return 2, fmt.Errorf("-from: %w", err)
	}
	to, err := cli.ParseTime(*toS, now)
	if err != nil {
		return 2, fmt.Errorf("-to: %w", err)
	}
	if *camera == "" || *out == "" {
		return 2, errors.New("-camera and -o are required")
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

	// Write beside the target and rename when complete, so a failed export leaves no partial file.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".export-*.mp4")
	if err != nil {
		return 1, fmt.Errorf("output: %w", err)
	}
	defer os.Remove(tmp.Name())
	rep, err := record.Export(*dataDir, db, dev, *camera, from, to, tmp)
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
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return 1, fmt.Errorf("output: %w", err)
	}
	fmt.Fprintf(stdout, "exported %s: %s to %s, %d fragments from %d segments, %d bytes, every chunk authenticated\n",
		*camera, rep.Start.Format(time.RFC3339), rep.End.Format(time.RFC3339), rep.Fragments, rep.Segments, rep.Bytes)
	for _, g := range rep.Gaps {
		fmt.Fprintf(stdout, "gap in the recording: %s to %s (%.1f s)\n", g.From.Format(time.RFC3339Nano), g.To.Format(time.RFC3339Nano), g.To.Sub(g.From).Seconds())
	}
	return 0, nil
}

func fsck(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("nvr fsck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "/var/lib/nvr", "data directory of a stopped appliance")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	db, err := openIndex(*dataDir)
	if err != nil {
		return 1, err
	}
	defer db.Close()
	rep, err := record.Fsck(*dataDir, db)
	if err != nil {
		return 1, err
	}
	for _, p := range rep.Pending {
		fmt.Fprintln(stdout, "pending:", p)
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, "PROBLEM:", p)
	}
	if !rep.Clean() {
		fmt.Fprintf(stdout, "fsck: %d problems in %d segments (%d bytes)\n", len(rep.Problems), rep.Segments, rep.Bytes)
		return 1, nil
	}
	fmt.Fprintf(stdout, "fsck: clean: %d segments, %d bytes, %d pending for the next start\n", rep.Segments, rep.Bytes, len(rep.Pending))
	return 0, nil
}
