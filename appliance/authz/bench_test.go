package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"slices"
	"testing"
	"time"
)

func benchService(b *testing.B, p Argon2Params) *Service {
	b.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := New(Config{DataDir: b.TempDir(), Signer: key, Argon2: p}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.PutRole(Subject{User: "bench"}, DefaultRoles()[2], ""); err != nil {
		b.Fatal(err)
	}
	if err := s.CreateUser(Subject{User: "bench"}, NewUser{Name: "alice", Password: "bench password 123", Roles: []string{"viewer"}}, ""); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkLogin measures the password step of a login at the production argon2id cost
// (t=3, m=64 MiB, p=2), reporting p50 and p99.
func BenchmarkLogin(b *testing.B) {
	s := benchService(b, DefaultArgon2)
	ctx := context.Background()
	var ds []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := s.Login(ctx, "alice", "bench password 123", "10.0.0.1"); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkDecide measures authorization decisions, each written to the audit log.
func BenchmarkDecide(b *testing.B) {
	s := benchService(b, Argon2Params{Time: 1, Memory: 64, Threads: 1})
	req := Request{Subject: Subject{User: "alice", Via: "session", Ref: "0123456789abcdef"}, Action: Live, Camera: "cam1", Source: "10.0.0.1"}
	t0 := time.Now()
	for b.Loop() {
		if d := s.Decide(req); !d.Allow {
			b.Fatal(d.Reason)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "decisions/s")
}

// BenchmarkAuditAppend measures audit appends (hash chain, write(2), a signed checkpoint every 256).
func BenchmarkAuditAppend(b *testing.B) {
	s := benchService(b, Argon2Params{Time: 1, Memory: 64, Threads: 1})
	t0 := time.Now()
	for b.Loop() {
		s.Event(Subject{User: "alice"}, "bench", "camera/cam1", "ok", "benchmark entry", "10.0.0.1")
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "appends/s")
}
