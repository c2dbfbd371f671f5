package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/board"
	"github.com/edgenvr/nvr/update"
)

func TestReleaseVersion(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		text, want string
		ok         bool
	}{
		{"NVR_VERSION=1.2.3\n", "1.2.3", true},
		{"# firmware\nNVR_VERSION=\"0.10.0\"\n", "0.10.0", true},
		{"NVR_VERSION=1.2\n", "", false},
		{"VERSION=1.2.3\n", "", false},
		{"", "", false},
	} {
		name := filepath.Join(dir, "release")
		if err := os.WriteFile(name, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		v, err := releaseVersion(name)
		if (err == nil) != tc.ok || (tc.ok && v.String() != tc.want) {
			t.Errorf("%q: %v %v", tc.text, v, err)
		}
	}
}

func TestHealthGate(t *testing.T) {
	ready, healthy := false, true
	var asked time.Duration
	g := healthGate(func() bool { return ready }, func(d time.Duration) (bool, []string) { asked = d; return healthy, nil })
	if g() {
		t.Fatal("healthy before READY")
	}
	ready = true
	if !g() || asked != watchdogMaxAge {
		t.Fatalf("ready and healthy: %v (asked with %v)", g(), asked)
	}
	healthy = false
	if g() {
		t.Fatal("a wedged pipeline passed the gate")
	}
}

func TestUpdateFlags(t *testing.T) {
	fs := flag.NewFlagSet("nvrd", flag.ContinueOnError)
	f := addUpdateFlags(fs)
	log := slog.New(slog.DiscardHandler)
	prof, err := board.Lookup("x86-generic")
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := startUpdate(context.Background(), f, prof, nil, nil, log); err != nil {
		t.Fatalf("agent off without -update-repo: %v", err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root.json")
	rel := filepath.Join(dir, "nvr-release")
	repo := &update.Repo{Dir: filepath.Join(dir, "release"), KeyDirs: []string{filepath.Join(dir, "keys")}}
	if err := repo.Init(update.RepoOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := repo.RootJSON()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(root, b, 0o644)
	os.WriteFile(rel, []byte("NVR_VERSION=1.0.0\n"), 0o644)
	if err := fs.Parse([]string{"-update-repo", "https://fleet.example/nvr", "-update-root", root, "-update-release", rel,
		"-update-state", filepath.Join(dir, "state")}); err != nil {
		t.Fatal(err)
	}
	if _, err := newUpdateAgent(f, prof, func() bool { return true }, nil, log); err != nil {
		t.Fatalf("agent from good flags: %v", err)
	}
	*f.repo = "https://user:secret@fleet.example/"
	_, err = newUpdateAgent(f, prof, func() bool { return true }, nil, log)
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("credentials in the URL: %v", err)
	}
	*f.repo = "https://fleet.example/"
	*f.release = filepath.Join(dir, "missing")
	if _, err := newUpdateAgent(f, prof, nil, nil, log); err == nil {
		t.Fatal("no error without a release file")
	}
	if err := requestReboot(filepath.Join(dir, "state")); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "state", rebootRequest)); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Fatal(err)
	}
}
