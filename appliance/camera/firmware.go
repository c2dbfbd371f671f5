package camera

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Image is a vendor firmware image for one camera model.
type Image struct {
	Model   string // the camera model it is for, as GetDeviceInformation reports it
	Version string // the firmware version the camera reports once it runs the image
	Data    []byte
	// SHA256 is the vendor's published checksum (hex). The image is
	// refused before any camera sees it unless it matches.
	SHA256 string
}

// Release is the newest firmware the vendor publishes for a model, for the
// stale-firmware report.
type Release struct {
	Model    string    `json:"model"`
	Version  string    `json:"version"`
	Released time.Time `json:"released,omitzero"`
}

// StaleEntry is a camera running older firmware than its model's release.
type StaleEntry struct {
	Camera          string        `json:"camera"`
	Model           string        `json:"model"`
	Running         string        `json:"running"`
	Latest          string        `json:"latest"`
	SinceUpdate     time.Duration `json:"since_update"`
	FirmwareUpdated time.Time     `json:"firmware_updated,omitzero"`
}

// StaleFirmware lists the cameras whose firmware is older than the latest
// release for their model, longest without an update first.
func (m *Manager) StaleFirmware(releases []Release) []StaleEntry {
	latest := map[string]string{}
	for _, r := range releases {
		if cur, ok := latest[r.Model]; !ok || compareVersions(r.Version, cur) > 0 {
			latest[r.Model] = r.Version
		}
	}
	now := m.cfg.Now()
	var out []StaleEntry
	for _, c := range m.Cameras() {
		v, ok := latest[c.Model]
		if !ok || compareVersions(c.Firmware, v) >= 0 {
			continue
		}
		out = append(out, StaleEntry{Camera: c.ID, Model: c.Model, Running: c.Firmware, Latest: v,
			SinceUpdate: c.SinceFirmwareUpdate(now), FirmwareUpdated: c.FirmwareUpdated})
	}
	slices.SortFunc(out, func(a, b StaleEntry) int {
		if a.SinceUpdate != b.SinceUpdate {
			return -compareDur(a.SinceUpdate, b.SinceUpdate)
		}
		return compareStrings(a.Camera, b.Camera)
	})
	return out
}

func compareDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// compareVersions compares dotted versions numerically where both parts
// are numbers (1.10 > 1.9), as strings otherwise.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y string
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		xi, errx := strconv.Atoi(x)
		yi, erry := strconv.Atoi(y)
		switch {
		case errx == nil && erry == nil && xi != yi:
			return compareDur(time.Duration(xi), time.Duration(yi))
		case (errx != nil || erry != nil) && x != y:
			return compareStrings(x, y)
		}
	}
	return 0
}

// Rollout states of one camera.
const (
	StatusPending   = "pending"    // not started
	StatusUpdated   = "updated"    // runs the new version
	StatusCurrent   = "up-to-date" // already ran it; untouched
	StatusFailed    = "failed"     // the update failed; see Error
	StatusSkipped   = "skipped"    // not attempted because the rollout stopped
	StatusNoImage   = "no-image"   // no image for its model
	StatusUpdating  = "updating"   // in progress
	StatusQuarantin = "quarantined"
)

// CameraStatus is one camera's part in a rollout.
type CameraStatus struct {
	Camera string `json:"camera"`
	Model  string `json:"model"`
	From   string `json:"from"`
	To     string `json:"to,omitempty"`
	Stage  string `json:"stage"` // "canary" or "bulk"
	State  string `json:"state"`
	Error  string `json:"error,omitempty"`
}

// RolloutReport is the outcome of a rollout.
type RolloutReport struct {
	Cameras []CameraStatus `json:"cameras"`
	// Stopped is set when the rollout stopped early: the stage and camera
	// where it failed.
	Stopped string `json:"stopped,omitempty"`
}

// RolloutPlan says what to install where.
type RolloutPlan struct {
	Images []Image
	// Cameras to update, in order (default: every adopted camera, by id).
	// The first Canary cameras that have an image are updated one by one
	// first; the rest only if every canary succeeded.
	Cameras []string
	Canary  int // default 1
}

// ErrRolloutStopped is returned by Rollout when a camera failed; the report
// says which and what happened to the others.
var ErrRolloutStopped = errors.New("camera: firmware rollout stopped")

// Rollout installs firmware: every image is checked against its vendor
// checksum first (a mismatch touches no camera), then the canary cameras
// are updated one at a time, then the rest cfg.Parallel at a time. The first
// failure stops the rollout: cameras not yet started are skipped, and the
// report says where it stopped. A camera already on the image's version is
// left alone.
func (m *Manager) Rollout(ctx context.Context, plan RolloutPlan) (RolloutReport, error) {
	var rep RolloutReport
	images := map[string]*Image{}
	for i := range plan.Images {
		img := &plan.Images[i]
		sum := sha256.Sum256(img.Data)
		want, err := hex.DecodeString(strings.TrimSpace(img.SHA256))
		if err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
			return rep, fmt.Errorf("%w: image %s %s: sha256 %x, vendor says %q", ErrChecksum, img.Model, img.Version, sum, clip(img.SHA256, 80))
		}
		if _, dup := images[img.Model]; dup {
			return rep, fmt.Errorf("rollout: two images for model %q", img.Model)
		}
		images[img.Model] = img
	}
	ids := plan.Cameras
	if len(ids) == 0 {
		ids = m.ids(func(*Camera) bool { return true })
	}
	canary := plan.Canary
	if canary <= 0 {
		canary = 1
	}
	var work []int // indexes into rep.Cameras of cameras to update
	for _, id := range ids {
		c, err := m.Camera(id)
		if err != nil {
			return RolloutReport{}, err
		}
		st := CameraStatus{Camera: id, Model: c.Model, From: c.Firmware, State: StatusPending}
		img := images[c.Model]
		switch {
		case c.Quarantined:
			st.State = StatusQuarantin
		case img == nil:
			st.State = StatusNoImage
		case c.Firmware == img.Version:
			st.State, st.To = StatusCurrent, img.Version
		default:
			st.To = img.Version
			work = append(work, len(rep.Cameras))
		}
		rep.Cameras = append(rep.Cameras, st)
	}
	var mu sync.Mutex
	stop := func(stage string, i int, err error) {
		mu.Lock()
		defer mu.Unlock()
		rep.Cameras[i].State, rep.Cameras[i].Error = StatusFailed, err.Error()
		if rep.Stopped == "" {
			rep.Stopped = fmt.Sprintf("%s camera %s: %v", stage, rep.Cameras[i].Camera, err)
		}
	}
	skipRest := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, i := range work {
			if rep.Cameras[i].State == StatusPending {
				rep.Cameras[i].State = StatusSkipped
			}
		}
	}
	update := func(ctx context.Context, stage string, i int) bool {
		mu.Lock()
		st := &rep.Cameras[i]
		st.Stage, st.State = stage, StatusUpdating
		id, model := st.Camera, st.Model
		mu.Unlock()
		err := m.updateFirmware(ctx, id, images[model])
		if err != nil {
			stop(stage, i, err)
			m.raise(Alarm{Camera: id, Kind: AlarmFirmwareFailed, Active: true, Detail: err.Error()})
			return false
		}
		mu.Lock()
		st.State = StatusUpdated
		mu.Unlock()
		return true
	}
	n := min(canary, len(work))
	for _, i := range work[:n] {
		if !update(ctx, "canary", i) {
			skipRest()
			return rep, fmt.Errorf("%w: %s", ErrRolloutStopped, rep.Stopped)
		}
	}
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, m.cfg.Parallel)
	var wg sync.WaitGroup
	for _, i := range work[n:] {
		select {
		case sem <- struct{}{}:
		case <-bctx.Done():
		}
		if bctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if !update(bctx, "bulk", i) {
				cancel() // start no more
			}
		}()
	}
	wg.Wait()
	skipRest()
	if rep.Stopped != "" {
		return rep, fmt.Errorf("%w: %s", ErrRolloutStopped, rep.Stopped)
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	return rep, nil
}

// updateFirmware uploads img to one camera, waits for it to come back and
// checks that it runs img.Version.
func (m *Manager) updateFirmware(ctx context.Context, id string, img *Image) error {
	done, err := m.claim(id, "firmware")
	if err != nil {
		return err
	}
	defer done()
	_, e, cred, err := m.session(id)
	if err != nil {
		return err
	}
	uctx, cancel := context.WithTimeout(ctx, 2*m.cfg.Timeout+time.Duration(len(img.Data)/(64<<10))*time.Second)
	err = uploadFirmware(uctx, e, cred, img.Data)
	cancel()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(m.cfg.RebootTimeout)
	var last error
	for time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, min(m.cfg.Timeout, 5*time.Second))
		info, err := getDeviceInfo(pctx, e, cred)
		cancel()
		switch {
		case errors.Is(err, ErrCertChanged):
			m.quarantine(id, "HTTPS certificate changed after a firmware update")
			return err
		case err == nil && info.Firmware == img.Version:
			m.mu.Lock()
			if c := m.cams[id]; c != nil {
				c.Firmware, c.FirmwareUpdated, c.LastSeen = info.Firmware, m.cfg.Now(), m.cfg.Now()
			}
			m.mu.Unlock()
			if err := m.save(); err != nil {
				return err
			}
			m.log.Info("camera firmware updated", "camera", id, "version", info.Firmware)
			return nil
		case err == nil:
			last = fmt.Errorf("%w: camera reports version %s, want %s", ErrFirmwareRefused, info.Firmware, img.Version)
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond): // the camera is rebooting: poll
		}
	}
	return fmt.Errorf("%w: not back on %s within %v: %v", ErrFirmwareRefused, img.Version, m.cfg.RebootTimeout, last)
}
