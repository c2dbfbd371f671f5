package appliance

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"

	"github.com/edgenvr/nvr/appliance/lcd"
	"github.com/edgenvr/nvr/appliance/store"
	"golang.org/x/sys/unix"
)

// displayState is what the local display shows: the appliance's name and client-network addresses, each
// camera's state, the recording file system and the active alarms.
func (a *Appliance) displayState(db *store.DB) lcd.State {
	var st lcd.State
	st.Hostname, _ = os.Hostname()
	if host, port, err := net.SplitHostPort(a.cfg.WebListen); err == nil {
		st.WebPort, _ = strconv.Atoi(port)
		if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() {
			st.Addresses = append(st.Addresses, ip)
		}
	}
	status := a.Status()
	names := make([]string, 0, len(status))
	for n := range status {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := status[n]
		state := lcd.CameraRecording
		switch {
		case s.VideoLost:
			state = lcd.CameraVideoLoss
		case !s.Recording:
			state = lcd.CameraConnecting
		}
		st.Cameras = append(st.Cameras, lcd.Camera{Name: n, State: state})
	}
	var fs unix.Statfs_t
	if unix.Statfs(a.cfg.DataDir, &fs) == nil {
		total := fs.Blocks * uint64(fs.Bsize)
		st.Storage.TotalBytes = total
		st.Storage.UsedBytes = total - fs.Bavail*uint64(fs.Bsize)
	}
	st.Storage.Retention = a.cfg.Retention.DefaultMaxAge
	if c, err := db.Candidates(1, nil); err == nil && len(c) > 0 {
		st.Storage.Oldest = c[0].Start
	}
	active := map[string]Alarm{}
	for _, al := range a.Alarms() {
		key := al.Camera + "/" + al.Kind
		if al.Active {
			active[key] = al
		} else {
			delete(active, key)
		}
	}
	for key, al := range active {
		st.Alarms = append(st.Alarms, lcd.Alarm{ID: fmt.Sprintf("%s@%d", key, al.Time.UnixNano()), Time: al.Time, Camera: al.Camera, Text: al.Kind})
	}
	sort.Slice(st.Alarms, func(i, j int) bool { return st.Alarms[i].Time.After(st.Alarms[j].Time) })
	return st
}

// runDisplay runs the local display until ctx ends. Panel faults are logged by the display, never fatal.
func (a *Appliance) runDisplay(ctx context.Context, db *store.DB, codes *lcd.SetupCodes) (*lcd.Display, func() error, error) {
	out := a.cfg.Console
	if out == nil {
		out = os.Stderr
	}
	drv, err := lcd.OpenDriver(a.cfg.Board.Display, out, a.log.With("part", "lcd"))
	if err != nil {
		return nil, nil, fmt.Errorf("display: %w", err)
	}
	disp, err := lcd.New(lcd.Config{
		Driver:    drv,
		Source:    lcd.SourceFunc(func() lcd.State { return a.displayState(db) }),
		Setup:     codes,
		Buttons:   a.cfg.Board.Display.Buttons,
		LongPress: a.cfg.Board.Display.LongPress,
	}, a.log.With("part", "lcd"))
	if err != nil {
		return nil, nil, fmt.Errorf("display: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- disp.Run(ctx) }()
	return disp, func() error { return <-done }, nil
}
