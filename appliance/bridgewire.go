package appliance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/bridge"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
	"github.com/edgenvr/nvr/appliance/web"
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

// bridgeStore is the bridge's credential store as the web pages see it (web.BridgeCredentials): the
// pages decide and audit, this only issues, revokes and lists, and says which listeners are bound.
type bridgeStore struct {
	az    *authz.Service
	creds *bridge.Credentials

	mu        sync.Mutex
	listeners []web.BridgeListener
}

// openBridgeStore opens the bridge credentials (key sealed to dev) in the data directory.
func (a *Appliance) openBridgeStore(az *authz.Service, dev *tpm.TPM) (*bridgeStore, error) {
	var sealer bridge.Sealer
	if dev != nil {
		sealer = dev
	}
	creds, err := bridge.OpenCredentials(a.cfg.DataDir, sealer, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	return &bridgeStore{az: az, creds: creds}, nil
}

// Issue implements web.BridgeCredentials.
func (s *bridgeStore) Issue(u authz.User) (string, web.BridgeCredential, error) {
	secret, info, err := s.creds.Issue(u)
	if errors.Is(err, bridge.ErrNotHolder) {
		return "", web.BridgeCredential{}, fmt.Errorf("%w: %v", web.ErrBridgeRefused, err)
	}
	if err != nil {
		return "", web.BridgeCredential{}, err
	}
	return secret, web.BridgeCredential{User: info.User, Serial: info.Serial, Issued: info.Issued}, nil
}

// Revoke implements web.BridgeCredentials.
func (s *bridgeStore) Revoke(user string) error {
	err := s.creds.Revoke(user)
	if errors.Is(err, bridge.ErrNoCredential) {
		return fmt.Errorf("%s: %w", user, web.ErrNoBridgeCredential)
	}
	return err
}

// Get implements web.BridgeCredentials.
func (s *bridgeStore) Get(user string) (web.BridgeCredential, bool) {
	info, ok := s.creds.Info(user)
	if !ok {
		return web.BridgeCredential{}, false
	}
	return s.describe(info), true
}

// List implements web.BridgeCredentials.
func (s *bridgeStore) List() []web.BridgeCredential {
	var out []web.BridgeCredential
	for _, info := range s.creds.List() {
		out = append(out, s.describe(info))
	}
	return out
}

// describe says whether a credential works now (the bridge checks the account the same way at every
// request) and whether its account still has the bridge right (asked without a decision, for display: the
// right is decided when a credential is issued).
func (s *bridgeStore) describe(info bridge.CredentialInfo) web.BridgeCredential {
	c := web.BridgeCredential{User: info.User, Serial: info.Serial, Issued: info.Issued}
	u, err := s.az.User(info.User)
	switch {
	case errors.Is(err, authz.ErrNotFound):
		c.State = "account deleted"
	case err != nil:
		c.State = "account unreadable"
	default:
		if err := bridge.CheckHolder(u); err != nil {
			c.State = err.Error()
		} else if !s.az.Visible(authz.Subject{User: u.Name, Via: bridge.Door(u)}, authz.UseBridge) {
			c.State = "no role grants " + string(authz.UseBridge) + " any more: it still opens the account's cameras until revoked"
		}
	}
	return c
}

// Listeners implements web.BridgeCredentials.
func (s *bridgeStore) Listeners() []web.BridgeListener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]web.BridgeListener(nil), s.listeners...)
}

func (s *bridgeStore) bound(rtsp, rtsps net.Addr) {
	var ls []web.BridgeListener
	if rtsp != nil {
		ls = append(ls, web.BridgeListener{Scheme: "rtsp", Addr: rtsp.String()})
	}
	if rtsps != nil {
		ls = append(ls, web.BridgeListener{Scheme: "rtsps", Addr: rtsps.String()})
	}
	s.mu.Lock()
	s.listeners = ls
	s.mu.Unlock()
}

// RunBridge runs the RTSP(S) bridge until ctx ends: live streams from the recorders' fan-out
// (Appliance.Live) and replay from the index and the vault, with a short-lived key cache in front of the
// TPM; every DESCRIBE and PLAY decided and audited by az. tlsConf is the web server's (the same TPM-held
// key and certificate). Bridge credentials are derived under a key sealed to dev, kept in the data
// directory.
func (a *Appliance) RunBridge(ctx context.Context, cfg BridgeConfig, az *authz.Service, tlsConf *tls.Config, dev *tpm.TPM, db *store.DB) error {
	if !cfg.Enabled() {
		return nil
	}
	st, err := a.openBridgeStore(az, dev)
	if err != nil {
		return err
	}
	return a.runBridge(ctx, cfg, st, tlsConf, dev, db)
}

// runBridge runs the bridge on an open credential store (shared with the web pages, which issue the
// credentials, people's own included).
func (a *Appliance) runBridge(ctx context.Context, cfg BridgeConfig, st *bridgeStore, tlsConf *tls.Config, dev *tpm.TPM, db *store.DB) error {
	cache := vault.NewKeyCache(2*time.Minute, 256, time.Now)
	defer cache.Purge()
	var b *bridge.Bridge
	b, err := bridge.New(bridge.Config{
		RTSPAddr:    cfg.RTSPListen,
		RTSPSAddr:   cfg.RTSPSListen,
		TLS:         tlsConf,
		Authz:       st.az,
		Credentials: st.creds,
		Live:        a.Live,
		Recordings:  bridge.IndexRecordings{DataDir: a.cfg.DataDir, DB: db, Keys: dev, Cache: cache},
		Realm:       cfg.Realm,
		Ready: func(rtsp, rtsps net.Addr) {
			st.bound(rtsp, rtsps)
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
