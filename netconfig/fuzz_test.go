package netconfig

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// lldpFrame is an LLDP frame from a camera: chassis MAC, port name, TTL, system name, End.
var lldpFrame = []byte{
	0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xcc,
	0x02, 0x07, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // chassis ID, MAC subtype
	0x04, 0x05, 0x05, 'e', 't', 'h', '0', // port ID, interface name
	0x06, 0x02, 0x00, 0x78, // TTL 120
	0x0a, 0x04, 'c', 'a', 'm', '1', // system name
	0x00, 0x00,
}

// eapolFrame is an EAP-Response/Identity "cam1".
var eapolFrame = []byte{
	0x01, 0x80, 0xc2, 0x00, 0x00, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0x8e,
	0x02, 0x00, 0x00, 0x09, 0x02, 0x01, 0x00, 0x09, 0x01, 'c', 'a', 'm', '1',
}

func TestParseFrames(t *testing.T) {
	f, err := ParseFrame(lldpFrame)
	if err != nil || f.LLDP == nil {
		t.Fatalf("LLDP: %v", err)
	}
	if f.LLDP.ChassisID != "02:00:00:00:00:01" || f.LLDP.PortID != "eth0" || f.LLDP.TTL != 120 || f.LLDP.SystemName != "cam1" {
		t.Errorf("LLDP parsed as %+v", f.LLDP)
	}
	f, err = ParseFrame(eapolFrame)
	if err != nil || f.EAPOL == nil || f.EAPOL.Identity != "cam1" || f.EAPOL.EAPCode != 2 {
		t.Fatalf("EAPOL: %+v %v", f.EAPOL, err)
	}
	for _, bad := range [][]byte{lldpFrame[:20], append(append([]byte{}, lldpFrame[:14]...), 0x06, 0x02, 0, 1), eapolFrame[:16]} {
		if _, err := ParseFrame(bad); !errors.Is(err, ErrFrame) {
			t.Errorf("ParseFrame(% x) = %v, want ErrFrame", bad, err)
		}
	}
}

func TestObserverMoveAlarm(t *testing.T) {
	now := time.Unix(1700000000, 0)
	var alarms []MoveAlarm
	o := NewObserver(nil, func(a MoveAlarm) { alarms = append(alarms, a) }, func() time.Time { return now }, testLogger(t))
	f, _ := ParseFrame(lldpFrame)
	o.Observe("cam0", f)
	o.Observe("cam0", f)
	if len(alarms) != 0 {
		t.Fatalf("alarm without a move: %+v", alarms)
	}
	o.Observe("cam3", f)
	if len(alarms) != 1 || alarms[0].From != "cam0" || alarms[0].To != "cam3" {
		t.Fatalf("alarms %+v", alarms)
	}
	if s := o.Sightings()["02:00:00:00:00:01"]; s.Port != "cam3" || s.LLDP == nil || s.LLDP.SystemName != "cam1" {
		t.Errorf("sighting %+v", s)
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(lldpFrame)
	f.Add(eapolFrame)
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFrame(b)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error %v does not wrap ErrFrame", err)
			}
			return
		}
		if fr.LLDP != nil && (len(fr.LLDP.SystemName) > 4*255 || len(fr.LLDP.ChassisID) > 4*256) {
			t.Fatal("unbounded LLDP string")
		}
		if fr.EAPOL != nil && len(fr.EAPOL.Identity) > 4*255 {
			t.Fatal("unbounded identity")
		}
	})
}

func FuzzParseLLDP(f *testing.F) {
	f.Add(lldpFrame[14:])
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseLLDP(b) })
}

func FuzzParseEAPOL(f *testing.F) {
	f.Add(eapolFrame[14:])
	f.Add([]byte{0x02, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseEAPOL(b) })
}

func discover(mac string) []byte {
	m, _ := dhcpv4.New(dhcpv4.WithHwAddr(mustMAC(mac)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
	return m.ToBytes()
}

// FuzzDHCPHandle feeds arbitrary datagrams through the server's logic, twice (so that state from one
// request meets the next), and checks every reply stays inside the camera subnet.
func FuzzDHCPHandle(f *testing.F) {
	f.Add(discover("02:00:00:00:00:01"), []byte{})
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mustMAC("02:00:00:00:00:02")), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(netip.MustParseAddr("10.77.0.200").AsSlice())))
	f.Add(discover("02:00:00:00:00:02"), req.ToBytes())
	f.Fuzz(func(t *testing.T, a, b []byte) {
		s, err := NewDHCPServer(DHCPConfig{Address: netip.MustParsePrefix("10.77.0.1/24"), Now: func() time.Time { return time.Unix(1700000000, 0) }}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range [][]byte{a, b} {
			if len(raw) > maxDHCPPacket {
				raw = raw[:maxDHCPPacket]
			}
			m, err := dhcpv4.FromBytes(raw)
			if err != nil {
				continue
			}
			resp, err := s.Handle(m)
			if err != nil || resp == nil {
				continue
			}
			if y := resp.YourIPAddr; !y.IsUnspecified() {
				ya, _ := netip.AddrFromSlice(y.To4())
				if !netip.MustParsePrefix("10.77.0.0/24").Contains(ya) || ya == netip.MustParseAddr("10.77.0.1") {
					t.Fatalf("offered %v", y)
				}
			}
		}
		if len(s.leases) > 256 {
			t.Fatalf("%d leases from two packets", len(s.leases))
		}
	})
}

// TestDHCPLeasesPersist runs a DISCOVER/REQUEST through Handle, then a second server on the same lease file
// keeps the lease and gives the camera the same address.
func TestDHCPLeasesPersist(t *testing.T) {
	file := t.TempDir() + "/leases.db"
	now := time.Unix(1700000000, 0)
	cfg := DHCPConfig{Address: netip.MustParsePrefix("10.77.0.1/24"), LeaseFile: file, Now: func() time.Time { return now },
		Reservations: []Reservation{{MAC: mustMAC("02:00:00:00:00:09"), Camera: "door", IP: netip.MustParseAddr("10.77.0.9")}}}
	get := func(s *DHCPServer, mac string) string {
		m, _ := dhcpv4.FromBytes(discover(mac))
		offer, err := s.Handle(m)
		if err != nil || offer == nil {
			t.Fatalf("offer: %v %v", offer, err)
		}
		req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mustMAC(mac)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier())))
		ack, err := s.Handle(req)
		if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("ack: %v %v", ack, err)
		}
		return ack.YourIPAddr.String()
	}
	s1, err := NewDHCPServer(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.load(); err != nil {
		t.Fatal(err)
	}
	a := get(s1, "02:00:00:00:00:01")
	if door := get(s1, "02:00:00:00:00:09"); door != "10.77.0.9" {
		t.Errorf("reserved camera got %s", door)
	}
	s1.db.Close()
	s2, _ := NewDHCPServer(cfg, testLogger(t))
	if err := s2.load(); err != nil {
		t.Fatal(err)
	}
	defer s2.db.Close()
	ls := s2.Leases()
	if len(ls) != 2 || ls[0].Camera != "door" {
		t.Fatalf("leases after restart: %+v", ls)
	}
	if b := get(s2, "02:00:00:00:00:01"); b != a {
		t.Errorf("after restart the camera got %s, had %s", b, a)
	}
	if c := get(s2, "02:00:00:00:00:02"); c == a {
		t.Errorf("two cameras share %s", c)
	}
}
