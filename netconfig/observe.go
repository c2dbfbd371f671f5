package netconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Sighting is where a camera (by MAC address) was last seen, and what it said of itself.
type Sighting struct {
	MAC      string
	Port     string
	LLDP     *LLDP
	Identity string // last EAP identity
	Seen     time.Time
}

// MoveAlarm says a camera's MAC address appeared on another port than before: a camera was moved, or
// something is impersonating it.
type MoveAlarm struct {
	MAC      string
	From, To string
	At       time.Time
}

// Observer reads LLDP and EAPOL frames on the camera ports (raw packet sockets, before any filtering) and maps
// cameras to ports. It never sends anything.
type Observer struct {
	ports  []string
	onMove func(MoveAlarm)
	now    func() time.Time
	log    *slog.Logger

	mu    sync.Mutex
	table map[string]*Sighting
}

// NewObserver watches ports. onMove is called (from the observer's goroutines) for every move; now is the clock.
func NewObserver(ports []string, onMove func(MoveAlarm), now func() time.Time, log *slog.Logger) *Observer {
	if onMove == nil {
		onMove = func(MoveAlarm) {}
	}
	if now == nil {
		now = time.Now
	}
	return &Observer{ports: ports, onMove: onMove, now: now, log: log, table: map[string]*Sighting{}}
}

// Sightings returns a copy of what the observer knows.
func (o *Observer) Sightings() map[string]Sighting {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]Sighting, len(o.table))
	for k, v := range o.table {
		out[k] = *v
	}
	return out
}

// Observe records a parsed frame seen on port: the seam between sockets and logic.
func (o *Observer) Observe(port string, f Frame) {
	mac := f.Source.String()
	now := o.now()
	o.mu.Lock()
	s := o.table[mac]
	var alarm *MoveAlarm
	if s == nil {
		if len(o.table) >= 4096 {
			o.mu.Unlock()
			return // bounded: a flood of forged addresses cannot grow the table
		}
		s = &Sighting{MAC: mac, Port: port}
		o.table[mac] = s
	} else if s.Port != port {
		alarm = &MoveAlarm{MAC: mac, From: s.Port, To: port, At: now}
		s.Port = port
	}
	s.Seen = now
	if f.LLDP != nil {
		l := *f.LLDP
		s.LLDP = &l
	}
	if f.EAPOL != nil && f.EAPOL.Identity != "" {
		s.Identity = f.EAPOL.Identity
	}
	o.mu.Unlock()
	if alarm != nil {
		o.log.Warn("camera moved to another port", "mac", mac, "from", alarm.From, "to", alarm.To)
		o.onMove(*alarm)
	}
}

// htons converts a 16-bit value to network order for socket calls.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens a raw socket on ifname that receives only LLDP and EAPOL frames (a classic BPF filter
// on the ether type), with a receive timeout so the reader can notice its context ending.
func packetSocket(ifname string) (int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, fmt.Errorf("interface %s: %w", ifname, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	prog := []unix.SockFilter{
		{Code: 0x28, K: 12},                          // ldh [12]
		{Code: 0x15, Jt: 1, Jf: 0, K: EtherTypeLLDP}, // jeq LLDP → accept
		{Code: 0x15, Jt: 0, Jf: 1, K: EtherTypeEAPOL},
		{Code: 0x06, K: maxFrame}, // accept
		{Code: 0x06, K: 0},        // drop
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("packet filter: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket to %s: %w", ifname, err)
	}
	// LLDP's group address is not forwarded by bridges; receive it on the port itself.
	for _, grp := range []net.HardwareAddr{{0x01, 0x80, 0xc2, 0, 0, 0x0e}, {0x01, 0x80, 0xc2, 0, 0, 0x03}} {
		mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
		copy(mreq.Address[:], grp)
		_ = unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq)
	}
	tv := unix.NsecToTimeval(int64(500 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("packet socket timeout: %w", err)
	}
	return fd, nil
}

// Run reads every port until ctx ends. A port that is missing is retried every few seconds.
func (o *Observer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, p := range o.ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.readPort(ctx, p)
		}()
	}
	wg.Wait()
	return nil
}

func (o *Observer) readPort(ctx context.Context, port string) {
	for ctx.Err() == nil {
		fd, err := packetSocket(port)
		if err != nil {
			o.log.Debug("observer cannot open port; retrying", "port", port, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(3 * time.Second):
			}
			continue
		}
		buf := make([]byte, maxFrame)
		for ctx.Err() == nil {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				o.log.Debug("observer read", "port", port, "err", err)
				break
			}
			f, err := ParseFrame(buf[:n])
			if err != nil {
				continue
			}
			o.Observe(port, f)
		}
		unix.Close(fd)
	}
}
