package camera

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/netconfig/nstest"
)

// TestDiscoverAndAdopt: discovery finds 3 camsim cameras on the camera
// network (loopback with multicast, in a namespace of its own); adoption
// pins each certificate and sets generated passwords (checked in camsim's
// state: changed, 32+ characters, in no log line); a restart unseals the
// credentials from the TPM and they still work.
func TestDiscoverAndAdopt(t *testing.T) {
	if !nstest.InNS(t, "nvrcam") {
		return
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up", "multicast", "on").CombinedOutput(); err != nil {
		t.Fatalf("loopback multicast: %v\n%s", err, out)
	}
	s := startSim(t, 3, "-discovery", "lo")
	tp := testTPM(t)
	dir := t.TempDir()
	logs := &syncBuffer{}
	m, _ := newManager(t, dir, tp, logs, func(c *Config) { c.Interface = "lo" })
	ctx := context.Background()

	found, err := m.Discover(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 3 {
		t.Fatalf("discovered %d cameras, want 3: %+v", len(found), found)
	}
	for _, d := range found {
		if d.HTTP == "" || d.HTTPS == "" || !strings.HasPrefix(d.Endpoint, "urn:uuid:") {
			t.Fatalf("discovered %+v", d)
		}
	}
	var passwords []string
	for _, d := range found {
		c, err := m.Adopt(ctx, AdoptRequest{HTTP: d.HTTP, HTTPS: d.HTTPS, Username: factoryUser, Password: factoryPass})
		if err != nil {
			t.Fatalf("adopt %s: %v", d.HTTPS, err)
		}
		if len(c.CertSHA256) != 64 || c.Serial == "" || c.MAC == "" || c.Model != "CamSim-1080" || c.Firmware != "1.0.0" ||
			!c.SupportsHTTPS || !c.SupportsDot1X || !strings.HasPrefix(c.StreamURI, "rtsp://") {
			t.Fatalf("inventory %+v", c)
		}
		if _, err := m.Adopt(ctx, AdoptRequest{HTTPS: d.HTTPS, Username: factoryUser, Password: factoryPass}); err == nil {
			t.Fatal("adopting twice succeeded")
		}
	}
	again, err := m.Discover(ctx, time.Second)
	if err != nil || len(again) != 3 || again[0].Adopted == "" {
		t.Fatalf("rediscovery: %+v %v", again, err)
	}
	st := s.readState(t)
	seen := map[string]bool{}
	for cam, cs := range st {
		pw := cs.Users[0].Password
		if pw == factoryPass || len(pw) < 32 || seen[pw] {
			t.Fatalf("%s: password not replaced by a fresh generated one (len %d)", cam, len(pw))
		}
		seen[pw] = true
		passwords = append(passwords, pw)
	}
	noSecretIn(t, "the manager's log", logs.String(), passwords...)
	noSecretIn(t, "camsim's log", s.logs.String(), passwords...)
	noSecretIn(t, "the registry", readRegistry(t, dir), passwords...)

	// A restart: the registry is read and the credentials unsealed by the TPM.
	m2, _ := newManager(t, dir, tp, logs, nil)
	if len(m2.Cameras()) != 3 {
		t.Fatalf("%d cameras after restart", len(m2.Cameras()))
	}
	for _, c := range m2.Cameras() {
		src, err := m2.Source(c.ID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, pw := range passwords {
			found = found || src.Password == pw
		}
		if !found {
			t.Fatalf("%s: unsealed password is not the camera's", c.ID)
		}
	}
	// Another TPM cannot open the registry.
	if _, err := New(Config{Dir: dir, Sealer: testTPM(t)}, nil); err == nil {
		t.Fatal("registry opened with another TPM")
	}
}

func readRegistry(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("cat", dir+"/"+registryName).Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestBulkRotation: 10 cameras, one of which refuses SetUser. That one keeps
// its old, still working password and is reported; the other nine get new
// passwords, and the ingest records from them with the new ones.
func TestBulkRotation(t *testing.T) {
	s := startSim(t, 10)
	logs := &syncBuffer{}
	m, al := newManager(t, t.TempDir(), testTPM(t), logs, nil)
	ctx := context.Background()
	ids := adoptAll(t, ctx, m, s)
	before := map[string]string{}
	for cam := range ids {
		before[cam] = s.password(t, cam)
	}
	s.control(t, "/onvif/fault?cam=cam4&kind=reject-setuser")

	start := time.Now()
	res := m.RotateAll(ctx, nil)
	t.Logf("rotated 10 cameras in %v", time.Since(start))
	if len(res) != 10 {
		t.Fatalf("%d results", len(res))
	}
	var secrets []string
	for cam, id := range ids {
		var r RotationResult
		for _, x := range res {
			if x.Camera == id {
				r = x
			}
		}
		now := s.password(t, cam)
		secrets = append(secrets, before[cam], now)
		src, err := m.Source(id)
		if err != nil {
			t.Fatal(err)
		}
		if cam == "cam4" {
			if r.OK || !r.OldWorks || r.Error == "" {
				t.Fatalf("cam4 result %+v", r)
			}
			if now != before[cam] || src.Password != before[cam] {
				t.Fatal("cam4 lost its old password")
			}
			if _, ok := al.find(id, AlarmRotationFailed, true); !ok {
				t.Fatal("no rotation-failed alarm for cam4")
			}
			continue
		}
		if !r.OK || now == before[cam] || len(now) < 32 || src.Password != now {
			t.Fatalf("%s: result %+v; password changed: %v", cam, r, now != before[cam])
		}
	}
	noSecretIn(t, "the manager's log", logs.String(), secrets...)
	for _, r := range res {
		noSecretIn(t, "the rotation report", r.Error, secrets...)
	}

	// Every camera records with its current credentials: run the ingest
	// on each until it delivers a random-access picture.
	var wg sync.WaitGroup
	rctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	got := map[string]chan struct{}{}
	for _, id := range ids {
		src, err := m.Source(id)
		if err != nil {
			t.Fatal(err)
		}
		cam, err := ingest.New(ingest.Config{Name: id, URL: src.URL, Username: src.Username, Password: src.Password, Transport: "tcp"}, m.log)
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan struct{})
		got[id] = ch
		wg.Add(1)
		go func() {
			defer wg.Done()
			cam.Run(rctx, &firstKey{ch: ch})
		}()
	}
	deadline := time.After(60 * time.Second)
	for id, ch := range got {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: no picture recorded with the current password", id)
		}
	}
}

// firstKey closes ch on the first random-access unit.
type firstKey struct {
	once sync.Once
	ch   chan struct{}
}

func (f *firstKey) Unit(u *ingest.Unit) {
	if u.RandomAccess {
		f.once.Do(func() { close(f.ch) })
	}
}
func (f *firstKey) Event(ingest.Event) {}

// camsimImage makes a camsim firmware image; corrupt breaks its internal
// checksum (the vendor checksum of the whole file is then still right).
func camsimImage(version string, corrupt bool) Image {
	payload := []byte("payload of " + version)
	sum := sha256.Sum256(payload)
	if corrupt {
		payload[0] ^= 0xff
	}
	data := append([]byte(fmt.Sprintf("CAMSIM-FIRMWARE 1\nmodel: CamSim-1080\nversion: %s\nsha256: %x\n\n", version, sum)), payload...)
	vs := sha256.Sum256(data)
	return Image{Model: "CamSim-1080", Version: version, Data: data, SHA256: hex.EncodeToString(vs[:])}
}

// TestFirmwareRollout: a vendor checksum mismatch touches no camera; a bad
// image stops at the canary; a camera refusing the update stops the bulk
// stage and the report says where; the stale-firmware report follows.
func TestFirmwareRollout(t *testing.T) {
	s := startSim(t, 5)
	m, al := newManager(t, t.TempDir(), testTPM(t), &syncBuffer{}, func(c *Config) { c.Parallel = 1 })
	ctx := context.Background()
	ids := adoptAll(t, ctx, m, s)
	order := []string{ids["cam1"], ids["cam2"], ids["cam3"], ids["cam4"], ids["cam5"]}
	stale := m.StaleFirmware([]Release{{Model: "CamSim-1080", Version: "2.0.0"}, {Model: "Other", Version: "9"}})
	if len(stale) != 5 || stale[0].Latest != "2.0.0" || stale[0].Running != "1.0.0" {
		t.Fatalf("stale report %+v", stale)
	}
	unchanged := func() {
		t.Helper()
		for cam, st := range s.readState(t) {
			if st.Firmware != "1.0.0" {
				t.Fatalf("%s runs %s", cam, st.Firmware)
			}
		}
	}

	wrong := camsimImage("2.0.0", false)
	wrong.SHA256 = strings.Repeat("0", 64)
	if _, err := m.Rollout(ctx, RolloutPlan{Images: []Image{wrong}, Cameras: order}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("vendor checksum mismatch: %v", err)
	}
	unchanged()

	rep, err := m.Rollout(ctx, RolloutPlan{Images: []Image{camsimImage("2.0.0", true)}, Cameras: order})
	if !errors.Is(err, ErrRolloutStopped) || !strings.Contains(rep.Stopped, "canary camera "+ids["cam1"]) {
		t.Fatalf("bad image: %v; stopped %q", err, rep.Stopped)
	}
	if rep.Cameras[0].State != StatusFailed || rep.Cameras[1].State != StatusSkipped || rep.Cameras[4].State != StatusSkipped {
		t.Fatalf("bad image report %+v", rep.Cameras)
	}
	unchanged()
	if _, ok := al.find(ids["cam1"], AlarmFirmwareFailed, true); !ok {
		t.Fatal("no firmware-failed alarm")
	}

	s.control(t, "/onvif/fault?cam=cam4&kind=reject-firmware")
	rep, err = m.Rollout(ctx, RolloutPlan{Images: []Image{camsimImage("2.0.0", false)}, Cameras: order})
	if !errors.Is(err, ErrRolloutStopped) || !strings.Contains(rep.Stopped, "bulk camera "+ids["cam4"]) {
		t.Fatalf("bulk failure: %v; stopped %q", err, rep.Stopped)
	}
	want := []string{StatusUpdated, StatusUpdated, StatusUpdated, StatusFailed, StatusSkipped}
	for i, st := range rep.Cameras {
		if st.State != want[i] {
			t.Fatalf("camera %d (%s): %s, want %s; report %+v", i, st.Camera, st.State, want[i], rep.Cameras)
		}
	}
	if rep.Cameras[0].Stage != "canary" || rep.Cameras[1].Stage != "bulk" {
		t.Fatalf("stages %+v", rep.Cameras)
	}
	st := s.readState(t)
	if st["cam1"].Firmware != "2.0.0" || st["cam3"].Firmware != "2.0.0" || st["cam4"].Firmware != "1.0.0" || st["cam5"].Firmware != "1.0.0" {
		t.Fatalf("camera firmware after rollout: %+v", st)
	}
	c, _ := m.Camera(ids["cam2"])
	if c.Firmware != "2.0.0" || c.FirmwareUpdated.IsZero() {
		t.Fatalf("inventory after update %+v", c)
	}
	stale = m.StaleFirmware([]Release{{Model: "CamSim-1080", Version: "2.0.0"}})
	if len(stale) != 2 {
		t.Fatalf("stale after rollout %+v", stale)
	}
	// Resuming skips the updated cameras.
	s.control(t, "/onvif/fault?cam=cam4&kind=reject-firmware&value=false")
	rep, err = m.Rollout(ctx, RolloutPlan{Images: []Image{camsimImage("2.0.0", false)}, Cameras: order})
	if err != nil || rep.Cameras[0].State != StatusCurrent || rep.Cameras[3].State != StatusUpdated {
		t.Fatalf("resume: %v %+v", err, rep.Cameras)
	}
}

// TestTamperAndSwap: a tamper event from camsim is an alarm within 2 s; a
// swapped camera (new certificate, serial and MAC) is quarantined with an
// alarm, refused as a recording source, and back after Accept.
func TestTamperAndSwap(t *testing.T) {
	s := startSim(t, 2)
	m, al := newManager(t, t.TempDir(), testTPM(t), &syncBuffer{}, func(c *Config) { c.CheckEvery = 200 * time.Millisecond })
	ctx := context.Background()
	ids := adoptAll(t, ctx, m, s)
	runManager(t, m)

	// Wait until the event subscription is live (a pull succeeded).
	waitFor(t, 10*time.Second, "event subscription", func() bool {
		c, _ := m.Camera(ids["cam1"])
		return c.LastSeen.After(c.AdoptedAt)
	})
	var start time.Time
	waitFor(t, 10*time.Second, "tamper alarm", func() bool {
		if _, ok := al.find(ids["cam1"], AlarmTamper, true); ok {
			return true
		}
		start = time.Now()
		s.control(t, "/onvif/event?cam=cam1&kind=tamper&value=true")
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if _, ok := al.find(ids["cam1"], AlarmTamper, true); ok {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no tamper alarm within 2 s of the event")
		return false
	})
	if !start.IsZero() {
		t.Logf("tamper alarm %v after the event", time.Since(start).Round(time.Millisecond))
	}
	s.control(t, "/onvif/event?cam=cam1&kind=signal-loss&value=true")
	waitFor(t, 5*time.Second, "signal-loss alarm", func() bool { _, ok := al.find(ids["cam1"], AlarmSignalLoss, true); return ok })
	m.HandleIngestEvent(ingest.Event{Camera: ids["cam1"], Kind: ingest.EventVideoLoss, Time: time.Now()})
	if _, ok := al.find(ids["cam1"], AlarmVideoLoss, true); !ok {
		t.Fatal("no video-loss alarm")
	}

	s.control(t, "/onvif/swap?cam=cam2")
	waitFor(t, 10*time.Second, "swapped alarm", func() bool { _, ok := al.find(ids["cam2"], AlarmSwapped, true); return ok })
	if _, err := m.Source(ids["cam2"]); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("Source of a swapped camera: %v", err)
	}
	if _, err := m.Source(ids["cam1"]); err != nil {
		t.Fatalf("Source of cam1: %v", err)
	}
	if err := m.Rotate(ctx, ids["cam2"]); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("rotation on a quarantined camera: %v", err)
	}
	c, err := m.Accept(ctx, ids["cam2"])
	if err != nil {
		t.Fatal(err)
	}
	if c.Quarantined || c.Serial != s.readState(t)["cam2"].Serial {
		t.Fatalf("after Accept: %+v", c)
	}
	if _, err := m.Source(ids["cam2"]); err != nil {
		t.Fatalf("Source after Accept: %v", err)
	}
}
