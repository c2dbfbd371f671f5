// Command nvrd is the NVR appliance daemon: it records the configured cameras into the encrypted data
// directory until it receives SIGTERM or SIGINT, then closes every segment. A kill at any instant is
// recovered at the next start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/edgenvr/nvr/appliance"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/board"
	"github.com/edgenvr/nvr/internal/cli"
	"github.com/edgenvr/nvr/netconfig"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nvrd:", err)
		os.Exit(1)
	}
}

// cameraFlags collects repeated -camera NAME=URL flags.
type cameraFlags []appliance.Camera

func (c *cameraFlags) String() string { return fmt.Sprint(len(*c), " cameras") }

func (c *cameraFlags) Set(v string) error {
	name, url, ok := strings.Cut(v, "=")
	if !ok || name == "" || url == "" {
		return errors.New("want NAME=rtsp://HOST/PATH")
	}
	if strings.Contains(url, "@") {
		return errors.New("credentials belong in the -camera-credentials file, not the URL")
	}
	*c = append(*c, appliance.Camera{Name: name, URL: url})
	return nil
}

// certFlags collects repeated -camera-cert NAME=FILE flags.
type certFlags map[string]string

func (c *certFlags) String() string { return fmt.Sprint(len(*c), " pinned certificates") }

func (c *certFlags) Set(v string) error {
	name, file, ok := strings.Cut(v, "=")
	if !ok || name == "" || file == "" {
		return errors.New("want NAME=FILE.pem")
	}
	if *c == nil {
		*c = certFlags{}
	}
	(*c)[name] = file
	return nil
}

func run(args []string) error {
	fs := flag.NewFlagSet("nvrd", flag.ContinueOnError)
	var cams cameraFlags
	dataDir := fs.String("data", "/var/lib/nvr", "data directory (index and encrypted segments)")
	tpmDev := fs.String("tpm", "/dev/tpmrm0", "TPM: a device path, swtpm:HOST:PORT or swtpm:unix:PATH")
	fs.Var(&cams, "camera", "camera to record as NAME=rtsp://HOST/PATH (repeatable)")
	var certs certFlags
	fs.Var(&certs, "camera-cert", "pin an rtsps:// camera's certificate as NAME=FILE.pem (repeatable)")
	credFile := fs.String("camera-credentials", "", "file of camera credentials, one \"NAME USER PASSWORD\" per line (mode 600)")
	transport := fs.String("transport", "", "RTSP transport: tcp, udp, or empty for automatic")
	segment := fs.Duration("segment", 60*time.Second, "segment length")
	fragment := fs.Duration("fragment", time.Second, "fragment length (cut at the next key frame)")
	videoLoss := fs.Duration("video-loss", 5*time.Second, "silence after which a camera raises video loss")
	high := fs.Float64("retention-high", 0.90, "delete oldest segments when the file system is fuller than this fraction")
	low := fs.Float64("retention-low", 0.85, "... until it is below this fraction")
	maxAge := fs.Duration("max-age", 0, "delete segments older than this (0: keep until space is needed)")
	retEvery := fs.Duration("retention-every", 10*time.Second, "retention pass interval")
	listen := fs.String("listen", "127.0.0.1:8443", "HTTPS address of the web pages and API (empty: none)")
	boardName := fs.String("board", "x86-generic", "hardware profile: "+strings.Join(board.Names(), ", "))
	display := fs.String("display", "", "override the board's display: console, none")
	cameraIface := fs.String("camera-iface", "", "camera network interface for ONVIF discovery (default: the camera bridge when -camera-net is set)")
	cameraNet := fs.String("camera-net", "", "wall off the board's camera ports as this network, the appliance's address and prefix (e.g. 10.77.0.1/24); empty: the camera network is managed elsewhere")
	cameraVLAN := fs.String("camera-vlan", "", "VLAN mode instead of a bridge: TRUNK:VID (e.g. eth1:100)")
	camera8021X := fs.Bool("camera-8021x", false, "802.1X on every camera port: nothing but EAPOL passes until hostapd authorizes the camera")
	netState := fs.String("net-state", "", "state of the camera network (leases, camera CA); default DATA/net")
	netRuntime := fs.String("net-runtime", "/run/nvr/net", "hostapd and wpa_supplicant runtime files")
	plainHTTP := fs.Bool("allow-plain-http-cameras", false, "allow adopting cameras without HTTPS (their new password crosses the camera network in clear)")
	bridgeRTSP := fs.String("bridge-rtsp", "", "plain RTSP address of the bridge for external systems (digest only), e.g. :554; empty: none")
	bridgeRTSPS := fs.String("bridge-rtsps", "", "RTSPS address of the bridge for external systems, e.g. :322; empty: none")
	bridgeRealm := fs.String("bridge-realm", "", "digest realm of the bridge (default \"Edge NVR bridge\")")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (for benchmarks)")
	memProfile := fs.String("memprofile", "", "write a heap profile to this file when recording stops (for benchmarks)")
	gcPercent := fs.Int("gc-percent", defaultGCPercent, "Go heap growth allowed between collections, in percent, unless GOGC is set in the environment")
	upd := addUpdateFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	log, err := cli.Logger(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" && *gcPercent > 0 {
		debug.SetGCPercent(*gcPercent)
	}
	if *cpuProfile != "" {
		stop, err := cli.StartCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *credFile != "" {
		creds, err := cli.ReadCredentials(*credFile)
		if err != nil {
			return err
		}
		for i := range cams {
			if c, ok := cli.For(creds, cams[i].Name); ok {
				cams[i].Username, cams[i].Password = c.Username, c.Password
			}
		}
	}
	for i := range cams {
		cams[i].Transport = *transport
		if f, ok := certs[cams[i].Name]; ok {
			der, err := cli.ReadCertificate(f)
			if err != nil {
				return fmt.Errorf("camera %s: %w", cams[i].Name, err)
			}
			cams[i].PinnedCert = der
		}
	}
	for _, c := range cams {
		if c.Username == "" {
			log.Warn("camera has no credentials: recording it without authentication", "camera", c.Name)
		}
	}
	sd := newSystemd(log)
	prof, err := board.Lookup(*boardName)
	if err != nil {
		return err
	}
	switch *display {
	case "":
	case "console", "none":
		prof.Display = board.Display{Kind: board.DisplayKind(*display)}
	default:
		return fmt.Errorf("-display %q: want console or none", *display)
	}
	var network *netconfig.ManagerConfig
	if *cameraNet != "" {
		network, err = networkConfig(prof, *cameraNet, *cameraVLAN, *camera8021X, *dataDir, *netState, *netRuntime)
		if err != nil {
			return err
		}
		if *cameraIface == "" {
			*cameraIface = network.Network.Bridge
			if network.Network.Mode == netconfig.ModeVLAN {
				*cameraIface = fmt.Sprintf("%s.%d", network.Network.Trunk, network.Network.VLAN)
			}
		}
	}
	a, err := appliance.New(appliance.Config{
		Network:               network,
		Bridge:                appliance.BridgeConfig{RTSPListen: *bridgeRTSP, RTSPSListen: *bridgeRTSPS, Realm: *bridgeRealm},
		WebListen:             *listen,
		Board:                 prof,
		CameraInterface:       *cameraIface,
		AllowPlainHTTPCameras: *plainHTTP,
		DataDir:               *dataDir,
		TPM:                   *tpmDev,
		Cameras:               cams,
		SegmentDuration:       *segment,
		FragmentDuration:      *fragment,
		VideoLossAfter:        *videoLoss,
		RetentionEvery:        *retEvery,
		Retention:             retentionPolicy(*high, *low, *maxAge),
		Ready:                 sd.ready,
	}, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *memProfile != "" {
		context.AfterFunc(ctx, func() {
			if err := cli.WriteHeapProfile(*memProfile); err != nil {
				log.Error("heap profile", "err", err)
			}
		})
	}
	context.AfterFunc(ctx, sd.stopping)
	go sd.watchdog(ctx, watchdogMaxAge, a.Healthy, nil)
	if err := startUpdate(ctx, upd, prof, sd.up, a.Healthy, log); err != nil {
		return err
	}
	return a.Run(ctx)
}

func retentionPolicy(high, low float64, maxAge time.Duration) store.RetentionPolicy {
	return store.RetentionPolicy{HighWater: high, LowWater: low, DefaultMaxAge: maxAge}
}

// defaultGCPercent is nvrd's collector target. The recorders keep the pictures of the fragments being built
// off the Go heap (appliance/record's picture arena), so the heap is small and nearly all of what is
// allocated on it (RTP packets, access units on their way) dies within a second. With Go's default of 100
// the collector then runs several times a second for little; 200 halves that work and, the heap being
// small, costs a few MB (BenchmarkRecording at 64 cameras, README).
const defaultGCPercent = 200
