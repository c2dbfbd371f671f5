package appliance

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/bridge"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
	"github.com/edgenvr/nvr/tpm"
)

// BridgeConfig configures the RTSP(S) bridge for external systems (appliance/bridge). With both listeners
// empty the bridge is off.
type BridgeConfig struct {
	// RTSPListen is the plain RTSP address (digest authentication only), such as ":554"; empty: none.
	RTSPListen string
	// RTSPSListen is the RTSPS address (TLS with the appliance's TPM-held key), such as ":322"; empty: none.
	RTSPSListen string
	// Realm names the appliance in digest challenges; empty: "Edge NVR bridge".
	Realm string
	// Ready, if set, receives the running bridge (for issuing credentials) and its bound addresses.
	Ready func(b *bridge.Bridge, rtsp, rtsps net.Addr)
}

// Enabled reports whether a listener is configured.
func (c BridgeConfig) Enabled() bool { return c.RTSPListen != "" || c.RTSPSListen != "" }

// RunBridge runs the RTSP(S) bridge until ctx ends: live streams from the recorders' fan-out
// (Appliance.Live) and replay from the index and the vault, with a short-lived key cache in front of the
// TPM; every DESCRIBE and PLAY decided and audited by az. tlsConf is the web server's (the same TPM-held
// key and certificate). Bridge credentials are derived under a key sealed to dev, kept in the data
// directory.
func (a *Appliance) RunBridge(ctx context.Context, cfg BridgeConfig, az *authz.Service, tlsConf *tls.Config, dev *tpm.TPM, db *store.DB) error {
	if !cfg.Enabled() {
		return nil
	}
	creds, err := bridge.OpenCredentials(a.cfg.DataDir, dev, nil, nil)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	cache := vault.NewKeyCache(2*time.Minute, 256, time.Now)
	defer cache.Purge()
	var b *bridge.Bridge
	b, err = bridge.New(bridge.Config{
		RTSPAddr:    cfg.RTSPListen,
		RTSPSAddr:   cfg.RTSPSListen,
		TLS:         tlsConf,
		Authz:       az,
		Credentials: creds,
		Live:        a.Live,
		Recordings:  bridge.IndexRecordings{DataDir: a.cfg.DataDir, DB: db, Keys: dev, Cache: cache},
		Realm:       cfg.Realm,
		Ready: func(rtsp, rtsps net.Addr) {
			if cfg.Ready != nil {
				cfg.Ready(b, rtsp, rtsps)
			}
		},
	}, a.log.With("part", "bridge"))
	if err != nil {
		return err
	}
	return b.Run(ctx)
}
