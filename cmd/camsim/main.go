// Command camsim simulates a rack of IP cameras for tests and benchmarks of
// the NVR: it serves /cam1 … /camN over RTSP (TCP-interleaved and UDP) and
// optionally RTSPS, looping a pre-encoded H.264 or H.265 clip at real-time
// pace, with RTSP digest authentication.
//
// With -onvif each camera is also an ONVIF device with its own HTTP (and,
// with -onvifs, HTTPS) port: Device, Media and Events services with
// WS-UsernameToken digest authentication, user management, firmware upgrade
// and pull-point events; with -discovery it answers WS-Discovery probes. The
// -user/-password-file account is every device's initial administrator; once
// an ONVIF client changes a device's users, RTSP for that camera accepts
// those users instead. -account adds further accounts (a factory "service"
// account, an installer's), each with its password read from a file, and
// -fixed-account makes one of them built in (DeleteUsers refuses it).
//
// A loopback-only HTTP control endpoint reports per-camera statistics
// (GET /stats) and injects faults (POST /fault): dropped sessions, stalls,
// malformed RTP packets and a mid-stream resolution change. Once listening,
// camsim writes the bound addresses as JSON to -ready-file.
//
// camsim never runs without authentication unless -no-auth is given, has no
// built-in password, and never binds its control endpoint beyond loopback.
// The clips come from scripts/clips.sh.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "camsim:", err)
		stop()
		os.Exit(1)
	}
}

// run parses args, builds the simulator and serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("camsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg          Config
		user         = fs.String("user", "", "RTSP user name (digest authentication)")
		passwordFile = fs.String("password-file", "", "file holding the RTSP password (first line)")
		certFile     = fs.String("cert", "", "PEM certificate for RTSPS (with -key); default: a self-signed one")
		keyFile      = fs.String("key", "", "PEM private key for RTSPS (with -cert)")
		certOut      = fs.String("cert-out", "", "write the generated self-signed certificate (PEM) here")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
	)
	fs.StringVar(&cfg.RTSPAddr, "rtsp", "127.0.0.1:8554", "plain RTSP listen address (port 0: kernel-chosen)")
	fs.StringVar(&cfg.RTSPSAddr, "rtsps", "", "RTSPS listen address (empty: no RTSPS)")
	fs.StringVar(&cfg.UDPRTPAddr, "udp-rtp", "", "UDP RTP address, even port (empty: kernel-chosen pair on 127.0.0.1)")
	fs.StringVar(&cfg.UDPRTCPAddr, "udp-rtcp", "", "UDP RTCP address, the RTP port + 1")
	fs.StringVar(&cfg.ControlAddr, "control", "127.0.0.1:0", "HTTP control address (loopback only)")
	fs.IntVar(&cfg.Cameras, "cameras", 1, "number of cameras, served as /cam1 … /camN")
	fs.StringVar(&cfg.Codec, "codec", "h264", "h264 or h265")
	fs.StringVar(&cfg.ClipDir, "clips", "build/clips", "directory of clips made by scripts/clips.sh")
	fs.BoolVar(&cfg.NoAuth, "no-auth", false, "serve without authentication")
	fs.StringVar(&cfg.ReadyFile, "ready-file", "", "write the bound addresses here as JSON once listening")
	fs.StringVar(&cfg.ONVIFAddr, "onvif", "", "ONVIF HTTP address; each camera is one device (port 0: kernel-chosen per camera, P: P+i-1)")
	fs.StringVar(&cfg.ONVIFSAddr, "onvifs", "", "ONVIF HTTPS address, like -onvif (each device has its own certificate)")
	fs.StringVar(&cfg.DiscoveryIface, "discovery", "", "answer WS-Discovery probes on this interface (needs -onvif)")
	fs.StringVar(&cfg.ONVIFStateFile, "onvif-state", "", "write every ONVIF device's state (users, firmware, identity) here as JSON, for tests")
	fs.DurationVar(&cfg.ONVIFReboot, "onvif-reboot", time.Second, "how long a simulated reboot (after SystemReboot or a firmware upgrade) lasts")
	var accounts []string
	fixed := map[string]bool{}
	fs.Func("account", "extra ONVIF account on every camera, NAME:LEVEL:PASSWORD-FILE (level Administrator, Operator, User or Anonymous; the password is the file's first line); repeatable", func(v string) error {
		accounts = append(accounts, v)
		return nil
	})
	fs.Func("fixed-account", "an -account NAME that the cameras keep built in: DeleteUsers refuses it; repeatable", func(v string) error {
		fixed[v] = true
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, v := range accounts {
		a, err := parseAccount(v)
		if err != nil {
			return err
		}
		if a.Name == *user || slices.ContainsFunc(cfg.Accounts, func(x Account) bool { return x.Name == a.Name }) {
			return fmt.Errorf("-account %q given twice", a.Name)
		}
		a.Fixed = fixed[a.Name]
		delete(fixed, a.Name)
		cfg.Accounts = append(cfg.Accounts, a)
	}
	for name := range fixed {
		return fmt.Errorf("-fixed-account %q: no -account of that name", name)
	}
	if len(cfg.Accounts) > 0 && cfg.ONVIFAddr == "" {
		return errors.New("-account needs -onvif")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	switch {
	case cfg.NoAuth && (*user != "" || *passwordFile != ""):
		return errors.New("-no-auth conflicts with -user/-password-file")
	case cfg.NoAuth:
	case *user == "" && *passwordFile == "":
		return errors.New("refusing to start without authentication: give -user and -password-file, or -no-auth")
	case *user == "":
		return errors.New("-password-file needs -user")
	case *passwordFile == "":
		return errors.New("-user needs -password-file")
	default:
		pw, err := readPassword(*passwordFile)
		if err != nil {
			return err
		}
		cfg.User, cfg.Password = *user, pw
	}

	if cfg.RTSPSAddr != "" {
		tc, err := tlsConfig(*certFile, *keyFile, *certOut)
		if err != nil {
			return err
		}
		cfg.TLS = tc
	} else if *certFile != "" || *keyFile != "" || *certOut != "" {
		return errors.New("-cert, -key and -cert-out need -rtsps")
	}

	if (cfg.ONVIFSAddr != "" || cfg.DiscoveryIface != "" || cfg.ONVIFStateFile != "") && cfg.ONVIFAddr == "" {
		return errors.New("-onvifs, -discovery and -onvif-state need -onvif")
	}
	if cfg.ONVIFAddr != "" && cfg.NoAuth {
		return errors.New("-onvif needs authentication: the initial ONVIF administrator is -user with -password-file")
	}

	cfg.Seed = uint64(time.Now().UnixNano())
	cfg.Announce = stdout
	sim, err := New(cfg, log)
	if err != nil {
		return err
	}
	return sim.Run(ctx)
}

// readPassword returns the first line of path, which must not be empty.
func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read -password-file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimRight(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("read -password-file %s: password is empty", path)
	}
	return pw, nil
}

// tlsConfig loads -cert/-key, or generates a self-signed ECDSA certificate
// for 127.0.0.1, ::1 and localhost and writes it to certOut.
func tlsConfig(certFile, keyFile, certOut string) (*tls.Config, error) {
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("-cert and -key go together")
		}
		if certOut != "" {
			return nil, errors.New("-cert-out is for a generated certificate; not with -cert")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load RTSPS certificate: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate RTSPS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "camsim"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create RTSPS certificate: %w", err)
	}
	if certOut != "" {
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if err := writeFileAtomic(certOut, pemBytes); err != nil {
			return nil, fmt.Errorf("write -cert-out: %w", err)
		}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".camsim-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
