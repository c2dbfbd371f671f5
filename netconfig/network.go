package netconfig

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Network applies links, addresses, sysctls and the nftables ruleset from a Config and reconciles them.
type Network struct {
	cfg   Config
	log   *slog.Logger
	h     *netlink.Handle
	fw    *Firewall
	links *linkState
}

// NewNetwork checks cfg and prepares its application in the calling process's network namespace. members,
// if not nil, names the interface that joins the bridge in place of a MACsec port (empty while it does not
// exist).
func NewNetwork(cfg Config, log *slog.Logger, members func(port string) string) (*Network, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	for _, p := range cfg.Ports {
		if p.Auth && p.MACsec != nil {
			return nil, fmt.Errorf("%w: port %s: 802.1X with MACsec needs EAP-derived MKA keys, which Debian's hostapd "+
				"cannot give; use a pre-shared CAK (MACsec) or 802.1X, not both", ErrConfig, p.Name)
		}
	}
	// Route netlink only: a kernel without xfrm_user (or nfnetlink loaded yet) must not fail the apply.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	spec := fwSpec{cameraIfs: []string{cfg.cameraIf()}, camNet: cfg.Address.Masked(), rtp: cfg.RTPPorts}
	if cfg.Mode == ModeBridge {
		spec.bridge = true
		for _, p := range cfg.Ports {
			spec.deadIfs = append(spec.deadIfs, p.Name)
			if p.Auth {
				spec.authPorts = append(spec.authPorts, p.Name)
			}
		}
	} else {
		spec.deadIfs = []string{cfg.Trunk}
	}
	n := &Network{cfg: cfg, log: log, h: h, fw: newFirewall(spec, log.With("part", "nftables"))}
	n.links = &linkState{h: h, cfg: &n.cfg, members: members}
	return n, nil
}

// Firewall is the network's ruleset.
func (n *Network) Firewall() *Firewall { return n.fw }

// Config is the normalized configuration.
func (n *Network) Config() Config { return n.cfg }

// CameraInterface is the L3 interface of the camera network (the bridge or the VLAN interface).
func (n *Network) CameraInterface() string { return n.cfg.cameraIf() }

// Apply installs the ruleset first (so the camera side is closed before any link comes up), then links,
// addresses and sysctls. It returns the link changes it made; a missing camera port is reported as an error
// wrapping ErrPortMissing while everything else is still applied.
func (n *Network) Apply() ([]string, error) {
	if err := n.fw.Apply(); err != nil {
		return nil, err
	}
	changes, err := n.links.apply()
	if err != nil {
		return changes, fmt.Errorf("links: %w", err)
	}
	return changes, nil
}

// Reconcile puts back whatever drifted from the configuration and describes what it found.
func (n *Network) Reconcile() ([]string, error) {
	drift, ferr := n.fw.Reconcile()
	changes, lerr := n.links.apply()
	if lerr != nil {
		lerr = fmt.Errorf("links: %w", lerr)
	}
	return append(drift, changes...), errors.Join(ferr, lerr)
}

// Close releases the netlink handle. The configuration stays applied.
func (n *Network) Close() { n.h.Close() }
