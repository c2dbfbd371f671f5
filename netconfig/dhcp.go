package netconfig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"
	bolt "go.etcd.io/bbolt"
)

// Reservation pins a camera's MAC address to a name and, optionally, a fixed address.
type Reservation struct {
	MAC    net.HardwareAddr
	Camera string
	IP     netip.Addr // zero: any pool address
}

// DHCPConfig configures the DHCP server of the camera network.
type DHCPConfig struct {
	// Interface is the camera network's interface; the server is bound to it and answers nowhere else.
	Interface string
	// Address is the appliance's address on it, with the prefix (the server identifier and netmask).
	Address netip.Prefix
	// PoolStart and PoolEnd bound the dynamic pool (default: the second half of the subnet).
	PoolStart, PoolEnd netip.Addr
	// LeaseTime is the lease length (default 1 h).
	LeaseTime time.Duration
	// LeaseFile is the bbolt file that keeps the leases across restarts.
	LeaseFile string
	// Reservations map cameras' MAC addresses to names (and fixed addresses).
	Reservations []Reservation
	// NTP, when true, offers the appliance as the cameras' time server (option 42).
	NTP bool
	// MaxPerSecond bounds the requests handled per second (default 200); the rest are dropped and counted.
	MaxPerSecond int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Lease is one camera's address lease.
type Lease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Camera   string    `json:"camera,omitempty"`
	Hostname string    `json:"hostname,omitempty"`
	Expires  time.Time `json:"expires"`
	// Offered is true for an address offered but not yet requested; offers are not persisted.
	Offered bool `json:"-"`
}

// DHCPServer is the camera network's DHCP server (insomniacslk/dhcp for the wire format). Leases live in a
// bbolt file of their own, written before each ACK goes out.
type DHCPServer struct {
	cfg  DHCPConfig
	log  *slog.Logger
	mask net.IPMask

	mu      sync.Mutex
	leases  map[string]*Lease // by MAC
	byIP    map[netip.Addr]string
	db      *bolt.DB
	dropped uint64
}

var leaseBucket = []byte("leases")

// ErrPoolExhausted says no address was free for a new camera.
var ErrPoolExhausted = errors.New("dhcp: address pool exhausted")

// NewDHCPServer checks cfg. Leases are loaded by Run.
func NewDHCPServer(cfg DHCPConfig, log *slog.Logger) (*DHCPServer, error) {
	if !cfg.Address.IsValid() || !cfg.Address.Addr().Is4() {
		return nil, fmt.Errorf("%w: DHCP needs the appliance's IPv4 address", ErrConfig)
	}
	pfx := cfg.Address.Masked()
	if !cfg.PoolStart.IsValid() || !cfg.PoolEnd.IsValid() {
		first, last := subnetRange(pfx)
		size := addrDiff(last, first) + 1
		cfg.PoolStart, cfg.PoolEnd = addrAdd(first, size/2), last
	}
	if !pfx.Contains(cfg.PoolStart) || !pfx.Contains(cfg.PoolEnd) || cfg.PoolEnd.Less(cfg.PoolStart) {
		return nil, fmt.Errorf("%w: DHCP pool %v-%v outside %v", ErrConfig, cfg.PoolStart, cfg.PoolEnd, pfx)
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = time.Hour
	}
	if cfg.MaxPerSecond <= 0 {
		cfg.MaxPerSecond = 200
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, r := range cfg.Reservations {
		if len(r.MAC) != 6 {
			return nil, fmt.Errorf("%w: reservation for %q: bad MAC", ErrConfig, r.Camera)
		}
		if r.IP.IsValid() && (!pfx.Contains(r.IP) || r.IP == cfg.Address.Addr()) {
			return nil, fmt.Errorf("%w: reservation for %q: %v not usable in %v", ErrConfig, r.Camera, r.IP, pfx)
		}
	}
	return &DHCPServer{cfg: cfg, log: log, mask: net.CIDRMask(pfx.Bits(), 32),
		leases: map[string]*Lease{}, byIP: map[netip.Addr]string{}}, nil
}

// subnetRange returns the first and last host addresses of p.
func subnetRange(p netip.Prefix) (netip.Addr, netip.Addr) {
	a := p.Masked().Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	host := uint32(1)<<(32-p.Bits()) - 1
	return u32addr(n + 1), u32addr(n + host - 1)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
func u32addr(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
func addrDiff(a, b netip.Addr) uint32           { return u32(a) - u32(b) }
func addrAdd(a netip.Addr, n uint32) netip.Addr { return u32addr(u32(a) + n) }

func (s *DHCPServer) reservation(mac net.HardwareAddr) (Reservation, bool) {
	for _, r := range s.cfg.Reservations {
		if slices.Equal(r.MAC, mac) {
			return r, true
		}
	}
	return Reservation{}, false
}

// load opens the lease file and reads the unexpired leases.
func (s *DHCPServer) load() error {
	db, err := bolt.Open(s.cfg.LeaseFile, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("lease file %s: %w", s.cfg.LeaseFile, err)
	}
	now := s.cfg.Now()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(leaseBucket)
		if err != nil {
			return err
		}
		var stale [][]byte
		err = b.ForEach(func(k, v []byte) error {
			var l Lease
			if json.Unmarshal(v, &l) != nil || l.Expires.Before(now) {
				stale = append(stale, k)
				return nil
			}
			ip, perr := netip.ParseAddr(l.IP)
			if perr != nil || !s.cfg.Address.Masked().Contains(ip) {
				stale = append(stale, k)
				return nil
			}
			s.leases[l.MAC] = &l
			s.byIP[ip] = l.MAC
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("lease file %s: %w", s.cfg.LeaseFile, err)
	}
	s.db = db
	return nil
}

func (s *DHCPServer) persist(l *Lease, del bool) error {
	if s.db == nil {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(leaseBucket)
		if del {
			return b.Delete([]byte(l.MAC))
		}
		v, err := json.Marshal(l)
		if err != nil {
			return err
		}
		return b.Put([]byte(l.MAC), v)
	})
}

// Leases returns the current (unexpired, acknowledged) leases, sorted by address.
func (s *DHCPServer) Leases() []Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var out []Lease
	for _, l := range s.leases {
		if !l.Offered && l.Expires.After(now) {
			out = append(out, *l)
		}
	}
	slices.SortFunc(out, func(a, b Lease) int {
		return netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP))
	})
	return out
}

// Dropped is how many requests were dropped by the rate limit.
func (s *DHCPServer) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// allocate picks mac's address: its reservation, its current lease, the requested one if free, or the
// lowest free pool address (expired leases are reclaimed).
func (s *DHCPServer) allocate(mac string, hw net.HardwareAddr, requested netip.Addr, now time.Time) (netip.Addr, error) {
	if r, ok := s.reservation(hw); ok && r.IP.IsValid() {
		return r.IP, nil
	}
	if l, ok := s.leases[mac]; ok {
		return netip.MustParseAddr(l.IP), nil
	}
	free := func(a netip.Addr) bool {
		if a == s.cfg.Address.Addr() || s.reservedIP(a) {
			return false
		}
		owner, used := s.byIP[a]
		if !used {
			return true
		}
		if l := s.leases[owner]; l != nil && l.Expires.Before(now) {
			delete(s.leases, owner)
			delete(s.byIP, a)
			_ = s.persist(l, true)
			return true
		}
		return false
	}
	inPool := func(a netip.Addr) bool { return !a.Less(s.cfg.PoolStart) && !s.cfg.PoolEnd.Less(a) }
	if requested.IsValid() && inPool(requested) && free(requested) {
		return requested, nil
	}
	for a := s.cfg.PoolStart; !s.cfg.PoolEnd.Less(a); a = a.Next() {
		if free(a) {
			return a, nil
		}
	}
	return netip.Addr{}, ErrPoolExhausted
}

func (s *DHCPServer) reservedIP(a netip.Addr) bool {
	for _, r := range s.cfg.Reservations {
		if r.IP == a {
			return true
		}
	}
	return false
}

// maxHostname bounds the hostname kept from a camera's request.
const maxHostname = 64

func cleanHostname(h string) string {
	out := make([]byte, 0, len(h))
	for i := 0; i < len(h) && len(out) < maxHostname; i++ {
		c := h[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' {
			out = append(out, c)
		}
	}
	return string(out)
}

// Handle answers one request: the protocol logic, without the socket. It returns nil when no reply is due.
// Its input is untrusted (any camera can send anything); it is fuzzed.
func (s *DHCPServer) Handle(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return nil, nil
	}
	hw := req.ClientHWAddr
	mac := hw.String()
	server := s.cfg.Address.Addr()
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	reply := func(t dhcpv4.MessageType, yiaddr netip.Addr, lease bool) (*dhcpv4.DHCPv4, error) {
		mods := []dhcpv4.Modifier{
			dhcpv4.WithMessageType(t),
			dhcpv4.WithServerIP(net.IP(server.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(server.AsSlice()))),
		}
		if yiaddr.IsValid() {
			mods = append(mods, dhcpv4.WithYourIP(net.IP(yiaddr.AsSlice())))
		}
		if t != dhcpv4.MessageTypeNak {
			mods = append(mods, dhcpv4.WithNetmask(s.mask))
			if s.cfg.NTP {
				mods = append(mods, dhcpv4.WithOption(dhcpv4.OptNTPServers(net.IP(server.AsSlice()))))
			}
		}
		if lease {
			mods = append(mods, dhcpv4.WithLeaseTime(uint32(s.cfg.LeaseTime/time.Second)),
				dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(s.cfg.LeaseTime/2)),
				dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(s.cfg.LeaseTime*7/8)))
		}
		return dhcpv4.NewReplyFromRequest(req, mods...)
	}
	requested := func() netip.Addr {
		ip := req.RequestedIPAddress()
		if ip == nil || ip.IsUnspecified() {
			ip = req.ClientIPAddr
		}
		a, ok := netip.AddrFromSlice(ip.To4())
		if !ok || ip.To4() == nil {
			return netip.Addr{}
		}
		return a
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		ip, err := s.allocate(mac, hw, requested(), now)
		if err != nil {
			s.log.Warn("no address for camera", "mac", mac, "err", err)
			return nil, nil
		}
		if _, held := s.leases[mac]; !held {
			s.leases[mac] = &Lease{MAC: mac, IP: ip.String(), Expires: now.Add(30 * time.Second), Offered: true}
			s.byIP[ip] = mac
		}
		return reply(dhcpv4.MessageTypeOffer, ip, true)
	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(server.AsSlice())) {
			// The camera chose another server: forget our offer.
			if l := s.leases[mac]; l != nil && l.Offered {
				delete(s.leases, mac)
				delete(s.byIP, netip.MustParseAddr(l.IP))
			}
			return nil, nil
		}
		want := requested()
		ip, err := s.allocate(mac, hw, want, now)
		if err != nil || !want.IsValid() || want != ip {
			return reply(dhcpv4.MessageTypeNak, netip.Addr{}, false)
		}
		l := &Lease{MAC: mac, IP: ip.String(), Hostname: cleanHostname(req.HostName()), Expires: now.Add(s.cfg.LeaseTime)}
		if r, ok := s.reservation(hw); ok {
			l.Camera = r.Camera
		}
		if old := s.leases[mac]; old != nil && old.IP != l.IP {
			delete(s.byIP, netip.MustParseAddr(old.IP))
		}
		if err := s.persist(l, false); err != nil {
			return nil, fmt.Errorf("persist lease of %s: %w", mac, err)
		}
		_, known := s.leases[mac]
		s.leases[mac] = l
		s.byIP[ip] = mac
		if !known || s.leases[mac].Offered {
			s.log.Info("camera lease", "mac", mac, "ip", l.IP, "camera", l.Camera, "hostname", l.Hostname)
		}
		return reply(dhcpv4.MessageTypeAck, ip, true)
	case dhcpv4.MessageTypeRelease:
		if l := s.leases[mac]; l != nil && net.ParseIP(l.IP).Equal(req.ClientIPAddr) {
			delete(s.leases, mac)
			delete(s.byIP, netip.MustParseAddr(l.IP))
			if err := s.persist(l, true); err != nil {
				return nil, fmt.Errorf("release lease of %s: %w", mac, err)
			}
		}
		return nil, nil
	case dhcpv4.MessageTypeDecline:
		// The address is in use by something else: keep it out of the pool for a lease time.
		if ip := requested(); ip.IsValid() && s.cfg.Address.Masked().Contains(ip) {
			if l := s.leases[mac]; l != nil {
				delete(s.leases, mac)
				_ = s.persist(l, true)
			}
			if len(s.leases) < 1<<16 {
				key := "declined-" + ip.String()
				s.leases[key] = &Lease{MAC: key, IP: ip.String(), Expires: now.Add(s.cfg.LeaseTime), Offered: true}
				s.byIP[ip] = key
			}
			s.log.Warn("camera declined an address (conflict)", "mac", mac, "ip", ip.String())
		}
		return nil, nil
	case dhcpv4.MessageTypeInform:
		return reply(dhcpv4.MessageTypeAck, netip.Addr{}, false)
	}
	return nil, nil
}

// maxDHCPPacket bounds what is read per datagram.
const maxDHCPPacket = 1500

// Run loads the leases, binds to the camera interface and serves until ctx ends.
func (s *DHCPServer) Run(ctx context.Context) error {
	if err := s.load(); err != nil {
		return err
	}
	defer s.db.Close()
	conn, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return fmt.Errorf("dhcp socket on %s: %w", s.cfg.Interface, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	s.log.Info("DHCP server running", "interface", s.cfg.Interface, "pool", s.cfg.PoolStart.String()+"-"+s.cfg.PoolEnd.String())
	buf := make([]byte, maxDHCPPacket)
	window, count := time.Now(), 0
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dhcp read: %w", err)
		}
		if time.Since(window) > time.Second {
			window, count = time.Now(), 0
		}
		if count++; count > s.cfg.MaxPerSecond {
			s.mu.Lock()
			s.dropped++
			s.mu.Unlock()
			continue
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			continue
		}
		resp, err := s.Handle(req)
		if err != nil {
			s.log.Error("dhcp", "err", err)
			continue
		}
		if resp == nil {
			continue
		}
		dst := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
		if up, ok := peer.(*net.UDPAddr); ok && !req.ClientIPAddr.IsUnspecified() && req.ClientIPAddr.Equal(up.IP) {
			dst.IP = up.IP
		}
		if _, err := conn.WriteTo(resp.ToBytes(), dst); err != nil {
			s.log.Warn("dhcp reply", "err", err)
		}
	}
}
