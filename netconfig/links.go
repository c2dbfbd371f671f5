package netconfig

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
)

// ErrPortMissing says a configured camera port does not exist (yet): the board lacks it or a USB NIC is
// unplugged. The rest of the configuration is still applied.
var ErrPortMissing = errors.New("camera port missing")

// linkState applies the link part of the configuration over netlink. Every step reads the current state first
// and changes only what differs, so applying twice changes nothing and a reconcile reports exactly what
// drifted.
type linkState struct {
	h   *netlink.Handle
	cfg *Config
	// members maps a camera port to the interface that joins the bridge in its place (its MACsec
	// interface once wpa_supplicant created it).
	members func(port string) string
}

// sysctlDir is /proc/sys, the sysctls of the calling process's network namespace.
var sysctlDir = "/proc/sys"

func writeSysctl(path, want string) (bool, error) {
	p := filepath.Join(sysctlDir, path)
	b, err := os.ReadFile(p)
	if err != nil {
		return false, fmt.Errorf("sysctl %s: %w", path, err)
	}
	if strings.TrimSpace(string(b)) == want {
		return false, nil
	}
	if err := os.WriteFile(p, []byte(want+"\n"), 0o644); err != nil {
		return false, fmt.Errorf("sysctl %s=%s: %w", path, want, err)
	}
	return true, nil
}

// apply brings links, addresses and sysctls to the configuration and returns the changes it made.
func (l *linkState) apply() (changes []string, err error) {
	did := func(f string, a ...any) { changes = append(changes, fmt.Sprintf(f, a...)) }
	var errs []error
	// IP forwarding stays off, whatever else happens.
	for _, s := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if ch, err := writeSysctl(s, "0"); err != nil {
			errs = append(errs, err)
		} else if ch {
			did("%s set to 0", s)
		}
	}
	var camIf netlink.Link
	switch l.cfg.Mode {
	case ModeBridge:
		camIf, err = l.bridge(did)
	case ModeVLAN:
		camIf, err = l.vlan(did)
	}
	if err != nil {
		return changes, errors.Join(append(errs, err)...)
	}
	if err := l.address(camIf, did); err != nil {
		errs = append(errs, err)
	}
	// No IPv6 on the camera side: no link-local addresses, no router advertisements taken from cameras.
	names := []string{camIf.Attrs().Name}
	if l.cfg.Mode == ModeBridge {
		for _, p := range l.cfg.Ports {
			names = append(names, p.Name)
		}
	} else {
		names = append(names, l.cfg.Trunk)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(sysctlDir, "net/ipv6/conf", n)); err != nil {
			continue // no IPv6 in this kernel, or the port is missing (reported above)
		}
		if ch, err := writeSysctl("net/ipv6/conf/"+n+"/disable_ipv6", "1"); err != nil {
			errs = append(errs, err)
		} else if ch {
			did("IPv6 disabled on %s", n)
		}
	}
	return changes, errors.Join(errs...)
}

func (l *linkState) up(link netlink.Link, did func(string, ...any)) error {
	if link.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := l.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	did("%s set up", link.Attrs().Name)
	return nil
}

func (l *linkState) bridge(did func(string, ...any)) (netlink.Link, error) {
	name := l.cfg.Bridge
	br, err := l.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
		off := false
		if err := l.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}, MulticastSnooping: &off}); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		did("bridge %s created", name)
		if br, err = l.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("%w: %s exists and is a %s, not a bridge", ErrConfig, name, br.Type())
	}
	if err := l.up(br, did); err != nil {
		return nil, err
	}
	var errs []error
	want := map[int]bool{}
	for _, p := range l.cfg.Ports {
		if err := l.port(p, br, want, did); err != nil {
			errs = append(errs, err)
		}
	}
	// Anything else enslaved to the camera bridge (a stale port, one plugged in by hand) leaves it.
	links, err := l.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, x := range links {
		if x.Attrs().MasterIndex == br.Attrs().Index && !want[x.Attrs().Index] {
			if err := l.h.LinkSetNoMaster(x); err != nil {
				errs = append(errs, fmt.Errorf("release %s from %s: %w", x.Attrs().Name, name, err))
				continue
			}
			did("stray %s released from %s", x.Attrs().Name, name)
		}
	}
	return br, errors.Join(errs...)
}

func (l *linkState) port(p Port, br netlink.Link, want map[int]bool, did func(string, ...any)) error {
	link, err := l.h.LinkByName(p.Name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("%w: %s", ErrPortMissing, p.Name)
		}
		return fmt.Errorf("look up port %s: %w", p.Name, err)
	}
	if err := l.up(link, did); err != nil {
		return err
	}
	member := link
	if p.MACsec != nil {
		// The raw port carries MKA and MACsec frames only; its MACsec interface joins the bridge when
		// wpa_supplicant has created it.
		if link.Attrs().MasterIndex != 0 {
			if err := l.h.LinkSetNoMaster(link); err != nil {
				return fmt.Errorf("release MACsec port %s: %w", p.Name, err)
			}
			did("MACsec port %s released from the bridge", p.Name)
		}
		name := ""
		if l.members != nil {
			name = l.members(p.Name)
		}
		if name == "" {
			return nil
		}
		if member, err = l.h.LinkByName(name); err != nil {
			return fmt.Errorf("look up MACsec interface %s of %s: %w", name, p.Name, err)
		}
		if err := l.up(member, did); err != nil {
			return err
		}
	}
	want[member.Attrs().Index] = true
	if member.Attrs().MasterIndex != br.Attrs().Index {
		if err := l.h.LinkSetMaster(member, br); err != nil {
			return fmt.Errorf("add %s to %s: %w", member.Attrs().Name, br.Attrs().Name, err)
		}
		did("%s added to %s", member.Attrs().Name, br.Attrs().Name)
	}
	pi, err := l.h.LinkGetProtinfo(member)
	if err != nil {
		return fmt.Errorf("bridge port %s: %w", member.Attrs().Name, err)
	}
	if !pi.Isolated {
		if err := l.h.LinkSetIsolated(member, true); err != nil {
			return fmt.Errorf("isolate %s: %w", member.Attrs().Name, err)
		}
		did("%s isolated", member.Attrs().Name)
	}
	return nil
}

func (l *linkState) vlan(did func(string, ...any)) (netlink.Link, error) {
	trunk, err := l.h.LinkByName(l.cfg.Trunk)
	if err != nil {
		return nil, fmt.Errorf("%w: trunk %s: %v", ErrPortMissing, l.cfg.Trunk, err)
	}
	if err := l.up(trunk, did); err != nil {
		return nil, err
	}
	name := vlanName(l.cfg.Trunk, l.cfg.VLAN)
	v, err := l.h.LinkByName(name)
	if err == nil {
		vl, ok := v.(*netlink.Vlan)
		if !ok || vl.VlanId != int(l.cfg.VLAN) || vl.ParentIndex != trunk.Attrs().Index {
			if err := l.h.LinkDel(v); err != nil {
				return nil, fmt.Errorf("remove mismatched %s: %w", name, err)
			}
			did("mismatched %s removed", name)
			v = nil
		}
	} else {
		v = nil
	}
	if v == nil {
		nv := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: trunk.Attrs().Index}, VlanId: int(l.cfg.VLAN)}
		if err := l.h.LinkAdd(nv); err != nil {
			return nil, fmt.Errorf("create VLAN %d on %s: %w", l.cfg.VLAN, l.cfg.Trunk, err)
		}
		did("VLAN interface %s created", name)
		if v, err = l.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up %s: %w", name, err)
		}
	}
	return v, l.up(v, did)
}

// address makes the camera interface hold exactly the configured address.
func (l *linkState) address(link netlink.Link, did func(string, ...any)) error {
	addrs, err := l.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	want := l.cfg.Address
	found := false
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		if a.IP.Equal(net.IP(want.Addr().AsSlice())) && ones == want.Bits() {
			found = true
			continue
		}
		if err := l.h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
		did("stray address %s removed from %s", a.IPNet, link.Attrs().Name)
	}
	if !found {
		ipn := &net.IPNet{IP: net.IP(want.Addr().AsSlice()), Mask: net.CIDRMask(want.Bits(), 32)}
		if err := l.h.AddrAdd(link, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add %s to %s: %w", want, link.Attrs().Name, err)
		}
		did("address %s added to %s", want, link.Attrs().Name)
	}
	return nil
}
