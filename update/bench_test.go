package update

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDownloadInstall: one update of a 32 MiB root image from a loopback fleet server: TUF refresh,
// streamed download with hash check, RAUC signature check and install into the inactive (file) slot.
// Reports MB/s of bundle.
func BenchmarkDownloadInstall(b *testing.B) {
	dir := b.TempDir()
	cert, key := signingCert(b, dir, "release")
	sys := startRAUC(b, cert)
	f := newFleet(b, time.Now().Add(-time.Hour), RepoOptions{})
	payload := make([]byte, 32<<20)
	rand.Read(payload)
	bundle := makeBundle(b, dir, cert, key, testCompatible, "1.1.0", payload)
	if _, err := f.repo.AddBundle(bundle, Target{Board: board, Compatible: testCompatible, Version: "1.1.0"}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, err := New(Config{
			Client: ClientConfig{RepositoryURL: f.srv.URL, TrustedRoot: f.root(b), StateDir: filepath.Join(b.TempDir(), "s"),
				Board: board, Current: Version{1, 0, 0}},
			Installer: sys.installer(), Compatible: testCompatible, Healthy: func() bool { return true },
		}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.CheckAndInstall(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
