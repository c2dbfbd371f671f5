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
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
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

// secyState is what the kernel says of one MACsec interface: its receive secure channels (one per MKA
// peer that proved it holds the CAK and was given the SAK) and its count of MACsec frames dropped because
// they came from a secure channel it does not know.
type secyState struct {
	activeRXSCs int
	noSCI       uint64 // InPktsNoSCI + InPktsUnknownSCI
}

// Generic netlink "macsec" family (linux/if_macsec.h).
const (
	macsecCmdGetTXSC         = 0
	macsecAttrIfindex        = 1
	macsecAttrRXSCList       = 6
	macsecAttrSecYStats      = 8
	macsecRXSCAttrActive     = 2
	macsecStatsUnknownSCI    = 6
	macsecStatsNoSCI         = 7
	nlaTypeMask              = 0x3fff
	maxMACsecDumpMessages    = 4096
	macsecGenlVersion        = 1
	macsecDumpMessageMaxSize = 1 << 20
)

// readSecY dumps the kernel's MACsec SecYs and returns the state of the one with ifindex.
func readSecY(ifindex int) (secyState, error) {
	fam, err := netlink.GenlFamilyGet("macsec")
	if err != nil {
		return secyState{}, fmt.Errorf("macsec generic netlink family: %w", err)
	}
	req := nl.NewNetlinkRequest(int(fam.ID), unix.NLM_F_DUMP)
	req.AddData(&nl.Genlmsg{Command: macsecCmdGetTXSC, Version: macsecGenlVersion})
	msgs, err := req.Execute(unix.NETLINK_GENERIC, 0)
	if err != nil {
		return secyState{}, fmt.Errorf("macsec dump: %w", err)
	}
	if len(msgs) > maxMACsecDumpMessages {
		msgs = msgs[:maxMACsecDumpMessages]
	}
	for _, m := range msgs {
		if len(m) < 4 || len(m) > macsecDumpMessageMaxSize {
			continue
		}
		st, idx, err := parseSecY(m[4:]) // after the generic netlink header
		if err != nil {
			return secyState{}, err
		}
		if idx == ifindex {
			return st, nil
		}
	}
	return secyState{}, fmt.Errorf("macsec dump: no SecY with ifindex %d", ifindex)
}

// parseSecY reads one SecY's attributes of a MACSEC_CMD_GET_TXSC dump.
func parseSecY(b []byte) (secyState, int, error) {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return secyState{}, 0, fmt.Errorf("macsec dump: %w", err)
	}
	var st secyState
	idx := -1
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case macsecAttrIfindex:
			if len(a.Value) >= 4 {
				idx = int(nl.NativeEndian().Uint32(a.Value))
			}
		case macsecAttrRXSCList:
			scs, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return secyState{}, 0, fmt.Errorf("macsec dump: RX SC list: %w", err)
			}
			for _, sc := range scs {
				fields, err := nl.ParseRouteAttr(sc.Value)
				if err != nil {
					return secyState{}, 0, fmt.Errorf("macsec dump: RX SC: %w", err)
				}
				for _, f := range fields {
					if f.Attr.Type&nlaTypeMask == macsecRXSCAttrActive && len(f.Value) >= 1 && f.Value[0] != 0 {
						st.activeRXSCs++
					}
				}
			}
		case macsecAttrSecYStats:
			stats, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return secyState{}, 0, fmt.Errorf("macsec dump: SecY stats: %w", err)
			}
			for _, s := range stats {
				if t := s.Attr.Type & nlaTypeMask; (t == macsecStatsUnknownSCI || t == macsecStatsNoSCI) && len(s.Value) >= 8 {
					st.noSCI += nl.NativeEndian().Uint64(s.Value)
				}
			}
		}
	}
	return st, idx, nil
}
