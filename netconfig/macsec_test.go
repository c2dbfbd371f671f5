package netconfig

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TestMACsecStatesReportsPeersWithoutKey: a MACsec port whose MKA has not come up is reported not secured,
// with the devices that spoke EAPOL or LLDP on it; plain ports are not listed. (The secured case is shown
// against the kernel and wpa_supplicant in TestKernelFeaturesInVM.)
func TestMACsecStatesReportsPeersWithoutKey(t *testing.T) {
	key := MACsecKey{CAK: make([]byte, 16), CKN: []byte{1}}
	m, err := New(ManagerConfig{
		Network: Config{Mode: ModeBridge, Ports: []Port{{Name: "nvrmk1", MACsec: &key}, {Name: "nvrmk0", MACsec: &key},
			{Name: "nvrplain0"}}, Address: netip.MustParsePrefix("10.77.0.1/24"), ReconcileEvery: time.Second},
		StateDir: t.TempDir(), RuntimeDir: t.TempDir(),
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := net.ParseMAC("02:00:00:00:00:66")
	other, _ := net.ParseMAC("02:00:00:00:00:01")
	m.observer.Observe("nvrmk1", Frame{Source: rogue, EAPOL: &EAPOL{Version: 3, Type: 5}})
	m.observer.Observe("nvrplain0", Frame{Source: other, LLDP: &LLDP{}})
	got := m.MACsecStates()
	want := []MACsecState{{Port: "nvrmk0"}, {Port: "nvrmk1", Peers: []string{rogue.String()}}}
	if !slices.EqualFunc(got, want, func(a, b MACsecState) bool {
		return a.Port == b.Port && a.Secured == b.Secured && a.Interface == b.Interface && slices.Equal(a.Peers, b.Peers)
	}) {
		t.Fatalf("MACsecStates = %+v, want %+v", got, want)
	}
}

// TestParseSecY reads a SecY as the kernel dumps it: two RX SCs (one active), and the no-SCI and unknown-SCI
// drop counters summed.
func TestParseSecY(t *testing.T) {
	u32 := func(v uint32) []byte { b := make([]byte, 4); nl.NativeEndian().PutUint32(b, v); return b }
	u64 := func(v uint64) []byte { b := make([]byte, 8); nl.NativeEndian().PutUint64(b, v); return b }
	ifindex := nl.NewRtAttr(macsecAttrIfindex, u32(42))
	list := nl.NewRtAttr(macsecAttrRXSCList|unix.NLA_F_NESTED, nil)
	for i, active := range []byte{1, 0} {
		sc := list.AddRtAttr(i+1|unix.NLA_F_NESTED, nil)
		sc.AddRtAttr(1, u64(0x0200000000660001)) // SCI
		sc.AddRtAttr(macsecRXSCAttrActive, []byte{active})
	}
	stats := nl.NewRtAttr(macsecAttrSecYStats|unix.NLA_F_NESTED, nil)
	stats.AddRtAttr(macsecStatsUnknownSCI, u64(3))
	stats.AddRtAttr(macsecStatsNoSCI, u64(4))
	stats.AddRtAttr(2, u64(99)) // InPktsUntagged: not counted
	var b []byte
	for _, a := range []*nl.RtAttr{ifindex, list, stats} {
		b = append(b, a.Serialize()...)
	}
	st, idx, err := parseSecY(b)
	if err != nil {
		t.Fatal(err)
	}
	if idx != 42 || st.activeRXSCs != 1 || st.noSCI != 7 {
		t.Fatalf("parseSecY = %+v ifindex %d, want 1 active RX SC, 7 rejected, ifindex 42", st, idx)
	}
	if _, _, err := parseSecY([]byte{8, 0, 1, 0, 0, 0}); err == nil {
		t.Error("a truncated attribute parsed")
	}
}
