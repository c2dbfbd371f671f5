package appliance

import (
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/netconfig"
)

// TestMACsecWatch: a device on a MACsec port without a secure channel is one alarm (not one per poll), a
// new device on it another, the port secured clears it; a secured port or one with nobody on it is quiet.
// The states come from netconfig.Manager.MACsecStates, checked against the kernel in netconfig's VM test
// (macsec-wrong-key).
func TestMACsecWatch(t *testing.T) {
	var w macsecWatch
	now := time.Now()
	quiet := []netconfig.MACsecState{
		{Port: "cam0", Interface: "macsec0", Secured: true, Peers: []string{"02:00:00:00:00:01"}},
		{Port: "cam1", Interface: "macsec1"},
	}
	if got := w.update(quiet, now); len(got) != 0 {
		t.Fatalf("alarms for a secured port and an empty one: %+v", got)
	}
	rogue := []netconfig.MACsecState{quiet[0], {Port: "cam1", Interface: "macsec1", Peers: []string{"02:00:00:00:00:66"}, RejectedFrames: 9}}
	got := w.update(rogue, now)
	if len(got) != 1 || !got[0].Active || got[0].Kind != "macsec-unsecured" ||
		!strings.Contains(got[0].Detail, "cam1") || !strings.Contains(got[0].Detail, "02:00:00:00:00:66") {
		t.Fatalf("rogue device: %+v", got)
	}
	if got := w.update(rogue, now); len(got) != 0 {
		t.Fatalf("the same rogue raised again: %+v", got)
	}
	rogue[1].Peers = []string{"02:00:00:00:00:66", "02:00:00:00:00:77"}
	if got := w.update(rogue, now); len(got) != 1 || !strings.Contains(got[0].Detail, "02:00:00:00:00:77") {
		t.Fatalf("a second device on the port: %+v", got)
	}
	rogue[1].Secured = true
	if got := w.update(rogue, now); len(got) != 1 || got[0].Active {
		t.Fatalf("port secured: %+v", got)
	}
	if got := w.update(rogue, now); len(got) != 0 {
		t.Fatalf("cleared twice: %+v", got)
	}
}
