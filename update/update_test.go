package update

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

const board = "x86-generic"

var release = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// setup is one appliance (RAUC with slots A and B, running 1.0.0 from A) and one fleet server.
type setup struct {
	sys            *raucSystem
	fleet          *fleet
	cert, key, dir string
	clock          time.Time
	payload        []byte
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	dir := t.TempDir()
	cert, key := signingCert(t, dir, "release")
	s := &setup{dir: dir, cert: cert, key: key, clock: release.Add(time.Hour)}
	s.sys = startRAUC(t, cert)
	s.fleet = newFleet(t, release, RepoOptions{})
	s.payload = bytes.Repeat([]byte("rootfs B "), 50_000)
	return s
}

func (s *setup) publish(t *testing.T, version string, payload []byte) string {
	t.Helper()
	b := makeBundle(t, s.dir, s.cert, s.key, testCompatible, version, payload)
	tp, err := s.fleet.repo.AddBundle(b, Target{Board: board, Compatible: testCompatible, Version: version})
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func (s *setup) agent(t *testing.T, url string, mut func(*Config)) *Agent {
	t.Helper()
	cfg := Config{
		Client: ClientConfig{RepositoryURL: url, TrustedRoot: s.fleet.root(t), StateDir: filepath.Join(s.dir, "state"),
			Board: board, Current: Version{1, 0, 0}},
		Installer:  s.sys.installer(),
		Bootloader: GRUBEnv{Path: s.sys.grubenv},
		Compatible: testCompatible,
		Healthy:    func() bool { return true },
		Now:        func() time.Time { return s.clock },
	}
	if mut != nil {
		mut(&cfg)
	}
	a, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestUpdateAToB installs a newer bundle from a loopback fleet server into slot B, "reboots" into B on
// trial and marks it good once healthy.
func TestUpdateAToB(t *testing.T) {
	s := newSetup(t)
	s.publish(t, "1.1.0", s.payload)
	a := s.agent(t, s.fleet.srv.URL, nil)
	ctx := context.Background()
	got, err := a.CheckAndInstall(ctx)
	if err != nil {
		t.Fatalf("update A→B: %v", err)
	}
	if got.Version != "1.1.0" {
		t.Fatalf("installed %s", got.Version)
	}
	slotB, _ := os.ReadFile(s.sys.slotB)
	if !bytes.HasPrefix(slotB, s.payload) {
		t.Fatal("slot B does not hold the new image")
	}
	slotA, _ := os.ReadFile(s.sys.slotA)
	if !bytes.Equal(slotA, bytes.Repeat([]byte{'A'}, 1<<20)) {
		t.Fatal("slot A (running) was changed")
	}
	g := GRUBEnv{Path: s.sys.grubenv}
	env, err := g.Env(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if env["ORDER"] != "B A" {
		t.Fatalf("boot order after install = %q, want B A", env["ORDER"])
	}
	// The bootloader takes B on trial (grub.cfg counts the attempt); the agent confirms it once healthy.
	if err := g.Set(ctx, map[string]string{"B_TRY": "1"}); err != nil {
		t.Fatal(err)
	}
	s.sys.boot("B")
	healthyChecks := 0
	b := s.agent(t, s.fleet.srv.URL, func(c *Config) {
		c.Client.Current = Version{1, 1, 0}
		c.HealthyFor = 3 * time.Second
		c.Healthy = func() bool { healthyChecks++; return true }
		c.After = func(d time.Duration) <-chan time.Time {
			s.clock = s.clock.Add(d)
			ch := make(chan time.Time, 1)
			ch <- s.clock
			return ch
		}
	})
	if err := b.ConfirmBoot(ctx); err != nil {
		t.Fatal(err)
	}
	env, _ = g.Env(ctx)
	if env["B_TRY"] != "0" || env["B_OK"] != "1" {
		t.Fatalf("after mark-good: %v", env)
	}
	if healthyChecks < 4 {
		t.Fatalf("marked good after %d health checks, want it healthy for the whole 3 s", healthyChecks)
	}
	if onTrial, _, _ := g.Trial(ctx, "B"); onTrial {
		t.Fatal("B still on trial")
	}
}

// TestNeverHealthyIsNeverMarked: a slot whose nvrd never becomes healthy is left on trial, so the
// bootloader's attempt count runs out and it falls back.
func TestNeverHealthyIsNeverMarked(t *testing.T) {
	s := newSetup(t)
	ctx := context.Background()
	g := GRUBEnv{Path: s.sys.grubenv}
	if err := g.Set(ctx, map[string]string{"ORDER": "B A", "B_TRY": "1"}); err != nil {
		t.Fatal(err)
	}
	s.sys.boot("B")
	ctx, cancel := context.WithCancel(ctx)
	checks := 0
	a := s.agent(t, s.fleet.srv.URL, func(c *Config) {
		c.Healthy = func() bool {
			checks++
			if checks == 50 {
				cancel()
			}
			return false
		}
		c.After = func(d time.Duration) <-chan time.Time {
			ch := make(chan time.Time, 1)
			ch <- s.clock
			return ch
		}
	})
	if err := a.ConfirmBoot(ctx); err != nil {
		t.Fatal(err)
	}
	if onTrial, left, _ := g.Trial(context.Background(), "B"); !onTrial || left != 2 {
		t.Fatalf("B on trial = %v with %d attempts left; want still on trial, 2 left", onTrial, left)
	}
}

// TestRejections: every attack leaves both slots and the boot environment as they were, with its own error.
func TestRejections(t *testing.T) {
	s := newSetup(t)
	good := s.publish(t, "1.1.0", s.payload)
	repoDir := filepath.Join(s.fleet.repo.Dir, "repository")
	ctx := context.Background()

	// An old copy of the repository for the rollback case, taken before a second release.
	oldRepo := t.TempDir()
	copyDir(t, repoDir, oldRepo)
	s.publish(t, "1.2.0", bytes.Repeat([]byte("rootfs C "), 50_000))

	evilCert, evilKey := signingCert(t, s.dir, "attacker")
	cases := []struct {
		name  string
		setup func(t *testing.T) (url string, mut func(*Config))
		want  error
	}{
		{"bundle signed by an unknown key", func(t *testing.T) (string, func(*Config)) {
			f := newFleet(t, release, RepoOptions{})
			b := makeBundle(t, s.dir, evilCert, evilKey, testCompatible, "1.3.0", s.payload)
			if _, err := f.repo.AddBundle(b, Target{Board: board, Compatible: testCompatible, Version: "1.3.0"}); err != nil {
				t.Fatal(err)
			}
			return f.srv.URL, func(c *Config) { c.Client.TrustedRoot = f.root(t) }
		}, ErrUntrusted},
		{"targets metadata signed by an unknown key", func(t *testing.T) (string, func(*Config)) {
			dir := t.TempDir()
			copyDir(t, repoDir, dir)
			resignTargets(t, filepath.Join(dir, "metadata"))
			return serve(t, http.FileServer(http.Dir(dir))), nil
		}, ErrUntrusted},
		{"expired metadata (freeze)", func(t *testing.T) (string, func(*Config)) {
			return s.fleet.srv.URL, func(c *Config) {
				frozen := release.Add(3 * 24 * time.Hour)
				c.Now = func() time.Time { return frozen }
			}
		}, ErrExpired},
		{"older metadata (rollback)", func(t *testing.T) (string, func(*Config)) {
			// The appliance has seen the newer metadata; the server now serves the older set.
			state := t.TempDir()
			a := s.agent(t, s.fleet.srv.URL, func(c *Config) { c.Client.Current = Version{1, 2, 0}; c.Client.StateDir = state })
			if _, err := a.client.Check(ctx); !errors.Is(err, ErrNoUpdate) {
				t.Fatalf("priming check: %v", err)
			}
			return serve(t, http.FileServer(http.Dir(oldRepo))), func(c *Config) { c.Client.Current = Version{1, 2, 0}; c.Client.StateDir = state }
		}, ErrRollback},
		{"older firmware (rollback)", func(t *testing.T) (string, func(*Config)) {
			return s.fleet.srv.URL, func(c *Config) {
				c.Client.StateDir = t.TempDir()
				c.Client.Current = Version{2, 0, 0}
			}
		}, ErrRollback},
		{"target whose hash differs (mix and match)", func(t *testing.T) (string, func(*Config)) {
			dir := t.TempDir()
			copyDir(t, repoDir, dir)
			// Another bundle of the same length served where the signed 1.2.0 is expected.
			newer, _ := filepath.Glob(filepath.Join(dir, "targets", board, "*.nvr-1.2.0.raucb"))
			b, err := os.ReadFile(newer[0])
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(newer[0], b, 0o644); err != nil {
				t.Fatal(err)
			}
			return serve(t, http.FileServer(http.Dir(dir))), func(c *Config) { c.Client.StateDir = t.TempDir() }
		}, ErrHashMismatch},
		{"oversized target (endless data)", func(t *testing.T) (string, func(*Config)) {
			files := http.FileServer(http.Dir(repoDir))
			return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/targets/") {
					w.WriteHeader(http.StatusOK)
					zero := make([]byte, 64<<10)
					for i := 0; i < 1<<12; i++ { // bounded: 256 MiB at most, the client stops far earlier
						if _, err := w.Write(zero); err != nil {
							return
						}
					}
					return
				}
				files.ServeHTTP(w, r)
			})), func(c *Config) { c.Client.StateDir = t.TempDir() }
		}, ErrTooLarge},
		{"target longer than the agent's limit", func(t *testing.T) (string, func(*Config)) {
			return s.fleet.srv.URL, func(c *Config) {
				c.Client.StateDir = t.TempDir()
				c.Client.MaxBundleSize = 1000
			}
		}, ErrTooLarge},
	}
	_ = good
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.sys.snapshot()
			url, mut := tc.setup(t)
			a := s.agent(t, url, func(c *Config) {
				c.Client.StateDir = t.TempDir()
				if mut != nil {
					mut(c)
				}
			})
			_, err := a.CheckAndInstall(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("rejected: %v", err)
			if after := s.sys.snapshot(); after != before {
				t.Fatal("a rejected update changed a slot or the boot environment")
			}
			st, err := s.sys.installer().Status(ctx)
			if err != nil || st.Booted != "A" {
				t.Fatalf("running slot: %v %v", st.Booted, err)
			}
		})
	}
}

func serve(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// resignTargets replaces the signatures of the newest targets metadata with one by a key nobody trusts.
func resignTargets(t *testing.T, metaDir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(metaDir, "*.targets.json"))
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := signature.LoadSigner(priv, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		md, err := metadata.Targets().FromFile(f)
		if err != nil {
			t.Fatal(err)
		}
		md.ClearSignatures()
		if _, err := md.Sign(signer); err != nil {
			t.Fatal(err)
		}
		if err := md.ToFile(f, true); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKeyRotationAndThreshold: a client pinned to root v1 follows root and targets key rotations; a
// threshold of two root keys cannot be met with one.
func TestKeyRotationAndThreshold(t *testing.T) {
	now := release
	f := newFleet(t, now, RepoOptions{RootKeys: 3, RootThreshold: 2})
	pinned := f.root(t)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "fake.raucb")
	if err := os.WriteFile(bundle, []byte("not verified by this test"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.AddBundle(bundle, Target{Board: board, Compatible: testCompatible, Version: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{metadata.TARGETS, metadata.ROOT, metadata.TIMESTAMP} {
		if err := f.repo.RotateKey(role); err != nil {
			t.Fatalf("rotate %s: %v", role, err)
		}
	}
	c, err := NewClient(ClientConfig{RepositoryURL: f.srv.URL, TrustedRoot: pinned, StateDir: t.TempDir(), Board: board,
		Current: Version{1, 0, 0}, Now: func() time.Time { return now.Add(time.Hour) }}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	tg, err := c.Check(context.Background())
	if err != nil || tg.Version != "1.1.0" {
		t.Fatalf("after rotations: %+v %v", tg, err)
	}
	var rv struct {
		Signed struct{ Version int } `json:"signed"`
	}
	b, _ := os.ReadFile(filepath.Join(c.metaDir(), "root.json"))
	if err := json.Unmarshal(b, &rv); err != nil || rv.Signed.Version != 4 {
		t.Fatalf("client trusts root v%d (%v), want 4", rv.Signed.Version, err)
	}
	// Threshold: keep one root key, lose the others; a root change cannot be signed.
	keys, _ := filepath.Glob(filepath.Join(f.repo.KeyDirs[0], "root-*.pem"))
	for _, k := range keys[1:] {
		os.Remove(k)
	}
	if err := f.repo.RotateKey(metadata.TARGETS); err == nil || !strings.Contains(err.Error(), "needs 2 signatures") {
		t.Fatalf("rotation with one of two root keys: %v", err)
	}
}

func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{{"1.2.3", true}, {"0.0.0", true}, {"01.2.3", false}, {"1.2", false}, {"1.2.3-rc1", false}, {"-1.2.3", false}, {"1.2.3.4", false}, {"9999999999.1.1", false}} {
		_, err := ParseVersion(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseVersion(%q) = %v", tc.in, err)
		}
	}
	a, _ := ParseVersion("1.10.0")
	b, _ := ParseVersion("1.9.9")
	if a.Compare(b) != 1 || b.Compare(a) != -1 || a.Compare(a) != 0 {
		t.Fatal("compare")
	}
}

func TestCheckBundle(t *testing.T) {
	tg := Target{Board: board, Compatible: testCompatible, Version: "1.1.0"}
	cur := Version{1, 0, 0}
	for _, tc := range []struct {
		info BundleInfo
		want error
	}{
		{BundleInfo{testCompatible, "1.1.0"}, nil},
		{BundleInfo{"other", "1.1.0"}, ErrIncompatible},
		{BundleInfo{testCompatible, "1.2.0"}, ErrHashMismatch},
		{BundleInfo{testCompatible, "x"}, ErrMalformed},
	} {
		if err := CheckBundle(tc.info, tg, testCompatible, cur); !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("%+v: %v, want %v", tc.info, err, tc.want)
		}
	}
	if err := CheckBundle(BundleInfo{testCompatible, "1.1.0"}, tg, testCompatible, Version{1, 1, 0}); !errors.Is(err, ErrRollback) {
		t.Errorf("same version: %v", err)
	}
}
