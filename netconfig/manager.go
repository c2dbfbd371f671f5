package netconfig

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"
)

// ManagerConfig is everything the camera network needs.
type ManagerConfig struct {
	Network Config
	// StateDir keeps the lease file and the camera CA (created 0700).
	StateDir string
	// RuntimeDir keeps hostapd's and wpa_supplicant's files and control sockets (created 0700).
	RuntimeDir string
	// DHCP settings; Interface, Address and LeaseFile are filled in from Network and StateDir.
	DHCP DHCPConfig
	// PEAP lists the PEAP-MSCHAPv2 fallback accounts of 802.1X ports.
	PEAP []PEAPUser
	// Hostapd and WPASupplicant are the binaries ("" for PATH).
	Hostapd, WPASupplicant string
	// OnAuth and OnMove receive 802.1X events and camera-moved alarms; either may be nil.
	OnAuth func(AuthEvent)
	OnMove func(MoveAlarm)
	// Rand and Now are randomness and clock (crypto/rand and time.Now by default).
	Rand io.Reader
	Now  func() time.Time
}

// Manager runs the camera network: it applies the configuration, serves DHCP, supervises the 802.1X and
// MKA daemons, observes LLDP and EAPOL, and reconciles drift until its context ends. It leaves the ruleset
// in place when it stops.
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger
	net *Network
	ca  *CA

	dhcp     *DHCPServer
	observer *Observer

	mu     sync.Mutex
	macsec map[string]*MACsec
	drifts int
}

// New checks the configuration and loads (or creates) the camera CA.
func New(cfg ManagerConfig, log *slog.Logger) (*Manager, error) {
	if cfg.StateDir == "" || cfg.RuntimeDir == "" {
		return nil, fmt.Errorf("%w: netconfig needs a state and a runtime directory", ErrConfig)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, d := range []string{cfg.StateDir, cfg.RuntimeDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("netconfig dir: %w", err)
		}
	}
	m := &Manager{cfg: cfg, log: log, macsec: map[string]*MACsec{}}
	n, err := NewNetwork(cfg.Network, log.With("part", "network"), m.member)
	if err != nil {
		return nil, err
	}
	m.net = n
	nc := n.Config()
	for _, p := range nc.Ports {
		if p.MACsec != nil {
			m.macsec[p.Name] = NewMACsec(p.Name, *p.MACsec, cfg.RuntimeDir, cfg.WPASupplicant, log)
		}
	}
	if m.ca, err = LoadOrCreateCA(cfg.StateDir, "nvr camera CA", cfg.Rand, cfg.Now); err != nil {
		return nil, err
	}
	d := cfg.DHCP
	d.Interface, d.Address = n.CameraInterface(), nc.Address
	if d.LeaseFile == "" {
		d.LeaseFile = filepath.Join(cfg.StateDir, "leases.db")
	}
	if d.Now == nil {
		d.Now = cfg.Now
	}
	if m.dhcp, err = NewDHCPServer(d, log.With("part", "dhcp")); err != nil {
		return nil, err
	}
	var ports []string
	for _, p := range nc.Ports {
		ports = append(ports, p.Name)
	}
	if nc.Mode == ModeVLAN {
		ports = []string{nc.Trunk}
	}
	m.observer = NewObserver(ports, cfg.OnMove, cfg.Now, log.With("part", "observer"))
	return m, nil
}

func (m *Manager) member(port string) string {
	if x := m.macsec[port]; x != nil {
		return x.Interface()
	}
	return port
}

// CA is the camera CA, for issuing camera certificates.
func (m *Manager) CA() *CA { return m.ca }

// Network is the applied network.
func (m *Manager) Network() *Network { return m.net }

// Leases are the DHCP leases of the camera network.
func (m *Manager) Leases() []Lease { return m.dhcp.Leases() }

// Sightings are the cameras seen on ports through LLDP and EAPOL.
func (m *Manager) Sightings() map[string]Sighting { return m.observer.Sightings() }

// MACsecState is how a MACsec camera port stands, as netconfig sees it.
type MACsecState struct {
	Port string
	// Interface is the port's MACsec interface ("" before wpa_supplicant has made it). wpa_supplicant makes it
	// as soon as MKA runs, with or without a peer: its existence proves nothing.
	Interface string
	// Secured is true when the MACsec interface has a receive secure channel: a device on the port proved
	// it holds the port's CAK and MKA agreed a SAK with it. Until then nothing of the port is delivered.
	Secured bool
	// Peers are the MAC addresses, other than the port's own, that sent EAPOL (MKA included) or LLDP frames
	// on the port, sorted. A peer on a port that is not Secured is a device without the port's key: a swapped
	// or rogue camera, or one configured with another CAK or CKN.
	Peers []string
	// RejectedFrames counts the MACsec frames the port dropped because they came from a secure channel it
	// has not agreed (a device protecting its frames with a key of its own).
	RejectedFrames uint64
}

// MACsecStates reports every MACsec camera port, sorted by port name.
func (m *Manager) MACsecStates() []MACsecState {
	seen := m.observer.Sightings()
	out := make([]MACsecState, 0, len(m.macsec))
	for port, x := range m.macsec {
		st := MACsecState{Port: port, Interface: x.Interface()}
		own := ""
		if l, err := netlink.LinkByName(port); err == nil {
			own = l.Attrs().HardwareAddr.String()
		}
		if st.Interface != "" {
			if l, err := netlink.LinkByName(st.Interface); err == nil {
				sy, err := readSecY(l.Attrs().Index)
				if err != nil {
					m.log.Warn("MACsec state", "port", port, "err", err)
				}
				st.Secured, st.RejectedFrames = sy.activeRXSCs > 0, sy.noSCI
			}
		}
		for mac, s := range seen {
			if s.Port == port && mac != own {
				st.Peers = append(st.Peers, mac)
			}
		}
		slices.Sort(st.Peers)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b MACsecState) int { return strings.Compare(a.Port, b.Port) })
	return out
}

// Counters are the ruleset's drop counters.
func (m *Manager) Counters() (map[string]Counter, error) { return m.net.Firewall().Counters() }

// Drifts is how many reconcile passes found and repaired drift.
func (m *Manager) Drifts() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.drifts
}

// Run applies the configuration and runs everything until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	defer m.net.Close()
	start := time.Now()
	changes, err := m.net.Apply()
	if err != nil && !errors.Is(err, ErrPortMissing) {
		return fmt.Errorf("apply network configuration: %w", err)
	}
	if err != nil {
		m.log.Warn("camera network applied with ports missing", "err", err)
	}
	m.log.Info("camera network applied", "changes", len(changes), "took", time.Since(start).Round(time.Millisecond))
	for _, c := range changes {
		m.log.Debug("network change", "change", c)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return m.dhcp.Run(gctx) })
	g.Go(func() error { return m.observer.Run(gctx) })
	nc := m.net.Config()
	var authPorts []string
	for _, p := range nc.Ports {
		if p.Auth {
			authPorts = append(authPorts, p.Name)
		}
	}
	if len(authPorts) > 0 {
		srvCert, srvKey, err := m.ca.IssueServer("nvr-authenticator", 30*24*time.Hour)
		if err != nil {
			return err
		}
		for _, p := range authPorts {
			a, err := NewAuthenticator(p, AuthConfig{RuntimeDir: m.cfg.RuntimeDir, CACert: m.ca.CertPEM(),
				ServerCert: srvCert, ServerKey: srvKey, PEAP: m.cfg.PEAP, Hostapd: m.cfg.Hostapd},
				m.net.Firewall(), m.cfg.OnAuth, m.log.With("part", "8021x"))
			if err != nil {
				return err
			}
			g.Go(func() error { return a.Run(gctx) })
		}
	}
	for _, x := range m.macsec {
		g.Go(func() error { return x.Run(gctx) })
	}
	g.Go(func() error { return m.reconcile(gctx, authPorts) })
	return g.Wait()
}

// reconcile re-applies drifted state on a timer and at once on link changes; a camera port whose link goes
// down is closed to every camera (it must authenticate again).
func (m *Manager) reconcile(ctx context.Context, authPorts []string) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribe(updates, done); err != nil {
		m.log.Warn("no link notifications; reconciling on the timer only", "err", err)
		updates = nil
	}
	isAuth := map[string]bool{}
	for _, p := range authPorts {
		isAuth[p] = true
	}
	t := time.NewTicker(m.net.Config().ReconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case u, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			name := u.Link.Attrs().Name
			if isAuth[name] && u.Link.Attrs().OperState != netlink.OperUp && u.Link.Attrs().OperState != netlink.OperUnknown {
				if err := m.net.Firewall().DeauthorizePort(name); err != nil {
					m.log.Error("close port after link down", "port", name, "err", err)
				}
			}
			// Let a burst of updates settle into one pass.
			for drained := false; !drained; {
				select {
				case <-updates:
				default:
					drained = true
				}
			}
		}
		drift, err := m.net.Reconcile()
		if len(drift) > 0 {
			m.mu.Lock()
			m.drifts++
			m.mu.Unlock()
			m.log.Warn("camera network drifted; repaired", "drift", strings.Join(drift, "; "))
		}
		if err != nil && !errors.Is(err, ErrPortMissing) {
			m.log.Error("reconcile", "err", err)
		}
	}
}
