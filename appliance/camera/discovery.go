package camera

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/ipv4"
)

// WS-Discovery (the 2005/04 draft ONVIF uses): one multicast Probe for
// NetworkVideoTransmitter devices on the camera network's interface, then
// unicast ProbeMatches collected until the timeout.
const (
	wsdGroup       = "239.255.255.250:3702"
	maxProbeMatch  = 64 << 10 // one UDP datagram
	maxDiscovered  = 1024     // devices kept from one probe
	maxXAddrs      = 8        // addresses kept per device
	defaultProbeTO = 2 * time.Second
)

// Discovered is a device that answered a probe.
type Discovered struct {
	// Endpoint is the device's stable WS-Discovery address (urn:uuid:…).
	Endpoint string `json:"endpoint"`
	// XAddrs are its device service addresses, as the device gave them.
	XAddrs []string `json:"xaddrs"`
	// HTTP and HTTPS are the host:port of the plain and TLS device
	// service, when offered.
	HTTP  string `json:"http,omitempty"`
	HTTPS string `json:"https,omitempty"`
	// Scopes are the device's ONVIF scopes (hardware, name, location).
	Scopes []string `json:"scopes,omitempty"`
	// Adopted is the id of the adopted camera at that address, if any.
	Adopted string `json:"adopted,omitempty"`
}

// ListenPacketFunc opens the UDP socket for discovery. The default listens
// on the host; a test or the appliance may bind it to the camera network.
type ListenPacketFunc func(ctx context.Context, network, addr string) (net.PacketConn, error)

// probeMessage returns a WS-Discovery Probe for NetworkVideoTransmitter with
// a fresh message id.
func probeMessage() (string, []byte, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", nil, fmt.Errorf("probe id: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	id := fmt.Sprintf("uuid:%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	msg := `<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">` +
		`<s:Header><a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action><a:MessageID>` + id + `</a:MessageID>` +
		`<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>` +
		`<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>`
	return id, []byte(msg), nil
}

// probeMatches is the part of a ProbeMatches message discovery reads.
type probeMatches struct {
	RelatesTo string `xml:"Header>RelatesTo"`
	Matches   []struct {
		Address string `xml:"EndpointReference>Address"`
		Types   string `xml:"Types"`
		Scopes  string `xml:"Scopes"`
		XAddrs  string `xml:"XAddrs"`
	} `xml:"Body>ProbeMatches>ProbeMatch"`
}

// parseProbeMatches reads one datagram. It returns the devices in it that
// answer the probe with id probeID (any probe when probeID is empty).
func parseProbeMatches(b []byte, probeID string) ([]Discovered, error) {
	if len(b) > maxProbeMatch {
		return nil, fmt.Errorf("%w: datagram of %d bytes", ErrTooLarge, len(b))
	}
	if err := checkXML(b); err != nil {
		return nil, err
	}
	var env probeMatches
	if err := decodeEnvelope(b, &env); err != nil {
		return nil, err
	}
	if probeID != "" && strings.TrimSpace(env.RelatesTo) != probeID {
		return nil, fmt.Errorf("%w: answer to another probe", ErrMalformed)
	}
	var out []Discovered
	for _, m := range env.Matches {
		d := Discovered{Endpoint: clip(strings.TrimSpace(m.Address), 200)}
		for _, x := range strings.Fields(m.XAddrs) {
			if len(d.XAddrs) == maxXAddrs {
				break
			}
			u, err := url.Parse(x)
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				continue
			}
			d.XAddrs = append(d.XAddrs, clip(x, 200))
			switch {
			case u.Scheme == "http" && d.HTTP == "":
				d.HTTP = hostPort(u, "80")
			case u.Scheme == "https" && d.HTTPS == "":
				d.HTTPS = hostPort(u, "443")
			}
		}
		for _, s := range strings.Fields(m.Scopes) {
			if len(d.Scopes) == 16 {
				break
			}
			d.Scopes = append(d.Scopes, clip(s, 200))
		}
		if d.Endpoint == "" || len(d.XAddrs) == 0 {
			continue
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no usable probe match", ErrMalformed)
	}
	return out, nil
}

func hostPort(u *url.URL, def string) string {
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), def)
	}
	return u.Host
}

// Discover sends one WS-Discovery probe on the configured interface and
// returns every device that answered within timeout (default 2 s), one
// entry per endpoint address. Malformed or hostile answers are dropped and
// counted in the log; they never end the discovery.
func (m *Manager) Discover(ctx context.Context, timeout time.Duration) ([]Discovered, error) {
	if timeout <= 0 {
		timeout = defaultProbeTO
	}
	ifi, err := net.InterfaceByName(m.cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("discover: interface %q: %w", m.cfg.Interface, err)
	}
	conn, err := m.cfg.ListenPacket(ctx, "udp4", "0.0.0.0:0")
	if err != nil {
		return nil, fmt.Errorf("discover: listen: %w", err)
	}
	defer conn.Close()
	pc := ipv4.NewPacketConn(conn)
	if err := pc.SetMulticastInterface(ifi); err != nil {
		return nil, fmt.Errorf("discover: multicast interface %s: %w", ifi.Name, err)
	}
	if err := pc.SetMulticastTTL(1); err != nil {
		return nil, fmt.Errorf("discover: multicast TTL: %w", err)
	}
	id, msg, err := probeMessage()
	if err != nil {
		return nil, err
	}
	group, err := net.ResolveUDPAddr("udp4", wsdGroup)
	if err != nil {
		return nil, err
	}
	if _, err := conn.WriteTo(msg, group); err != nil {
		return nil, fmt.Errorf("discover: send probe on %s: %w", ifi.Name, err)
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	found := map[string]Discovered{}
	dropped := 0
	buf := make([]byte, maxProbeMatch+1)
	for len(found) < maxDiscovered {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return nil, fmt.Errorf("discover: read: %w", err)
		}
		ds, err := parseProbeMatches(buf[:n], id)
		if err != nil {
			dropped++
			m.log.Debug("discovery answer dropped", "from", from.String(), "err", err)
			continue
		}
		for _, d := range ds {
			if _, dup := found[d.Endpoint]; !dup {
				found[d.Endpoint] = d
			}
		}
	}
	if dropped > 0 {
		m.log.Warn("discovery answers dropped as malformed", "count", dropped)
	}
	out := make([]Discovered, 0, len(found))
	m.mu.Lock()
	for _, d := range found {
		for _, c := range m.cams {
			if c.HTTP == d.HTTP && d.HTTP != "" || c.HTTPS == d.HTTPS && d.HTTPS != "" {
				d.Adopted = c.ID
			}
		}
		out = append(out, d)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Discovered) int { return strings.Compare(a.HTTP+a.HTTPS, b.HTTP+b.HTTPS) })
	if err := ctx.Err(); err != nil {
		return out, err
	}
	return out, nil
}
