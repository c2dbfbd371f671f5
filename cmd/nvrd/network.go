package main

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgenvr/nvr/board"
	"github.com/edgenvr/nvr/netconfig"
)

// networkConfig builds the camera network's configuration from the board profile and the flags.
func networkConfig(prof board.Profile, addr, vlan string, dot1x bool, dataDir, state, runtime string) (*netconfig.ManagerConfig, error) {
	prefix, err := netip.ParsePrefix(addr)
	if err != nil {
		return nil, fmt.Errorf("-camera-net %q: want ADDRESS/PREFIX such as 10.77.0.1/24: %w", addr, err)
	}
	cfg := netconfig.Config{Mode: netconfig.ModeBridge, Bridge: "nvrcam", Address: prefix}
	for _, p := range prof.Ports {
		if p.Role == "client" && cfg.Client == "" {
			cfg.Client = p.Name
		}
	}
	if vlan != "" {
		trunk, vid, ok := strings.Cut(vlan, ":")
		n, err := strconv.ParseUint(vid, 10, 16)
		if !ok || trunk == "" || err != nil || n == 0 || n > 4094 {
			return nil, fmt.Errorf("-camera-vlan %q: want TRUNK:VID with VID 1-4094", vlan)
		}
		cfg.Mode, cfg.Trunk, cfg.VLAN = netconfig.ModeVLAN, trunk, uint16(n)
	} else {
		for _, p := range prof.CameraPorts() {
			cfg.Ports = append(cfg.Ports, netconfig.Port{Name: p.Name, Auth: dot1x})
		}
		if len(cfg.Ports) == 0 {
			return nil, errors.New("the board profile names no camera ports: use -camera-vlan")
		}
	}
	if state == "" {
		state = filepath.Join(dataDir, "net")
	}
	return &netconfig.ManagerConfig{Network: cfg, StateDir: state, RuntimeDir: runtime}, nil
}
