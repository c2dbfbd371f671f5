package netconfig

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// MACsec runs wpa_supplicant with the macsec_linux driver on one camera port: MKA with a pre-shared CAK
// agrees the SAKs with the camera, and the kernel's MACsec interface carries the camera's traffic. The
// appliance is the key server (MKA priority 0). Until MKA succeeds, the MACsec interface passes nothing
// (macsec_policy=1: protected frames only).
type MACsec struct {
	port       string
	key        MACsecKey
	runtimeDir string
	binary     string
	log        *slog.Logger
}

// NewMACsec prepares MKA on port. binary is wpa_supplicant's path ("" for PATH).
func NewMACsec(port string, key MACsecKey, runtimeDir, binary string, log *slog.Logger) *MACsec {
	if binary == "" {
		binary = "wpa_supplicant"
	}
	return &MACsec{port: port, key: key, runtimeDir: runtimeDir, binary: binary, log: log.With("port", port, "part", "macsec")}
}

// Interface returns the MACsec interface wpa_supplicant created on the port, or "" while there is none.
func (m *MACsec) Interface() string { return macsecOf(m.port) }

func macsecOf(port string) string {
	parent, err := netlink.LinkByName(port)
	if err != nil {
		return ""
	}
	links, err := netlink.LinkList()
	if err != nil {
		return ""
	}
	for _, l := range links {
		if l.Type() == "macsec" && l.Attrs().ParentIndex == parent.Attrs().Index {
			return l.Attrs().Name
		}
	}
	return ""
}

func (m *MACsec) writeConfig() (string, error) {
	dir := filepath.Join(m.runtimeDir, "macsec-"+m.port)
	if err := os.MkdirAll(filepath.Join(dir, "ctrl"), 0o700); err != nil {
		return "", fmt.Errorf("macsec dir: %w", err)
	}
	conf := fmt.Sprintf(`# Written by nvrd (netconfig). Holds the MKA CAK: mode 0600, never logged.
ctrl_interface=%s
eapol_version=3
ap_scan=0
network={
	key_mgmt=NONE
	eapol_flags=0
	macsec_policy=1
	macsec_integ_only=0
	mka_priority=0
	mka_cak=%s
	mka_ckn=%s
}
`, filepath.Join(dir, "ctrl"), hex.EncodeToString(m.key.CAK), hex.EncodeToString(m.key.CKN))
	path := filepath.Join(dir, "wpa_supplicant.conf")
	if err := writeFileAtomic(path, []byte(conf), 0o600); err != nil {
		return "", fmt.Errorf("wpa_supplicant.conf: %w", err)
	}
	return path, nil
}

// Run supervises wpa_supplicant until ctx ends, restarting it (after a pause) when it dies.
func (m *MACsec) Run(ctx context.Context) error {
	conf, err := m.writeConfig()
	if err != nil {
		return err
	}
	pidFile := filepath.Join(filepath.Dir(conf), "wpa_supplicant.pid")
	killStale(pidFile, conf, m.log)
	backoff := time.Second
	for {
		cmd := exec.Command(m.binary, "-D", "macsec_linux", "-i", m.port, "-c", conf)
		logw := &lineLogger{log: m.log, msg: "wpa_supplicant"}
		cmd.Stdout, cmd.Stderr = logw, logw
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start wpa_supplicant: %w", err)
		}
		if err := writePIDFile(pidFile, cmd.Process.Pid); err != nil {
			m.log.Warn("wpa_supplicant PID file", "err", err)
		}
		m.log.Info("MKA running", "pid", cmd.Process.Pid)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			_ = os.Remove(pidFile)
			return nil
		case err := <-exited:
			m.log.Error("wpa_supplicant stopped; restarting", "err", err, "after", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
