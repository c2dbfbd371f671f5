package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/edgenvr/nvr/update"
)

const releaseUsage = `usage:
  nvr release init      -dir DIR [-keys KEYDIR]... [-root-keys N -root-threshold T] [-targets-keys N -targets-threshold T]
  nvr release cert      -dir DIR             make the RAUC bundle signing certificate (KEYDIR/bundle.{cert,key}.pem)
  nvr release bundle    -dir DIR -rootfs SQUASHFS -compatible C -version V [-format verity|plain] -o OUT.raucb
  nvr release add       -dir DIR -bundle B -board NAME -compatible C -version V [-keys KEYDIR]...
  nvr release timestamp -dir DIR [-keys KEYDIR]...   re-sign the timestamp (run daily)
  nvr release rotate    -dir DIR -role root|targets|snapshot|timestamp [-keys KEYDIR]...
DIR/repository is what the fleet server serves. Signing uses every key of the role found in the KEYDIRs
(default DIR/keys); a threshold needs that many of them present.`

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func release(args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 {
		fmt.Fprintln(stderr, releaseUsage)
		return 2, nil
	}
	fs := flag.NewFlagSet("nvr release "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "release directory")
	var keys multiFlag
	fs.Var(&keys, "keys", "key directory (repeatable; default DIR/keys)")
	rootKeys := fs.Int("root-keys", 1, "number of root keys")
	rootThr := fs.Int("root-threshold", 1, "root signatures required")
	tgtKeys := fs.Int("targets-keys", 1, "number of targets keys")
	tgtThr := fs.Int("targets-threshold", 1, "targets signatures required")
	rootfs := fs.String("rootfs", "", "root file system image (squashfs)")
	compatible := fs.String("compatible", "", "RAUC compatible string")
	version := fs.String("version", "", "firmware version MAJOR.MINOR.PATCH")
	format := fs.String("format", "verity", "bundle format: verity (dm-verity, for devices) or plain")
	out := fs.String("o", "", "output bundle")
	bundle := fs.String("bundle", "", "bundle to publish")
	boardName := fs.String("board", "", "board profile name")
	role := fs.String("role", "", "role whose keys to rotate")
	if err := fs.Parse(args[1:]); err != nil {
		return 2, err
	}
	if *dir == "" {
		return 2, errors.New("release: -dir is required")
	}
	if len(keys) == 0 {
		keys = multiFlag{filepath.Join(*dir, "keys")}
	}
	repo := &update.Repo{Dir: *dir, KeyDirs: keys}
	switch args[0] {
	case "init":
		if err := repo.Init(update.RepoOptions{RootKeys: *rootKeys, RootThreshold: *rootThr, TargetsKeys: *tgtKeys, TargetsThreshold: *tgtThr}); err != nil {
			return 1, err
		}
		fmt.Fprintf(stdout, "release: repository in %s; ship %s in the image as the trusted root\n", filepath.Join(*dir, "repository"), filepath.Join(*dir, "repository", "metadata", "1.root.json"))
	case "cert":
		cert, key := filepath.Join(keys[0], "bundle.cert.pem"), filepath.Join(keys[0], "bundle.key.pem")
		if _, err := os.Stat(cert); err == nil {
			return 1, fmt.Errorf("release: %s exists", cert)
		}
		if err := os.MkdirAll(keys[0], 0o700); err != nil {
			return 1, err
		}
		cmd := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
			"-keyout", key, "-out", cert, "-days", "3650", "-subj", "/O=NVR firmware/CN=NVR release signing",
			"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,digitalSignature,keyCertSign")
		if b, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("openssl: %w: %s", err, b)
		}
		if err := os.Chmod(key, 0o600); err != nil {
			return 1, err
		}
		fmt.Fprintf(stdout, "release: bundle signing certificate %s (the image's RAUC keyring)\n", cert)
	case "bundle":
		if *rootfs == "" || *out == "" || !update.ValidName(*compatible) {
			return 2, errors.New("release bundle: -rootfs, -compatible and -o are required")
		}
		if _, err := update.ParseVersion(*version); err != nil {
			return 2, err
		}
		if *format != "verity" && *format != "plain" {
			return 2, fmt.Errorf("release bundle: format %q", *format)
		}
		src, err := os.MkdirTemp("", "nvr-bundle-")
		if err != nil {
			return 1, err
		}
		defer os.RemoveAll(src)
		if err := os.Link(*rootfs, filepath.Join(src, "rootfs.img")); err != nil {
			if err := copyFile(*rootfs, filepath.Join(src, "rootfs.img")); err != nil {
				return 1, err
			}
		}
		man := fmt.Sprintf("[update]\ncompatible=%s\nversion=%s\n\n[bundle]\nformat=%s\n\n[image.rootfs]\nfilename=rootfs.img\n", *compatible, *version, *format)
		if err := os.WriteFile(filepath.Join(src, "manifest.raucm"), []byte(man), 0o644); err != nil {
			return 1, err
		}
		cmd := exec.Command("rauc", "bundle", "--cert="+filepath.Join(keys[0], "bundle.cert.pem"), "--key="+filepath.Join(keys[0], "bundle.key.pem"), src, *out)
		if b, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("rauc bundle: %w: %s", err, b)
		}
		fmt.Fprintf(stdout, "release: bundle %s (%s %s)\n", *out, *compatible, *version)
	case "add":
		tp, err := repo.AddBundle(*bundle, update.Target{Board: *boardName, Compatible: *compatible, Version: *version})
		if err != nil {
			return 1, err
		}
		fmt.Fprintf(stdout, "release: published %s\n", tp)
	case "timestamp":
		if err := repo.Refresh(); err != nil {
			return 1, err
		}
		fmt.Fprintln(stdout, "release: timestamp re-signed")
	case "rotate":
		if err := repo.RotateKey(*role); err != nil {
			return 1, err
		}
		fmt.Fprintf(stdout, "release: %s keys rotated; old keys moved to retired/\n", *role)
	default:
		fmt.Fprintln(stderr, releaseUsage)
		return 2, fmt.Errorf("release: unknown step %q", args[0])
	}
	return 0, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
