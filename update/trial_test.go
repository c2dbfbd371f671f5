package update

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFailedTrialIsNotReinstalled: 1.1.0 is installed into B from A; until the reboot nothing more is
// installed; the bootloader then falls back to A (B never got healthy), so the agent refuses 1.1.0 from
// then on, and takes 1.2.0 when the fleet publishes it, which is confirmed once B is healthy.
func TestFailedTrialIsNotReinstalled(t *testing.T) {
	s := newSetup(t)
	ctx := context.Background()
	boot := "boot-1"
	withBoot := func(c *Config) {
		c.BootID = func() (string, error) { return boot, nil }
		c.After = func(d time.Duration) <-chan time.Time { // a clock that moves only when waited on
			s.clock = s.clock.Add(d)
			ch := make(chan time.Time, 1)
			ch <- s.clock
			return ch
		}
	}
	s.publish(t, "1.1.0", s.payload)
	a := s.agent(t, s.fleet.srv.URL, withBoot)
	if _, err := a.CheckAndInstall(ctx); err != nil {
		t.Fatalf("install 1.1.0: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "state", "install.json")); err != nil {
		t.Fatalf("no install record: %v", err)
	}
	// nvrd restarts before the reboot: the new agent knows the install is pending.
	a = s.agent(t, s.fleet.srv.URL, withBoot)
	if err := a.ConfirmBoot(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.sys.snapshot()
	if _, err := a.CheckAndInstall(ctx); !errors.Is(err, ErrNoUpdate) {
		t.Fatalf("second install before the reboot: %v, want ErrNoUpdate", err)
	}
	if s.sys.snapshot() != before {
		t.Fatal("slots changed while a reboot was pending")
	}

	// Three boots of B later GRUB is back on A.
	boot = "boot-4"
	g := GRUBEnv{Path: s.sys.grubenv}
	if err := g.Set(ctx, map[string]string{"B_TRY": "3", "A_TRY": "1"}); err != nil {
		t.Fatal(err)
	}
	s.sys.boot("A")
	a = s.agent(t, s.fleet.srv.URL, func(c *Config) { withBoot(c); c.HealthyFor = time.Second })
	if err := a.ConfirmBoot(ctx); err != nil {
		t.Fatal(err)
	}
	before = s.sys.snapshot()
	_, err := a.CheckAndInstall(ctx)
	if !errors.Is(err, ErrNoUpdate) {
		t.Fatalf("reinstall of the failed 1.1.0: %v, want ErrNoUpdate", err)
	}
	t.Logf("refused: %v", err)
	if s.sys.snapshot() != before {
		t.Fatal("slots changed")
	}

	// A newer release is taken.
	s.publish(t, "1.2.0", s.payload)
	got, err := a.CheckAndInstall(ctx)
	if err != nil || got.Version != "1.2.0" {
		t.Fatalf("install 1.2.0: %v %v", got.Version, err)
	}
	boot = "boot-5"
	if err := g.Set(ctx, map[string]string{"B_TRY": "1"}); err != nil {
		t.Fatal(err)
	}
	s.sys.boot("B")
	b := s.agent(t, s.fleet.srv.URL, func(c *Config) {
		withBoot(c)
		c.Client.Current = Version{1, 2, 0}
		c.HealthyFor = time.Second
	})
	if err := b.ConfirmBoot(ctx); err != nil {
		t.Fatal(err)
	}
	if onTrial, _, _ := g.Trial(ctx, "B"); onTrial {
		t.Fatal("B still on trial")
	}
	if _, err := os.Stat(filepath.Join(s.dir, "state", "install.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("install record left after confirmation: %v", err)
	}
}

func FuzzParseInstallRecord(f *testing.F) {
	for _, s := range []string{
		`{"version":"1.1.0","from":"A","boot_id":"8c3f2f0e-6a3b-4d57-9d7e-0f1e2d3c4b5a"}`,
		`{"version":"01.1.0","from":"A","boot_id":"x"}`,
		`{"version":"1.1.0","from":"","boot_id":"x"}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseInstallRecord(b)
		if err != nil {
			return
		}
		if _, err := ParseVersion(r.Version); err != nil || r.From == "" || r.BootID == "" {
			t.Fatalf("accepted %+v", r)
		}
	})
}
