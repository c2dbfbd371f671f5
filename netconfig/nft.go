package netconfig

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of the appliance's nftables tables (one inet, one bridge). Nothing else in them is
// kept: Apply replaces them whole, in one transaction.
const TableName = "nvr"

// Counter names: every drop the ruleset makes is counted in one of these named counters.
const (
	CounterDead          = "dead_drop"       // anything addressed to a raw camera port or untagged trunk
	CounterCameraIn      = "cam_in_drop"     // camera to appliance, not DHCP nor a reply
	CounterFwdFromCamera = "fwd_from_camera" // camera to anywhere but the appliance
	CounterFwdToCamera   = "fwd_to_camera"   // anything but the appliance to the camera network
	CounterForward       = "forward_drop"    // anything else the forward hook saw
	CounterUnauth        = "unauth_drop"     // frames of a camera port that 802.1X has not authorized
	CounterL2Forward     = "l2_forward_drop" // frames bridged from one camera port to another
)

// Counter is a named nftables counter's value.
type Counter struct{ Packets, Bytes uint64 }

// fwSpec is what the ruleset is built from.
type fwSpec struct {
	cameraIfs []string     // L3 interfaces of the camera network (bridge or VLAN interface)
	deadIfs   []string     // interfaces that must not carry IP at all (raw bridge ports, untagged trunk)
	authPorts []string     // bridge ports gated by 802.1X
	bridge    bool         // whether the bridge table exists (bridge mode)
	camNet    netip.Prefix // camera subnet
	rtp       [2]uint16
}

type authKey struct {
	port string
	mac  [6]byte
}

// Firewall is the appliance's nftables ruleset for the camera network. Its methods are safe for concurrent
// use.
type Firewall struct {
	log *slog.Logger

	mu   sync.Mutex
	spec fwSpec
	auth map[authKey]bool
}

func newFirewall(spec fwSpec, log *slog.Logger) *Firewall {
	return &Firewall{spec: spec, auth: map[authKey]bool{}, log: log}
}

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

func tag(id string) []byte { return []byte("nvr:" + id) }

var (
	inetTable   = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	bridgeTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge}
)

// chainSpec is one chain of the ruleset with its rules, each tagged for drift detection.
type chainSpec struct {
	chain *nftables.Chain
	rules []ruleSpec
}

type ruleSpec struct {
	id    string
	exprs []expr.Any
}

type setSpec struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

type ruleset struct {
	table    *nftables.Table
	sets     []*setSpec
	counters []string
	chains   []*chainSpec
}

func counterRef(name string) expr.Any {
	return &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name}
}

func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }
func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

func inSet(key expr.MetaKey, s *nftables.Set, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert},
	}
}

func fibType(t uint32) []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(t)},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func cat(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }

// inetRuleset is the L3 ruleset: the camera network reaches the appliance only for DHCP and replies to what
// the recorder asked; nothing is forwarded either way, and every drop is counted.
func (s fwSpec) inetRuleset() *ruleset {
	t := inetTable
	camifs := &nftables.Set{Table: t, Name: "camifs", KeyType: nftables.TypeIFName}
	deadifs := &nftables.Set{Table: t, Name: "deadifs", KeyType: nftables.TypeIFName}
	rs := &ruleset{table: t, counters: []string{CounterDead, CounterCameraIn, CounterFwdFromCamera, CounterFwdToCamera, CounterForward}}
	for _, x := range []struct {
		set   *nftables.Set
		names []string
	}{{camifs, s.cameraIfs}, {deadifs, s.deadIfs}} {
		ss := &setSpec{set: x.set}
		for _, n := range x.names {
			ss.elems = append(ss.elems, nftables.SetElement{Key: ifname(n)})
		}
		rs.sets = append(rs.sets, ss)
	}
	accept4 := func(p nftables.ChainPolicy) *nftables.ChainPolicy { return &p }
	net4 := s.camNet.Masked()
	mask := net.CIDRMask(net4.Bits(), 32)
	netb := net4.Addr().As4()
	toCamNet := cat(nfproto(unix.NFPROTO_IPV4), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netb[:]},
	})
	notLo := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")},
	}
	pre := &chainSpec{chain: &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: accept4(nftables.ChainPolicyAccept)}}
	pre.rules = []ruleSpec{
		{"dead", cat(inSet(expr.MetaKeyIIFNAME, deadifs, false), []expr.Any{counterRef(CounterDead), drop()})},
		{"cam-v6", cat(inSet(expr.MetaKeyIIFNAME, camifs, false), nfproto(unix.NFPROTO_IPV6), []expr.Any{counterRef(CounterCameraIn), drop()})},
		{"cam-local", cat(inSet(expr.MetaKeyIIFNAME, camifs, false), fibType(unix.RTN_LOCAL), []expr.Any{accept()})},
		{"cam-bcast", cat(inSet(expr.MetaKeyIIFNAME, camifs, false), fibType(unix.RTN_BROADCAST), []expr.Any{accept()})},
		{"cam-mcast", cat(inSet(expr.MetaKeyIIFNAME, camifs, false), fibType(unix.RTN_MULTICAST), []expr.Any{accept()})},
		{"cam-fwd", cat(inSet(expr.MetaKeyIIFNAME, camifs, false), []expr.Any{counterRef(CounterFwdFromCamera), drop()})},
		{"to-camnet", cat(notLo, inSet(expr.MetaKeyIIFNAME, camifs, true), toCamNet, []expr.Any{counterRef(CounterFwdToCamera), drop()})},
	}
	camIn := &chainSpec{chain: &nftables.Chain{Name: "cam_in", Table: t}}
	camIn.rules = []ruleSpec{
		{"ct", []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
			accept(),
		}},
		{"dhcp", cat(l4proto(unix.IPPROTO_UDP), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(67)},
			accept(),
		})},
	}
	if s.rtp[1] != 0 {
		camIn.rules = append(camIn.rules, ruleSpec{"rtp", cat(l4proto(unix.IPPROTO_UDP), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: binaryutil.BigEndian.PutUint16(s.rtp[0]),
				ToData: binaryutil.BigEndian.PutUint16(s.rtp[1])},
			accept(),
		})})
	}
	camIn.rules = append(camIn.rules, ruleSpec{"drop", []expr.Any{counterRef(CounterCameraIn), drop()}})
	in := &chainSpec{chain: &nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: accept4(nftables.ChainPolicyAccept)}}
	in.rules = []ruleSpec{{"cam", cat(inSet(expr.MetaKeyIIFNAME, camifs, false), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "cam_in"}})}}
	fwd := &chainSpec{chain: &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: accept4(nftables.ChainPolicyDrop)}}
	fwd.rules = []ruleSpec{
		{"from-cam", cat(inSet(expr.MetaKeyIIFNAME, camifs, false), []expr.Any{counterRef(CounterFwdFromCamera), drop()})},
		{"to-cam", cat(inSet(expr.MetaKeyOIFNAME, camifs, false), []expr.Any{counterRef(CounterFwdToCamera), drop()})},
		{"other", []expr.Any{counterRef(CounterForward), drop()}},
	}
	rs.chains = []*chainSpec{camIn, pre, in, fwd}
	return rs
}

// bridgeRuleset is the L2 ruleset of the camera bridge: nothing is bridged from port to port, and a port
// under 802.1X passes EAPOL only, until its camera's MAC is authorized on that port.
func (s fwSpec) bridgeRuleset(auth map[authKey]bool) *ruleset {
	t := bridgeTable
	ports := &nftables.Set{Table: t, Name: "authports", KeyType: nftables.TypeIFName}
	authorized := &nftables.Set{Table: t, Name: "authorized", KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr), Concatenation: true}
	rs := &ruleset{table: t, counters: []string{CounterUnauth, CounterL2Forward}}
	ps := &setSpec{set: ports}
	for _, p := range s.authPorts {
		ps.elems = append(ps.elems, nftables.SetElement{Key: ifname(p)})
	}
	as := &setSpec{set: authorized}
	for _, k := range sortedAuth(auth) {
		as.elems = append(as.elems, nftables.SetElement{Key: authElem(k)})
	}
	rs.sets = []*setSpec{ps, as}
	policy := nftables.ChainPolicyAccept
	gate := &chainSpec{chain: &nftables.Chain{Name: "gate", Table: t}}
	gate.rules = []ruleSpec{
		{"eapol", []expr.Any{
			&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(etherTypeEAPOL)},
			accept(),
		}},
		{"authorized", []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			&expr.Lookup{SourceRegister: 1, SetName: authorized.Name, SetID: authorized.ID},
			accept(),
		}},
		{"drop", []expr.Any{counterRef(CounterUnauth), drop()}},
	}
	jumpGate := cat(inSet(expr.MetaKeyIIFNAME, ports, false), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "gate"}})
	pre := &chainSpec{chain: &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &policy},
		rules: []ruleSpec{{"gate", jumpGate}}}
	in := &chainSpec{chain: &nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy},
		rules: []ruleSpec{{"gate", jumpGate}}}
	fwd := &chainSpec{chain: &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy},
		rules: []ruleSpec{{"drop", []expr.Any{counterRef(CounterL2Forward), drop()}}}}
	rs.chains = []*chainSpec{gate, pre, in, fwd}
	return rs
}

const etherTypeEAPOL = 0x888e

func authElem(k authKey) []byte {
	b := make([]byte, 0, 24)
	b = append(b, ifname(k.port)...)
	b = append(b, k.mac[:]...)
	return append(b, 0, 0)
}

func sortedAuth(m map[authKey]bool) []authKey {
	ks := make([]authKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].port != ks[j].port {
			return ks[i].port < ks[j].port
		}
		return bytes.Compare(ks[i].mac[:], ks[j].mac[:]) < 0
	})
	return ks
}

// queue adds the ruleset to c's batch, replacing the table whole: add (so that delete cannot fail), delete,
// add again. The kernel applies the batch as one transaction, so no packet ever sees a half-built ruleset.
func (rs *ruleset) queue(c *nftables.Conn, saved map[string]Counter) error {
	c.AddTable(rs.table)
	c.DelTable(rs.table)
	c.AddTable(rs.table)
	for _, name := range rs.counters {
		v := saved[name]
		c.AddObj(&nftables.CounterObj{Table: rs.table, Name: name, Packets: v.Packets, Bytes: v.Bytes})
	}
	for _, s := range rs.sets {
		s.set.Table = rs.table
		if err := c.AddSet(s.set, s.elems); err != nil {
			return fmt.Errorf("set %s: %w", s.set.Name, err)
		}
	}
	// Sets got their IDs from AddSet: rebuild the lookups that reference them by name.
	for _, ch := range rs.chains {
		c.AddChain(ch.chain)
	}
	for _, ch := range rs.chains {
		for _, r := range ch.rules {
			for _, e := range r.exprs {
				if l, ok := e.(*expr.Lookup); ok {
					for _, s := range rs.sets {
						if s.set.Name == l.SetName {
							l.SetID = s.set.ID
						}
					}
				}
			}
			c.AddRule(&nftables.Rule{Table: rs.table, Chain: ch.chain, Exprs: r.exprs, UserData: tag(r.id)})
		}
	}
	return nil
}

func (f *Firewall) rulesets() []*ruleset {
	rs := []*ruleset{f.spec.inetRuleset()}
	if f.spec.bridge {
		rs = append(rs, f.spec.bridgeRuleset(f.auth))
	}
	return rs
}

// Apply replaces the appliance's tables with the desired ruleset in one transaction, keeping the counters'
// values and the authorized cameras.
func (f *Firewall) Apply() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applyLocked()
}

func (f *Firewall) applyLocked() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	saved, err := readCounters(c)
	if err != nil {
		return err
	}
	if !f.spec.bridge {
		// A bridge table left from an earlier bridge-mode configuration goes too.
		if t, _ := c.ListTableOfFamily(TableName, nftables.TableFamilyBridge); t != nil {
			c.DelTable(bridgeTable)
		}
	}
	for _, rs := range f.rulesets() {
		if err := rs.queue(c, saved); err != nil {
			return fmt.Errorf("nftables ruleset: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables apply: %w", err)
	}
	return nil
}

// Remove deletes the appliance's tables (for tests and decommissioning; Run never calls it).
func (f *Firewall) Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, t := range []*nftables.Table{inetTable, bridgeTable} {
		if x, _ := c.ListTableOfFamily(t.Name, t.Family); x != nil {
			c.DelTable(t)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables remove: %w", err)
	}
	return nil
}

func readCounters(c *nftables.Conn) (map[string]Counter, error) {
	out := map[string]Counter{}
	for _, t := range []*nftables.Table{inetTable, bridgeTable} {
		if x, _ := c.ListTableOfFamily(t.Name, t.Family); x == nil {
			continue
		}
		objs, err := c.GetObjects(t)
		if err != nil {
			return nil, fmt.Errorf("nftables counters: %w", err)
		}
		for _, o := range objs {
			switch v := o.(type) {
			case *nftables.CounterObj:
				out[v.Name] = Counter{Packets: v.Packets, Bytes: v.Bytes}
			case *nftables.NamedObj:
				if ctr, ok := v.Obj.(*expr.Counter); ok {
					out[v.Name] = Counter{Packets: ctr.Packets, Bytes: ctr.Bytes}
				}
			}
		}
	}
	return out, nil
}

// Counters returns the values of the ruleset's named counters.
func (f *Firewall) Counters() (map[string]Counter, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return readCounters(c)
}

// Authorize lets frames from mac through port (802.1X succeeded).
func (f *Firewall) Authorize(port string, mac net.HardwareAddr) error {
	return f.setAuth(port, mac, true)
}

// Deauthorize closes port to mac again (logoff, failure, link down, hostapd restart).
func (f *Firewall) Deauthorize(port string, mac net.HardwareAddr) error {
	return f.setAuth(port, mac, false)
}

// DeauthorizePort closes port to every MAC address.
func (f *Firewall) DeauthorizePort(port string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var gone []authKey
	for k := range f.auth {
		if k.port == port {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	for _, k := range gone {
		delete(f.auth, k)
	}
	return f.updateAuthSet(gone, false)
}

var errBadMAC = errors.New("not a 6-byte MAC address")

func (f *Firewall) setAuth(port string, mac net.HardwareAddr, on bool) error {
	if len(mac) != 6 {
		return fmt.Errorf("authorize %s on %s: %w", mac, port, errBadMAC)
	}
	k := authKey{port: port}
	copy(k.mac[:], mac)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.auth[k] == on {
		return nil
	}
	if on {
		f.auth[k] = true
	} else {
		delete(f.auth, k)
	}
	return f.updateAuthSet([]authKey{k}, on)
}

func (f *Firewall) updateAuthSet(keys []authKey, on bool) error {
	if !f.spec.bridge {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	s, err := c.GetSetByName(bridgeTable, "authorized")
	if err != nil {
		// The table is gone (drift): the full apply rebuilds it with the current authorizations.
		return f.applyLocked()
	}
	elems := make([]nftables.SetElement, len(keys))
	for i, k := range keys {
		elems[i] = nftables.SetElement{Key: authElem(k)}
	}
	if on {
		err = c.SetAddElements(s, elems)
	} else {
		err = c.SetDeleteElements(s, elems)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil && !on {
		// Closing must not fail silently: rebuild the whole table without the elements.
		return f.applyLocked()
	}
	if err != nil {
		return fmt.Errorf("nftables authorized set: %w", err)
	}
	return nil
}

// Authorized returns the authorized (port, MAC) pairs as "port/mac" strings, sorted.
func (f *Firewall) Authorized() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, k := range sortedAuth(f.auth) {
		out = append(out, k.port+"/"+net.HardwareAddr(k.mac[:]).String())
	}
	return out
}

// Drift compares the kernel's tables with the desired ruleset and describes every difference (nil: none).
func (f *Firewall) Drift() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.driftLocked()
}

func (f *Firewall) driftLocked() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	var drift []string
	for _, rs := range f.rulesets() {
		fam := "inet"
		if rs.table.Family == nftables.TableFamilyBridge {
			fam = "bridge"
		}
		if t, _ := c.ListTableOfFamily(rs.table.Name, rs.table.Family); t == nil {
			drift = append(drift, fmt.Sprintf("table %s %s missing", fam, rs.table.Name))
			continue
		}
		chains, err := c.ListChainsOfTableFamily(rs.table.Family)
		if err != nil {
			return nil, fmt.Errorf("nftables list chains: %w", err)
		}
		have := map[string]*nftables.Chain{}
		for _, ch := range chains {
			if ch.Table.Name == rs.table.Name {
				have[ch.Name] = ch
			}
		}
		for _, want := range rs.chains {
			got := have[want.chain.Name]
			delete(have, want.chain.Name)
			where := fam + " " + want.chain.Name
			if got == nil {
				drift = append(drift, "chain "+where+" missing")
				continue
			}
			if want.chain.Hooknum != nil && (got.Hooknum == nil || *got.Hooknum != *want.chain.Hooknum ||
				got.Policy == nil || *got.Policy != *want.chain.Policy || got.Priority == nil || *got.Priority != *want.chain.Priority) {
				drift = append(drift, "chain "+where+" hook, priority or policy changed")
			}
			rules, err := c.GetRules(rs.table, got)
			if err != nil {
				return nil, fmt.Errorf("nftables list rules: %w", err)
			}
			var gotIDs, wantIDs []string
			for _, r := range rules {
				gotIDs = append(gotIDs, string(r.UserData))
			}
			for _, r := range want.rules {
				wantIDs = append(wantIDs, string(tag(r.id)))
			}
			if !slices.Equal(gotIDs, wantIDs) {
				drift = append(drift, fmt.Sprintf("chain %s rules [%s], want [%s]", where, strings.Join(gotIDs, " "), strings.Join(wantIDs, " ")))
			}
		}
		for name := range have {
			drift = append(drift, fmt.Sprintf("chain %s %s unexpected", fam, name))
		}
		for _, want := range rs.sets {
			s, err := c.GetSetByName(rs.table, want.set.Name)
			if err != nil {
				drift = append(drift, fmt.Sprintf("set %s %s missing", fam, want.set.Name))
				continue
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				return nil, fmt.Errorf("nftables set elements: %w", err)
			}
			if !sameKeys(elems, want.elems) {
				drift = append(drift, fmt.Sprintf("set %s %s has %d elements, want %d", fam, want.set.Name, len(elems), len(want.elems)))
			}
		}
		objs, err := c.GetObjects(rs.table)
		if err != nil {
			return nil, fmt.Errorf("nftables counters: %w", err)
		}
		names := map[string]bool{}
		for _, o := range objs {
			switch v := o.(type) {
			case *nftables.CounterObj:
				names[v.Name] = true
			case *nftables.NamedObj:
				names[v.Name] = true
			}
		}
		for _, n := range rs.counters {
			if !names[n] {
				drift = append(drift, fmt.Sprintf("counter %s %s missing", fam, n))
			}
		}
	}
	return drift, nil
}

func sameKeys(a, b []nftables.SetElement) bool {
	if len(a) != len(b) {
		return false
	}
	ks := func(es []nftables.SetElement) []string {
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = string(e.Key)
		}
		sort.Strings(out)
		return out
	}
	return slices.Equal(ks(a), ks(b))
}

// Reconcile re-applies the ruleset when it drifted and returns what had drifted.
func (f *Firewall) Reconcile() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	drift, err := f.driftLocked()
	if err != nil {
		return nil, err
	}
	if len(drift) == 0 {
		return nil, nil
	}
	if err := f.applyLocked(); err != nil {
		return drift, err
	}
	return drift, nil
}
