package appliance

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgenvr/nvr/netconfig"
)

// macsecPoll is how often the MACsec ports' state is read for alarms. netconfig reports no event when a
// port stays unsecured, so the appliance asks.
const macsecPoll = 5 * time.Second

// macsecWatch turns the MACsec ports' state into alarms: a device on a MACsec port that never agreed a
// secure channel (a swapped or rogue camera, or one with another key) is an alarm naming the port and the
// device; the port becoming secured clears it. Nothing of such a device is delivered either way; the
// alarm is so that someone looks.
type macsecWatch struct {
	raised map[string]string // port → the peers the active alarm names
}

// update compares the ports' state with what is already raised and returns the alarms to raise.
func (w *macsecWatch) update(states []netconfig.MACsecState, now time.Time) []Alarm {
	if w.raised == nil {
		w.raised = map[string]string{}
	}
	var out []Alarm
	for _, st := range states {
		peers := strings.Join(st.Peers, ",")
		prev, active := w.raised[st.Port]
		switch {
		case !st.Secured && peers != "" && (!active || prev != peers):
			w.raised[st.Port] = peers
			out = append(out, Alarm{Time: now, Kind: "macsec-unsecured", Active: true,
				Detail: fmt.Sprintf("port %s: device %s without the port's MACsec key (no secure channel; %d frames from unknown channels dropped)", st.Port, peers, st.RejectedFrames)})
		case st.Secured && active:
			delete(w.raised, st.Port)
			out = append(out, Alarm{Time: now, Kind: "macsec-unsecured", Active: false,
				Detail: fmt.Sprintf("port %s: secured (interface %s)", st.Port, st.Interface)})
		}
	}
	return out
}

// run polls states until ctx ends.
func (w *macsecWatch) run(ctx context.Context, states func() []netconfig.MACsecState, al *alarms) {
	t := time.NewTicker(macsecPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, a := range w.update(states(), now) {
				al.raise(a)
			}
		}
	}
}
