package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgenvr/nvr/update"
)

// TestRelease runs every release step with the real rauc and openssl, then an appliance's client reads
// the result from a loopback static server.
func TestRelease(t *testing.T) {
	dir := t.TempDir()
	step := func(args ...string) {
		t.Helper()
		var out, errb bytes.Buffer
		code, err := release(append(args[:1:1], append([]string{"-dir", dir}, args[1:]...)...), &out, &errb)
		if err != nil || code != 0 {
			t.Fatalf("nvr release %v: %d %v\n%s%s", args, code, err, out.String(), errb.String())
		}
	}
	step("init", "-root-keys", "3", "-root-threshold", "2")
	step("cert")
	img := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("root"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(dir, "fw.raucb")
	step("bundle", "-rootfs", img, "-compatible", "nvr-x86-generic", "-version", "1.1.0", "-format", "plain", "-o", b)
	step("add", "-bundle", b, "-board", "x86-generic", "-compatible", "nvr-x86-generic", "-version", "1.1.0")
	root, err := os.ReadFile(filepath.Join(dir, "repository", "metadata", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	step("rotate", "-role", "targets")
	step("timestamp")
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Join(dir, "repository"))))
	defer srv.Close()
	c, err := update.NewClient(update.ClientConfig{RepositoryURL: srv.URL, TrustedRoot: root, StateDir: t.TempDir(),
		Board: "x86-generic", Current: update.Version{Major: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := c.Check(context.Background())
	if err != nil || tg.Version != "1.1.0" {
		t.Fatalf("%+v %v", tg, err)
	}
	if _, err := c.Download(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
}
