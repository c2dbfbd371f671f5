package directory

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

// Looker looks a user up without a password; *Manager satisfies it.
type Looker interface {
	TestLookup(ctx context.Context, name string) (authz.DirectoryUser, error)
}

// RevalidatorConfig configures a [Revalidator].
type RevalidatorConfig struct {
	Authz     *authz.Service
	Directory Looker
	// Every is the period between checks (default 5 min).
	Every time.Duration
}

// Revalidator ends the sessions of directory users whom the directory no longer vouches for (disabled,
// deleted, or moved out of every mapped group) without waiting for the session's end. A directory that
// cannot be reached ends nothing: only new logins fail closed. Role changes still take effect at the
// next login.
type Revalidator struct {
	cfg RevalidatorConfig
	log *slog.Logger
}

// NewRevalidator makes a Revalidator.
func NewRevalidator(cfg RevalidatorConfig, log *slog.Logger) (*Revalidator, error) {
	if cfg.Authz == nil || cfg.Directory == nil {
		return nil, errors.New("directory: revalidator needs Authz and Directory")
	}
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Revalidator{cfg: cfg, log: log}, nil
}

// Run checks every period until ctx ends.
func (r *Revalidator) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Once(ctx)
		}
	}
}

// Once checks the directory users with live sessions and returns how many sessions it ended.
func (r *Revalidator) Once(ctx context.Context) int {
	checked := map[string]bool{}
	ended := 0
	for _, s := range r.cfg.Authz.Sessions() {
		if checked[s.User] {
			continue
		}
		checked[s.User] = true
		u, err := r.cfg.Authz.User(s.User)
		if err != nil || u.Directory == "" {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = r.cfg.Directory.TestLookup(lctx, s.User)
		cancel()
		if err == nil || errors.Is(err, authz.ErrDirectoryUnavailable) || errors.Is(err, authz.ErrNoDirectory) {
			continue
		}
		by := authz.Subject{User: "directory", Via: "revalidation"}
		n := r.cfg.Authz.RevokeSession(by, "", s.User, "")
		r.cfg.Authz.Event(by, "directory.revalidate", "account/"+s.User, "ok", "sessions ended: "+err.Error(), "")
		r.log.Info("directory: sessions ended: the directory no longer vouches for the user", "user", s.User, "sessions", n)
		ended += n
	}
	return ended
}
