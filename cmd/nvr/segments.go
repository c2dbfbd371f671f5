package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/internal/cli"
)

// segments lists the index's segments of one camera (or all), one per line:
// ID START END STATE CHUNKS BYTES PATH.
func segments(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("nvr segments", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "/var/lib/nvr", "data directory of a stopped appliance")
	camera := fs.String("camera", "", "camera name (empty: every camera)")
	fromS := fs.String("from", "", "start of the range (default: everything)")
	toS := fs.String("to", "", "end of the range (default: everything)")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	now := time.Now()
	from, to := time.Unix(0, 0), now.Add(100*365*24*time.Hour)
	var err error
	if *fromS != "" {
		if from, err = cli.ParseTime(*fromS, now); err != nil {
			return 2, fmt.Errorf("-from: %w", err)
		}
	}
	if *toS != "" {
		if to, err = cli.ParseTime(*toS, now); err != nil {
			return 2, fmt.Errorf("-to: %w", err)
		}
	}
	db, err := openIndex(*dataDir)
	if err != nil {
		return 1, err
	}
	defer db.Close()
	print := func(s store.Segment) {
		fmt.Fprintf(stdout, "%s %s %s %s %d %d %s\n", hex.EncodeToString(s.ID[:]), s.Start.UTC().Format(time.RFC3339Nano),
			s.End.UTC().Format(time.RFC3339Nano), s.State, s.Chunks, s.Bytes, s.Camera)
	}
	fmt.Fprintln(stdout, "# id start end state chunks bytes camera")
	if *camera != "" {
		segs, err := db.Segments(*camera, from, to)
		if err != nil {
			return 1, err
		}
		for _, s := range segs {
			print(s)
		}
		return 0, nil
	}
	err = db.AllSegments(func(s store.Segment) error {
		if s.End.After(from) && s.Start.Before(to) {
			print(s)
		}
		return nil
	})
	if err != nil {
		return 1, err
	}
	return 0, nil
}
