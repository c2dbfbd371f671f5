package appliance

import (
	"context"
	"fmt"

	"github.com/edgenvr/nvr/netconfig"
)

// runNetwork walls the camera network off (bridge or VLAN, nftables, DHCP, 802.1X, MACsec) until ctx ends,
// and turns its 802.1X failures, camera moves and devices without the key on MACsec ports into alarms. The
// ruleset outlives the daemon.
func (a *Appliance) runNetwork(ctx context.Context, al *alarms) (func() error, error) {
	cfg := *a.cfg.Network
	onAuth, onMove := cfg.OnAuth, cfg.OnMove
	cfg.OnAuth = func(e netconfig.AuthEvent) {
		if e.Kind == "failure" || e.Kind == "restart" {
			al.raise(Alarm{Kind: "802.1x-" + e.Kind, Active: true, Detail: fmt.Sprintf("port %s, MAC %s", e.Port, e.MAC)})
		}
		if onAuth != nil {
			onAuth(e)
		}
	}
	cfg.OnMove = func(m netconfig.MoveAlarm) {
		al.raise(Alarm{Time: m.At, Kind: "camera-moved", Active: true, Detail: fmt.Sprintf("MAC %s moved from port %s to %s", m.MAC, m.From, m.To)})
		if onMove != nil {
			onMove(m)
		}
	}
	nm, err := netconfig.New(cfg, a.log.With("part", "netconfig"))
	if err != nil {
		return nil, fmt.Errorf("camera network: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- nm.Run(ctx) }()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		(&macsecWatch{}).run(ctx, nm.MACsecStates, al)
	}()
	return func() error {
		err := <-done
		<-watched
		return err
	}, nil
}
