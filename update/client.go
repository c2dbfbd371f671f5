package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// ClientConfig says where the fleet server is and what the appliance already trusts.
type ClientConfig struct {
	// RepositoryURL is the base of the TUF repository: metadata under RepositoryURL/metadata/, bundles under
	// RepositoryURL/targets/. It must carry no credentials.
	RepositoryURL string
	// TrustedRoot is the root.json shipped in the image: the only keys the appliance trusts to start with.
	TrustedRoot []byte
	// StateDir keeps the newest trusted metadata (so a later rollback or freeze is detected across reboots)
	// and the downloaded bundle. It must be on persistent, writable storage.
	StateDir string
	// Board and Current identify what runs now; only newer targets for this board are taken.
	Board   string
	Current Version
	// MaxBundleSize bounds the bundle download (default MaxBundleSize).
	MaxBundleSize int64
	// HTTP is the client for metadata and bundles (default: one with a 30 s dial and header timeout).
	HTTP *http.Client
	// Now is the clock that expiry is judged by (default time.Now).
	Now func() time.Time
}

// Client talks to one TUF repository.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
}

// NewClient checks the configuration.
func NewClient(cfg ClientConfig, log *slog.Logger) (*Client, error) {
	u, err := url.Parse(cfg.RepositoryURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("update: repository URL must be http(s)://HOST/PATH")
	}
	if u.User != nil {
		return nil, errors.New("update: repository URL must not carry credentials")
	}
	if len(cfg.TrustedRoot) == 0 {
		return nil, errors.New("update: no trusted root metadata")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("update: no state directory")
	}
	if !ValidName(cfg.Board) {
		return nil, fmt.Errorf("update: bad board name %q", clip(cfg.Board))
	}
	if cfg.MaxBundleSize <= 0 {
		cfg.MaxBundleSize = MaxBundleSize
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ResponseHeaderTimeout: 30 * time.Second,
			TLSHandshakeTimeout:   30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
		}}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, log: log}, nil
}

func (c *Client) metaDir() string   { return filepath.Join(c.cfg.StateDir, "metadata") }
func (c *Client) bundleDir() string { return filepath.Join(c.cfg.StateDir, "bundles") }
func (c *Client) metadataURL() string {
	return strings.TrimSuffix(c.cfg.RepositoryURL, "/") + "/metadata/"
}
func (c *Client) targetsURL() string {
	return strings.TrimSuffix(c.cfg.RepositoryURL, "/") + "/targets/"
}

// trustedRoot is the newest root the appliance has verified, falling back to the one shipped in the image.
func (c *Client) trustedRoot() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(c.metaDir(), "root.json"))
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read trusted root: %w", err)
	}
	return c.cfg.TrustedRoot, nil
}

// Check refreshes the metadata from the repository (root rotation, timestamp, snapshot, targets, each
// verified against the keys and versions already trusted) and returns the newest target for this board
// that is newer than the running version, or ErrNoUpdate.
func (c *Client) Check(ctx context.Context) (Target, error) {
	if err := os.MkdirAll(c.metaDir(), 0o700); err != nil {
		return Target{}, fmt.Errorf("update state: %w", err)
	}
	root, err := c.trustedRoot()
	if err != nil {
		return Target{}, err
	}
	ucfg, err := config.New(c.metadataURL(), root)
	if err != nil {
		return Target{}, fmt.Errorf("update config: %w", err)
	}
	ucfg.LocalMetadataDir = c.metaDir()
	ucfg.LocalTargetsDir = c.bundleDir()
	ucfg.RemoteTargetsURL = c.targetsURL()
	ucfg.Fetcher = &httpFetcher{ctx: ctx, client: c.cfg.HTTP}
	// Metadata is small; keep the bounds tight so endless metadata is cut early.
	ucfg.TimestampMaxLength = 16 << 10
	ucfg.SnapshotMaxLength = 1 << 20
	ucfg.TargetsMaxLength = 4 << 20
	ucfg.RootMaxLength = 512 << 10
	up, err := updater.New(ucfg)
	if err != nil {
		return Target{}, classify(fmt.Errorf("trusted metadata: %w", err))
	}
	up.UnsafeSetRefTime(c.cfg.Now())
	if err := up.Refresh(); err != nil {
		return Target{}, classify(fmt.Errorf("refresh metadata from fleet server: %w", err))
	}
	var best *Target
	for p, tf := range up.GetTopLevelTargets() {
		if !strings.HasPrefix(p, c.cfg.Board+"/") {
			continue
		}
		var custom []byte
		if tf.Custom != nil {
			custom = *tf.Custom
		}
		t, err := ParseTargetCustom(p, custom)
		if err != nil {
			c.log.Warn("ignoring malformed target", "target", clip(p), "err", err)
			continue
		}
		if t.Board != c.cfg.Board {
			continue
		}
		sum, ok := tf.Hashes["sha256"]
		if !ok || len(sum) != sha256.Size {
			c.log.Warn("ignoring target without a SHA-256", "target", clip(p))
			continue
		}
		t.Length, t.SHA256 = tf.Length, append([]byte(nil), sum...)
		v, _ := ParseVersion(t.Version)
		if best == nil {
			best = &t
			continue
		}
		bv, _ := ParseVersion(best.Version)
		if v.Compare(bv) > 0 {
			best = &t
		}
	}
	if best == nil {
		return Target{}, ErrNoUpdate
	}
	v, _ := ParseVersion(best.Version)
	switch v.Compare(c.cfg.Current) {
	case -1:
		return *best, fmt.Errorf("%w: the fleet server's newest firmware for %s is %s, older than the running %s", ErrRollback, c.cfg.Board, v, c.cfg.Current)
	case 0:
		return *best, fmt.Errorf("%w: newest for %s is %s, already running", ErrNoUpdate, c.cfg.Board, v)
	}
	return *best, nil
}

// Download fetches the bundle of t into the state directory, streaming it through SHA-256 and stopping at
// its signed length: a longer, shorter or different body is refused and nothing is kept. It returns the
// path of the verified bundle. The file name is consistent-snapshot style (HASH.NAME), as the repository
// serves it.
func (c *Client) Download(ctx context.Context, t Target) (string, error) {
	if t.Length <= 0 || len(t.SHA256) != sha256.Size {
		return "", fmt.Errorf("%w: target %s has no length or hash", ErrMalformed, clip(t.Path))
	}
	if t.Length > c.cfg.MaxBundleSize {
		return "", fmt.Errorf("%w: target %s is %d bytes, the limit is %d", ErrTooLarge, clip(t.Path), t.Length, c.cfg.MaxBundleSize)
	}
	if err := os.MkdirAll(c.bundleDir(), 0o700); err != nil {
		return "", fmt.Errorf("update state: %w", err)
	}
	hexsum := hex.EncodeToString(t.SHA256)
	remote := path.Join(path.Dir(t.Path), hexsum+"."+path.Base(t.Path))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.targetsURL()+remote, nil)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", clip(t.Path), err)
	}
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", clip(t.Path), redactURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download %s: HTTP %d", clip(t.Path), resp.StatusCode)
	}
	if resp.ContentLength > t.Length {
		return "", fmt.Errorf("%w: %s announced %d bytes, signed length is %d", ErrTooLarge, clip(t.Path), resp.ContentLength, t.Length)
	}
	// Old bundles are of no use once a new one is being fetched; keep the disk from filling.
	if olds, _ := filepath.Glob(filepath.Join(c.bundleDir(), "*.raucb")); len(olds) > 0 {
		for _, o := range olds {
			_ = os.Remove(o)
		}
	}
	final := filepath.Join(c.bundleDir(), hexsum+".raucb")
	f, err := os.CreateTemp(c.bundleDir(), ".download-*")
	if err != nil {
		return "", fmt.Errorf("download %s: %w", clip(t.Path), err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	// Read one byte past the signed length to tell endless data from an exact fit.
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, t.Length+1))
	if err != nil {
		return "", fmt.Errorf("download %s: after %d bytes: %w", clip(t.Path), n, redactURL(err))
	}
	if n > t.Length {
		return "", fmt.Errorf("%w: %s sent more than its signed length of %d bytes", ErrTooLarge, clip(t.Path), t.Length)
	}
	if n < t.Length {
		return "", fmt.Errorf("%w: %s ended after %d of %d bytes", ErrHashMismatch, clip(t.Path), n, t.Length)
	}
	if got := h.Sum(nil); !equalBytes(got, t.SHA256) {
		return "", fmt.Errorf("%w: %s has SHA-256 %x, signed metadata says %x", ErrHashMismatch, clip(t.Path), got, t.SHA256)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("download %s: %w", clip(t.Path), err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("download %s: %w", clip(t.Path), err)
	}
	if err := os.Rename(f.Name(), final); err != nil {
		return "", fmt.Errorf("download %s: %w", clip(t.Path), err)
	}
	keep = true
	return final, nil
}

func equalBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	var d byte
	for i := range a {
		d |= a[i] ^ b[i]
	}
	return d == 0
}

// classify maps go-tuf's errors to this package's sentinels, keeping the original in the chain.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return fmt.Errorf("%w: %w", ErrExpired, err)
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		return fmt.Errorf("%w: %w", ErrUntrusted, err)
	case errors.Is(err, &metadata.ErrBadVersionNumber{}):
		return fmt.Errorf("%w: %w", ErrRollback, err)
	case errors.Is(err, &metadata.ErrDownloadLengthMismatch{}):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}):
		return fmt.Errorf("%w: %w", ErrHashMismatch, err)
	}
	return err
}

// redactURL drops the URL from a transport error: the repository address may be configured with a token in
// its path by an operator, and error text ends up in logs.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// httpFetcher is go-tuf's metadata fetcher: bounded by maxLength, bound to the caller's context, no retries
// (the agent's poll loop retries).
type httpFetcher struct {
	ctx    context.Context
	client *http.Client
}

func (f *httpFetcher) DownloadFile(u string, maxLength int64, _ time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(f.ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, &metadata.ErrDownload{Msg: redactURL(err).Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: path.Base(u)}
	}
	if resp.ContentLength > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: %d bytes announced, limit %d", path.Base(u), resp.ContentLength, maxLength)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, &metadata.ErrDownload{Msg: redactURL(err).Error()}
	}
	if int64(len(b)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: more than %d bytes", path.Base(u), maxLength)}
	}
	return b, nil
}
