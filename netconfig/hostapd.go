package netconfig

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf16"

	"golang.org/x/crypto/md4" //nolint:staticcheck // MSCHAPv2's NT hash is MD4 by definition
)

// PEAPUser is a PEAP-MSCHAPv2 account for cameras without certificates (the fallback). The password is a
// secret: only its NT hash is written, to a 0600 file, and it is never logged.
type PEAPUser struct {
	Identity string
	Password string
}

// AuthConfig configures the 802.1X authenticator (hostapd, wired driver) run on each camera port.
type AuthConfig struct {
	// RuntimeDir holds per-port hostapd configuration, keys and control sockets (created 0700).
	RuntimeDir string
	// CACert is the camera CA certificate (PEM); ServerCert and ServerKey are hostapd's (PEM).
	CACert, ServerCert, ServerKey []byte
	// PEAP lists the PEAP-MSCHAPv2 fallback accounts.
	PEAP []PEAPUser
	// Hostapd is the hostapd binary (default "hostapd" on PATH).
	Hostapd string
	// ReauthPeriod makes hostapd re-authenticate cameras this often (default 1 h).
	ReauthPeriod time.Duration
	// RestartMin and RestartMax bound the back-off between restarts of a failed hostapd (1 s, 30 s).
	RestartMin, RestartMax time.Duration
}

// PortGate opens and closes a camera port to a MAC address; *Firewall is one.
type PortGate interface {
	Authorize(port string, mac net.HardwareAddr) error
	Deauthorize(port string, mac net.HardwareAddr) error
	DeauthorizePort(port string) error
}

// AuthEvent is what the authenticator of a port reports.
type AuthEvent struct {
	Port string
	MAC  net.HardwareAddr
	// Kind is "authorized", "deauthorized", "failure" or "restart" (hostapd died and was restarted; every
	// camera of the port is closed until it authenticates again).
	Kind string
}

// Authenticator runs and supervises hostapd on one camera port and drives the port's gate from hostapd's
// control-interface events: a camera's frames pass only after AP-STA-CONNECTED, and stop at
// AP-STA-DISCONNECTED, at an EAP failure, or when hostapd dies.
type Authenticator struct {
	port    string
	cfg     AuthConfig
	gate    PortGate
	onEvent func(AuthEvent)
	log     *slog.Logger

	mu    sync.Mutex
	known map[string]bool // cameras authorized on the port and not since logged off, kept across restarts
}

// maxKnown bounds the cameras remembered per port.
const maxKnown = 64

func (a *Authenticator) knownCameras() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.known))
	for m := range a.known {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

func (a *Authenticator) remember(mac net.HardwareAddr, on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.known == nil {
		a.known = map[string]bool{}
	}
	if !on {
		delete(a.known, mac.String())
	} else if len(a.known) < maxKnown {
		a.known[mac.String()] = true
	}
}

// NewAuthenticator prepares the authenticator of port. onEvent may be nil.
func NewAuthenticator(port string, cfg AuthConfig, gate PortGate, onEvent func(AuthEvent), log *slog.Logger) (*Authenticator, error) {
	if !ifnameRE.MatchString(port) {
		return nil, fmt.Errorf("%w: port %q", ErrConfig, port)
	}
	if cfg.RuntimeDir == "" || len(cfg.CACert) == 0 || len(cfg.ServerCert) == 0 || len(cfg.ServerKey) == 0 {
		return nil, fmt.Errorf("%w: 802.1X needs a runtime directory, the camera CA and a server certificate", ErrConfig)
	}
	for _, u := range cfg.PEAP {
		if u.Identity == "" || strings.ContainsAny(u.Identity, "\"\n\r") || len(u.Identity) > 128 || len(u.Password) < 8 {
			return nil, fmt.Errorf("%w: PEAP account %q: identity without quotes or newlines, password of 8 characters or more", ErrConfig, u.Identity)
		}
	}
	if cfg.Hostapd == "" {
		cfg.Hostapd = "hostapd"
	}
	if cfg.ReauthPeriod <= 0 {
		cfg.ReauthPeriod = time.Hour
	}
	if cfg.RestartMin <= 0 {
		cfg.RestartMin = time.Second
	}
	if cfg.RestartMax < cfg.RestartMin {
		cfg.RestartMax = 30 * time.Second
	}
	if onEvent == nil {
		onEvent = func(AuthEvent) {}
	}
	return &Authenticator{port: port, cfg: cfg, gate: gate, onEvent: onEvent, log: log.With("port", port)}, nil
}

func (a *Authenticator) dir() string { return filepath.Join(a.cfg.RuntimeDir, "hostapd-"+a.port) }

// ntHash is MSCHAPv2's NT password hash: MD4 of the UTF-16LE password.
func ntHash(pw string) string {
	u := utf16.Encode([]rune(pw))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		b[2*i], b[2*i+1] = byte(r), byte(r>>8)
	}
	h := md4.New()
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// writeConfig writes hostapd's files for the port: configuration, EAP users, certificates and key.
func (a *Authenticator) writeConfig() (string, error) {
	dir := a.dir()
	if err := os.MkdirAll(filepath.Join(dir, "ctrl"), 0o700); err != nil {
		return "", fmt.Errorf("hostapd dir: %w", err)
	}
	var users strings.Builder
	users.WriteString("# Phase 1: EAP-TLS with a camera-CA certificate, or PEAP.\n* TLS,PEAP\n")
	for _, u := range a.cfg.PEAP {
		fmt.Fprintf(&users, "%q MSCHAPV2 hash:%s [2]\n", u.Identity, ntHash(u.Password))
	}
	files := map[string][]byte{
		"eap_users":  []byte(users.String()),
		"ca.pem":     a.cfg.CACert,
		"server.pem": a.cfg.ServerCert,
		"server.key": a.cfg.ServerKey,
	}
	for name, data := range files {
		if err := writeFileAtomic(filepath.Join(dir, name), data, 0o600); err != nil {
			return "", fmt.Errorf("hostapd %s: %w", name, err)
		}
	}
	conf := fmt.Sprintf(`# Written by nvrd (netconfig); rewritten at every start.
interface=%s
driver=wired
ctrl_interface=%s
logger_stdout=-1
logger_stdout_level=2
ieee8021x=1
eapol_version=2
use_pae_group_addr=1
eap_server=1
eap_user_file=%s
ca_cert=%s
server_cert=%s
private_key=%s
eap_reauth_period=%d
`, a.port, filepath.Join(dir, "ctrl"), filepath.Join(dir, "eap_users"), filepath.Join(dir, "ca.pem"),
		filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), int(a.cfg.ReauthPeriod/time.Second))
	path := filepath.Join(dir, "hostapd.conf")
	if err := writeFileAtomic(path, []byte(conf), 0o600); err != nil {
		return "", fmt.Errorf("hostapd.conf: %w", err)
	}
	return path, nil
}

// writePIDFile records a supervised child's PID for killStale.
func writePIDFile(path string, pid int) error {
	return writeFileAtomic(path, []byte(strconv.Itoa(pid)+"\n"), 0o600)
}

// killStale stops a hostapd left by an earlier nvrd for this port (its PID file names it, and its command
// line must name our configuration file before anything is signalled).
func killStale(pidFile, conf string, log *slog.Logger) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), conf) {
		return
	}
	log.Warn("stopping a stale process left by an earlier run", "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = os.Remove(pidFile)
}

// Run supervises hostapd until ctx ends, then stops it; the port is closed whenever hostapd is not running.
func (a *Authenticator) Run(ctx context.Context) error {
	conf, err := a.writeConfig()
	if err != nil {
		return err
	}
	pidFile := filepath.Join(a.dir(), "hostapd.pid")
	killStale(pidFile, conf, a.log)
	backoff := a.cfg.RestartMin
	for {
		start := time.Now()
		err := a.runOnce(ctx, conf, pidFile)
		if cerr := a.gate.DeauthorizePort(a.port); cerr != nil {
			a.log.Error("closing port after hostapd stopped", "err", cerr)
		}
		if ctx.Err() != nil {
			return nil
		}
		a.onEvent(AuthEvent{Port: a.port, Kind: "restart"})
		if time.Since(start) > 2*a.cfg.RestartMax {
			backoff = a.cfg.RestartMin
		}
		a.log.Error("hostapd stopped; restarting", "err", err, "after", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, a.cfg.RestartMax)
	}
}

func (a *Authenticator) runOnce(ctx context.Context, conf, pidFile string) error {
	ctrlPath := filepath.Join(a.dir(), "ctrl", a.port)
	_ = os.Remove(ctrlPath)
	// hostapd writes -P's file only when it daemonizes, so the PID file (which lets the next nvrd stop a
	// hostapd this one leaves behind) is written here.
	cmd := exec.Command(a.cfg.Hostapd, conf)
	logw := &lineLogger{log: a.log, msg: "hostapd"}
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start hostapd: %w", err)
	}
	if err := writePIDFile(pidFile, cmd.Process.Pid); err != nil {
		a.log.Warn("hostapd PID file", "err", err)
	}
	defer os.Remove(pidFile)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			return <-exited
		}
	}
	// Wait for the control socket, then subscribe to events.
	var cc *ctrlConn
	deadline := time.Now().Add(10 * time.Second)
	for cc == nil {
		select {
		case err := <-exited:
			return fmt.Errorf("hostapd exited at start: %v", err)
		case <-ctx.Done():
			return stop()
		default:
		}
		if c, err := dialCtrl(ctrlPath); err == nil {
			if err := c.attach(); err == nil {
				cc = c
				break
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			_ = stop()
			return errors.New("hostapd control interface did not come up within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer cc.Close()
	a.log.Info("802.1X authenticator running", "pid", cmd.Process.Pid)
	// Cameras hostapd authorized before we attached (a restarted hostapd is quick) sent their events to
	// nobody: read them from its station table, on a second connection that gets no events.
	// A hostapd that starts knows no camera, and a camera its predecessor authorized will not authenticate
	// again until its own timers say so (hours): NEW_STA makes hostapd ask each such camera for its
	// identity now.
	if q, err := dialCtrl(ctrlPath); err == nil {
		macs, err := q.authorizedStations()
		if err != nil {
			a.log.Warn("reading hostapd's stations", "err", err)
		}
		done := map[string]bool{}
		for _, mac := range macs {
			done[mac.String()] = true
			a.handle(ctrlEvent{Name: "AP-STA-CONNECTED", Args: []string{mac.String()}})
		}
		for _, mac := range a.knownCameras() {
			if done[mac] {
				continue
			}
			if r, err := q.request("NEW_STA "+mac, 2*time.Second); err != nil || strings.TrimSpace(r) != "OK" {
				a.log.Warn("asking a known camera to authenticate again", "mac", mac, "reply", strings.TrimSpace(r), "err", err)
			}
		}
		q.Close()
	}
	evErr := make(chan error, 1)
	stopEv := make(chan struct{})
	go func() { evErr <- cc.events(stopEv, 2*time.Second, a.handle) }()
	select {
	case <-ctx.Done():
		close(stopEv)
		cc.interrupt()
		<-evErr
		return stop()
	case err := <-exited:
		// Close the port now; the caller does it again once the event reader has stopped.
		if cerr := a.gate.DeauthorizePort(a.port); cerr != nil {
			a.log.Error("closing port after hostapd died", "err", cerr)
		}
		close(stopEv)
		cc.interrupt()
		<-evErr
		return fmt.Errorf("hostapd exited: %v", err)
	case err := <-evErr:
		a.log.Error("hostapd control interface lost", "err", err)
		return stop()
	}
}

func (a *Authenticator) handle(ev ctrlEvent) {
	var mac net.HardwareAddr
	if len(ev.Args) > 0 {
		mac, _ = net.ParseMAC(ev.Args[0])
	}
	if len(mac) != 6 {
		a.log.Debug("hostapd event", "event", ev.Name)
		return
	}
	switch ev.Name {
	case "AP-STA-CONNECTED":
		if err := a.gate.Authorize(a.port, mac); err != nil {
			a.log.Error("authorize camera", "mac", mac.String(), "err", err)
			return
		}
		a.remember(mac, true)
		a.log.Info("camera authorized", "mac", mac.String())
		a.onEvent(AuthEvent{Port: a.port, MAC: mac, Kind: "authorized"})
	case "AP-STA-DISCONNECTED", "CTRL-EVENT-EAP-FAILURE", "CTRL-EVENT-EAP-FAILURE2":
		if err := a.gate.Deauthorize(a.port, mac); err != nil {
			a.log.Error("deauthorize camera", "mac", mac.String(), "err", err)
		}
		a.remember(mac, false)
		kind := "deauthorized"
		if strings.HasPrefix(ev.Name, "CTRL-EVENT-EAP-FAILURE") {
			kind = "failure"
		}
		a.log.Warn("camera "+kind, "mac", mac.String())
		a.onEvent(AuthEvent{Port: a.port, MAC: mac, Kind: kind})
	default:
		a.log.Debug("hostapd event", "event", ev.Name, "mac", mac.String())
	}
}

// lineLogger turns a child process's output into log records, one per line, bounded in length.
type lineLogger struct {
	log *slog.Logger
	msg string
	buf []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			if len(l.buf) > 4096 {
				l.buf = l.buf[:0]
			}
			return len(b), nil
		}
		line := strings.TrimSpace(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
		if line != "" {
			l.log.Debug(l.msg, "line", line)
		}
	}
}
