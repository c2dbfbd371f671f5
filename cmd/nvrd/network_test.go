package main

import (
	"testing"

	"github.com/edgenvr/nvr/board"
	"github.com/edgenvr/nvr/netconfig"
)

func TestNetworkConfig(t *testing.T) {
	prof, err := board.Lookup("x86-generic")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := networkConfig(prof, "10.77.0.1/24", "", true, "/data", "", "/run/nvr/net")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network.Mode != netconfig.ModeBridge || len(cfg.Network.Ports) != len(prof.CameraPorts()) || cfg.StateDir != "/data/net" {
		t.Fatalf("bridge config %+v", cfg)
	}
	for _, p := range cfg.Network.Ports {
		if !p.Auth {
			t.Errorf("port %s without 802.1X", p.Name)
		}
	}
	cfg, err = networkConfig(prof, "10.77.0.1/24", "eth1:100", false, "/data", "/s", "/r")
	if err != nil || cfg.Network.Mode != netconfig.ModeVLAN || cfg.Network.Trunk != "eth1" || cfg.Network.VLAN != 100 {
		t.Fatalf("vlan config %+v %v", cfg, err)
	}
	for _, bad := range [][2]string{{"10.77.0.1", ""}, {"10.77.0.1/24", "eth1"}, {"10.77.0.1/24", "eth1:0"}, {"10.77.0.1/24", "eth1:5000"}} {
		if _, err := networkConfig(prof, bad[0], bad[1], false, "/data", "", ""); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
