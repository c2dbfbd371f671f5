package netconfig

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// Mode says how cameras are attached to the appliance.
type Mode string

const (
	// ModeBridge puts every camera port into one camera bridge whose ports are isolated from each other.
	ModeBridge Mode = "bridge"
	// ModeVLAN puts the camera network on a VLAN sub-interface of a trunk port (the switch does the rest).
	ModeVLAN Mode = "vlan"
)

// Port is one physical camera port of the board.
type Port struct {
	// Name is the kernel interface name (from the board profile).
	Name string
	// Auth, when true, runs 802.1X on the port: it passes nothing but EAPOL until hostapd authorizes the
	// camera's MAC address.
	Auth bool
	// MACsec, when set, runs MKA on the port with a pre-shared CAK (wpa_supplicant, macsec_linux); the
	// MACsec interface wpa_supplicant creates joins the camera network in place of the port.
	MACsec *MACsecKey
}

// MACsecKey is a pre-shared MKA connectivity association key. It is a secret: it is written only to the
// wpa_supplicant configuration file (mode 0600) and never logged.
type MACsecKey struct {
	CAK []byte // 16 or 32 bytes
	CKN []byte // 1 to 32 bytes
}

// Config is the declarative network configuration: the board profile's ports plus the appliance's settings.
type Config struct {
	Mode Mode
	// Bridge is the camera bridge's name in bridge mode (default "nvrcam").
	Bridge string
	// Ports are the camera ports (bridge mode).
	Ports []Port
	// Trunk and VLAN name the trunk port and camera VLAN ID (VLAN mode).
	Trunk string
	VLAN  uint16
	// Address is the appliance's address on the camera network, with its prefix (e.g. 10.77.0.1/24).
	Address netip.Prefix
	// Client is the client-side interface. The package does not address it; it only keeps cameras away.
	Client string
	// RTPPorts, when non-zero, is a UDP port range the recorder receives RTP on from cameras (RTSP over UDP).
	// With it zero, cameras must be recorded over TCP.
	RTPPorts [2]uint16
	// ReconcileEvery is how often Run checks links and the ruleset for drift (default 5 s).
	ReconcileEvery time.Duration
}

var ifnameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// Sentinel errors of configuration checks.
var (
	ErrConfig = errors.New("netconfig: invalid configuration")
)

func (c *Config) cameraIf() string {
	if c.Mode == ModeVLAN {
		return vlanName(c.Trunk, c.VLAN)
	}
	return c.Bridge
}

func vlanName(trunk string, vid uint16) string {
	n := fmt.Sprintf("%s.%d", trunk, vid)
	if len(n) > 15 {
		n = fmt.Sprintf("nvrv%d", vid)
	}
	return n
}

// normalize fills defaults and checks the configuration.
func (c *Config) normalize() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(f, a...)) }
	if c.Mode == "" {
		c.Mode = ModeBridge
	}
	if c.Bridge == "" {
		c.Bridge = "nvrcam"
	}
	if c.ReconcileEvery <= 0 {
		c.ReconcileEvery = 5 * time.Second
	}
	if !c.Address.IsValid() || !c.Address.Addr().Is4() || c.Address.Bits() < 8 || c.Address.Bits() > 30 {
		return bad("camera network address %v: want an IPv4 address with a /8../30 prefix", c.Address)
	}
	if c.Client != "" && !ifnameRE.MatchString(c.Client) {
		return bad("client interface %q", c.Client)
	}
	if c.RTPPorts[0] > c.RTPPorts[1] {
		return bad("RTP port range %d-%d", c.RTPPorts[0], c.RTPPorts[1])
	}
	seen := map[string]bool{c.Client: true}
	switch c.Mode {
	case ModeBridge:
		if !ifnameRE.MatchString(c.Bridge) {
			return bad("bridge name %q", c.Bridge)
		}
		seen[c.Bridge] = true
		for _, p := range c.Ports {
			if !ifnameRE.MatchString(p.Name) || seen[p.Name] {
				return bad("camera port %q: bad or repeated name", p.Name)
			}
			seen[p.Name] = true
			if p.MACsec != nil {
				if n := len(p.MACsec.CAK); n != 16 && n != 32 {
					return bad("port %s: MKA CAK must be 16 or 32 bytes", p.Name)
				}
				if n := len(p.MACsec.CKN); n < 1 || n > 32 {
					return bad("port %s: MKA CKN must be 1 to 32 bytes", p.Name)
				}
			}
		}
	case ModeVLAN:
		if !ifnameRE.MatchString(c.Trunk) || c.Trunk == c.Client {
			return bad("trunk %q", c.Trunk)
		}
		if c.VLAN < 1 || c.VLAN > 4094 {
			return bad("camera VLAN %d: want 1..4094", c.VLAN)
		}
		if len(c.Ports) > 0 {
			return bad("VLAN mode takes a trunk, not camera ports (802.1X belongs to the switch)")
		}
	default:
		return bad("mode %q: want bridge or vlan", c.Mode)
	}
	return nil
}
