package camera

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/edgenvr/nvr/netconfig/nstest"
)

const benchCameras = 64

// BenchmarkDiscoverAdopt64 measures WS-Discovery of 64 camsim cameras on a
// namespace's loopback and their adoption over HTTPS (certificate pinned,
// inventory read, generated password set and proven, accounts listed), 8 at
// a time.
func BenchmarkDiscoverAdopt64(b *testing.B) {
	benchDiscoverAdopt(b, nil)
}

// BenchmarkDiscoverAdopt64Accounts is BenchmarkDiscoverAdopt64 with three
// more accounts on every camera: two deleted at adoption, one built in
// (camsim refuses its deletion) given a generated password proven by a login.
func BenchmarkDiscoverAdopt64Accounts(b *testing.B) {
	benchDiscoverAdopt(b, accountArgs(b, "service:Operator", "installer:Administrator", "builtin:User:fixed"))
}

func benchDiscoverAdopt(b *testing.B, extra []string) {
	nstest.Require(b)
	tp := testTPM(b)
	for b.Loop() {
		b.StopTimer()
		ns := nstest.New(b, "nvrcamb")
		ns.Exec(b, "ip", "link", "set", "lo", "multicast", "on")
		s := startSimIn(b, ns, benchCameras, append([]string{"-discovery", "lo"}, extra...)...)
		dial, listen := nsNet(b, ns)
		m, _ := newManager(b, b.TempDir(), tp, &syncBuffer{}, func(c *Config) {
			c.Dial, c.ListenPacket, c.Interface = dial, listen, "lo"
		})
		ctx := context.Background()
		b.StartTimer()

		found, err := m.Discover(ctx, time.Second)
		if err != nil || len(found) != benchCameras {
			b.Fatalf("discovered %d: %v", len(found), err)
		}
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for _, d := range found {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := m.Adopt(ctx, AdoptRequest{HTTP: d.HTTP, HTTPS: d.HTTPS, Username: factoryUser, Password: factoryPass}); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		if n := len(m.Cameras()); n != benchCameras {
			b.Fatalf("adopted %d", n)
		}
		if len(extra) > 0 {
			for cam, users := range s.allUsers(b) {
				if len(users) != 2 || users["builtin"] == "builtin-factory-pw" {
					b.Fatalf("%s: accounts after adoption: %d", cam, len(users))
				}
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(benchCameras), "cameras/op")
}

// BenchmarkRotate64 measures a bulk password rotation of 64 adopted cameras
// (each: pending password sealed to disk, SetUser, login with the new one,
// commit), cfg.Parallel (8) at a time.
func BenchmarkRotate64(b *testing.B) {
	s := startSim(b, benchCameras)
	m, _ := newManager(b, b.TempDir(), testTPM(b), &syncBuffer{}, nil)
	ctx := context.Background()
	adoptAll(b, ctx, m, s)
	for b.Loop() {
		for _, r := range m.RotateAll(ctx, nil) {
			if !r.OK {
				b.Fatalf("%s: %s", r.Camera, r.Error)
			}
		}
	}
	b.ReportMetric(float64(benchCameras), "cameras/op")
}
