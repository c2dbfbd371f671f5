package netconfig

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"unicode/utf8"

	"github.com/mdlayher/ethernet"
)

// Ether types the observer reads.
const (
	EtherTypeLLDP  = 0x88cc
	EtherTypeEAPOL = etherTypeEAPOL
)

// ErrFrame says a frame was malformed; the observer drops it.
var ErrFrame = errors.New("malformed frame")

// maxFrame bounds a frame the observer parses (a jumbo frame's worth).
const maxFrame = 9216

// Frame is what the observer keeps of an LLDP or EAPOL frame.
type Frame struct {
	Source net.HardwareAddr
	LLDP   *LLDP
	EAPOL  *EAPOL
}

// ParseFrame parses an Ethernet frame carrying LLDP or EAPOL (mdlayher/ethernet for the Ethernet and VLAN
// headers). Other ether types return ErrFrame.
func ParseFrame(b []byte) (Frame, error) {
	if len(b) > maxFrame {
		return Frame{}, fmt.Errorf("%w: %d bytes", ErrFrame, len(b))
	}
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrFrame, err)
	}
	out := Frame{Source: f.Source}
	switch f.EtherType {
	case EtherTypeLLDP:
		l, err := ParseLLDP(f.Payload)
		if err != nil {
			return Frame{}, err
		}
		out.LLDP = &l
	case EtherTypeEAPOL:
		e, err := ParseEAPOL(f.Payload)
		if err != nil {
			return Frame{}, err
		}
		out.EAPOL = &e
	default:
		return Frame{}, fmt.Errorf("%w: ether type %#04x", ErrFrame, uint16(f.EtherType))
	}
	return out, nil
}

// LLDP is what the observer keeps of an LLDP data unit (IEEE 802.1AB).
type LLDP struct {
	ChassisSubtype uint8
	ChassisID      string // printable form: a MAC, an address or sanitized text
	PortSubtype    uint8
	PortID         string
	TTL            uint16
	SystemName     string
	SystemDesc     string
}

const maxLLDPTLVs = 128

// ParseLLDP parses an LLDPDU: mandatory chassis ID, port ID and TTL TLVs first, then optional TLVs up to
// the End TLV. Strings are sanitized to printable UTF-8 of at most 255 bytes.
func ParseLLDP(b []byte) (LLDP, error) {
	var l LLDP
	bad := func(f string, a ...any) (LLDP, error) {
		return LLDP{}, fmt.Errorf("%w: LLDP: %s", ErrFrame, fmt.Sprintf(f, a...))
	}
	for i := 0; ; i++ {
		if i >= maxLLDPTLVs {
			return bad("more than %d TLVs", maxLLDPTLVs)
		}
		if len(b) < 2 {
			if i >= 3 {
				return l, nil // no End TLV: accept what was complete
			}
			return bad("truncated")
		}
		h := binary.BigEndian.Uint16(b)
		typ, n := int(h>>9), int(h&0x1ff)
		if len(b) < 2+n {
			return bad("TLV %d of length %d overruns the frame", typ, n)
		}
		v := b[2 : 2+n]
		b = b[2+n:]
		want := [3]int{1, 2, 3}
		if i < 3 && typ != want[i] {
			return bad("TLV %d where mandatory TLV %d belongs", typ, want[i])
		}
		switch typ {
		case 0:
			if n != 0 {
				return bad("End TLV with length %d", n)
			}
			return l, nil
		case 1, 2:
			if n < 2 || n > 256 {
				return bad("ID TLV length %d", n)
			}
			id := idString(v[0], v[1:], typ == 1)
			if typ == 1 {
				l.ChassisSubtype, l.ChassisID = v[0], id
			} else {
				l.PortSubtype, l.PortID = v[0], id
			}
		case 3:
			if n != 2 {
				return bad("TTL TLV length %d", n)
			}
			l.TTL = binary.BigEndian.Uint16(v)
		case 5:
			l.SystemName = printable(v)
		case 6:
			l.SystemDesc = printable(v)
		default:
			if i >= 3 && typ <= 3 {
				return bad("repeated mandatory TLV %d", typ)
			}
		}
	}
}

// idString renders a chassis or port ID: MAC addresses (chassis subtype 4, port subtype 3) as MACs, network
// addresses (subtype 5, 4) as IPs, the rest as sanitized text.
func idString(sub byte, v []byte, chassis bool) string {
	macSub, addrSub := byte(3), byte(4)
	if chassis {
		macSub, addrSub = 4, 5
	}
	switch {
	case sub == macSub && len(v) == 6:
		return net.HardwareAddr(v).String()
	case sub == addrSub && len(v) == 5 && v[0] == 1:
		return net.IP(v[1:]).String()
	case sub == addrSub && len(v) == 17 && v[0] == 2:
		return net.IP(v[1:]).String()
	}
	return printable(v)
}

func printable(v []byte) string {
	if len(v) > 255 {
		v = v[:255]
	}
	var sb strings.Builder
	for _, r := range string(v) {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			sb.WriteByte('?')
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// EAPOL is what the observer keeps of an EAPOL frame (IEEE 802.1X).
type EAPOL struct {
	Version uint8
	Type    uint8 // 0 EAP packet, 1 Start, 2 Logoff, 3 Key, 5 MKA
	// For EAP packets:
	EAPCode  uint8 // 1 request, 2 response, 3 success, 4 failure
	EAPID    uint8
	EAPType  uint8  // 1 identity, 13 TLS, 25 PEAP…
	Identity string // of an EAP-Response/Identity, sanitized, at most 255 bytes
}

// ParseEAPOL parses an EAPOL header and, for EAP packets, the EAP header and an identity response.
func ParseEAPOL(b []byte) (EAPOL, error) {
	bad := func(f string, a ...any) (EAPOL, error) {
		return EAPOL{}, fmt.Errorf("%w: EAPOL: %s", ErrFrame, fmt.Sprintf(f, a...))
	}
	if len(b) < 4 {
		return bad("%d bytes", len(b))
	}
	e := EAPOL{Version: b[0], Type: b[1]}
	if e.Version == 0 || e.Version > 3 {
		return bad("version %d", e.Version)
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if len(b) < 4+n {
		return bad("body of %d bytes in %d", n, len(b)-4)
	}
	body := b[4 : 4+n]
	if e.Type != 0 {
		return e, nil
	}
	if len(body) < 4 {
		return bad("EAP packet of %d bytes", len(body))
	}
	e.EAPCode, e.EAPID = body[0], body[1]
	el := int(binary.BigEndian.Uint16(body[2:]))
	if el < 4 || el > len(body) {
		return bad("EAP length %d in %d", el, len(body))
	}
	if e.EAPCode < 1 || e.EAPCode > 4 {
		return bad("EAP code %d", e.EAPCode)
	}
	if (e.EAPCode == 1 || e.EAPCode == 2) && el >= 5 {
		e.EAPType = body[4]
		if e.EAPCode == 2 && e.EAPType == 1 {
			e.Identity = printable(body[5:el])
		}
	}
	return e, nil
}
