package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/net/ipv4"
)

// WS-Discovery (2005/04, as ONVIF uses it): camsim joins 239.255.255.250 on
// one interface, listens on UDP 3702 and answers every Probe for a
// NetworkVideoTransmitter (or for any type) with one ProbeMatches message per
// simulated device, sent unicast to the prober.
const (
	discoveryPort   = 3702
	maxProbeSize    = 64 << 10
	discoveryNS     = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
	addressingNS    = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	discoveryGroup  = "239.255.255.250"
	probeMatchesAct = "http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches"
)

// probe is what camsim reads from a Probe.
type probe struct {
	MessageID string
	Types     []string // local names, prefixes dropped
}

// parseProbe parses a WS-Discovery Probe, refusing DTDs, deep nesting and
// anything that is not a Probe.
func parseProbe(b []byte) (*probe, error) {
	if len(b) > maxProbeSize {
		return nil, errors.New("probe too large")
	}
	op, err := checkXML(b)
	if err != nil {
		return nil, err
	}
	if op != "Probe" {
		return nil, fmt.Errorf("not a probe: %q", op)
	}
	var env struct {
		MessageID string `xml:"Header>MessageID"`
		Types     string `xml:"Body>Probe>Types"`
	}
	if err := xml.NewDecoder(bytes.NewReader(b)).Decode(&env); err != nil {
		return nil, err
	}
	p := &probe{MessageID: strings.TrimSpace(env.MessageID)}
	if len(p.MessageID) > 256 {
		return nil, errors.New("message id too long")
	}
	for _, t := range strings.Fields(env.Types) {
		if _, local, ok := strings.Cut(t, ":"); ok {
			t = local
		}
		p.Types = append(p.Types, t)
	}
	return p, nil
}

// wantsNVT says whether the probe asks for devices camsim simulates.
func (p *probe) wantsNVT() bool {
	if len(p.Types) == 0 {
		return true
	}
	for _, t := range p.Types {
		if t == "NetworkVideoTransmitter" || t == "Device" {
			return true
		}
	}
	return false
}

// listenDiscovery joins the WS-Discovery group on the named interface.
func listenDiscovery(iface string) (*ipv4.PacketConn, net.PacketConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, nil, fmt.Errorf("discovery interface %q: %w", iface, err)
	}
	c, err := net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", discoveryPort))
	if err != nil {
		return nil, nil, fmt.Errorf("listen WS-Discovery: %w", err)
	}
	p := ipv4.NewPacketConn(c)
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: net.ParseIP(discoveryGroup)}); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("join %s on %s: %w", discoveryGroup, iface, err)
	}
	return p, c, nil
}

// serveDiscovery answers probes until ctx ends.
func (s *onvifSet) serveDiscovery(ctx context.Context, conn net.PacketConn) error {
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	buf := make([]byte, maxProbeSize+1)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("WS-Discovery read: %w", err)
		}
		p, err := parseProbe(buf[:n])
		if err != nil {
			s.log.Debug("ignored WS-Discovery packet", "from", from.String(), "err", err)
			continue
		}
		if !p.wantsNVT() {
			continue
		}
		for _, d := range s.devices {
			if _, err := conn.WriteTo(d.probeMatch(p.MessageID), from); err != nil {
				s.log.Warn("WS-Discovery reply", "to", from.String(), "err", err)
			}
		}
	}
}

func (d *onvifDevice) probeMatch(relatesTo string) []byte {
	d.mu.Lock()
	uuid, http, https := d.uuid, d.httpAddr, d.httpsAddr
	d.mu.Unlock()
	xaddrs := "http://" + http + "/onvif/device_service"
	if https != "" {
		xaddrs += " https://" + https + "/onvif/device_service"
	}
	msgID := strings.Replace(uuid, "urn:uuid:", "uuid:", 1) // unique enough per reply for a simulator
	return fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="%s" xmlns:d="%s" xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><env:Header><wsa:MessageID>%s</wsa:MessageID><wsa:RelatesTo>%s</wsa:RelatesTo><wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To><wsa:Action>%s</wsa:Action></env:Header><env:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference><wsa:Address>%s</wsa:Address></wsa:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types><d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/hardware/%s onvif://www.onvif.org/name/camsim-%s</d:Scopes><d:XAddrs>%s</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></env:Body></env:Envelope>`,
		addressingNS, discoveryNS, esc(msgID), esc(relatesTo), probeMatchesAct, esc(uuid), firmwareModel, d.name, esc(xaddrs))
}
