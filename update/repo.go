package update

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Repo is the release side of a TUF repository on disk, as `nvr release` keeps it:
//
//	DIR/repository/metadata/  N.root.json, root.json, N.targets.json, N.snapshot.json, timestamp.json
//	DIR/repository/targets/   BOARD/SHA256.nvr-VERSION.raucb (consistent snapshots)
//	KEYS/ROLE-KEYID.pem       ed25519 private keys, PKCS#8, mode 600 (root keys belong offline)
//
// DIR/repository is what gets copied to the static web server. Signing uses every key in KEYS that the
// role lists: threshold signing is done by running the same step where each key holder's directory is
// mounted, or by giving several key directories.
type Repo struct {
	Dir     string
	KeyDirs []string
	// Now is the release clock (default time.Now).
	Now func() time.Time
	// Expiry per role from Now (defaults: root 1 year, targets 90 days, snapshot 30 days, timestamp 1 day).
	Expiry map[string]time.Duration
}

// RepoOptions are the choices made when a repository is created.
type RepoOptions struct {
	RootKeys, RootThreshold       int // default 1 and 1
	TargetsKeys, TargetsThreshold int // default 1 and 1
}

var defaultExpiry = map[string]time.Duration{
	metadata.ROOT: 365 * 24 * time.Hour, metadata.TARGETS: 90 * 24 * time.Hour,
	metadata.SNAPSHOT: 30 * 24 * time.Hour, metadata.TIMESTAMP: 24 * time.Hour,
}

func (r *Repo) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

func (r *Repo) expires(role string) time.Time {
	d, ok := r.Expiry[role]
	if !ok {
		d = defaultExpiry[role]
	}
	return r.now().Add(d).Truncate(time.Second)
}

func (r *Repo) metaDir() string    { return filepath.Join(r.Dir, "repository", "metadata") }
func (r *Repo) targetsDir() string { return filepath.Join(r.Dir, "repository", "targets") }

// RootJSON returns the current root metadata: what an image ships as its trusted root.
func (r *Repo) RootJSON() ([]byte, error) {
	return os.ReadFile(filepath.Join(r.metaDir(), "root.json"))
}

// GenerateKey makes an ed25519 key for role and writes it into the first key directory.
func (r *Repo) GenerateKey(role string) (*metadata.Key, error) {
	if len(r.KeyDirs) == 0 {
		return nil, errors.New("release: no key directory")
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.KeyDirs[0], 0o700); err != nil {
		return nil, err
	}
	id, err := k.ID()
	if err != nil {
		return nil, err
	}
	name := filepath.Join(r.KeyDirs[0], role+"-"+id[:16]+".pem")
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	return k, nil
}

// signers returns the private keys available for the given key IDs.
func (r *Repo) signers(ids []string) ([]signature.Signer, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var out []signature.Signer
	seen := map[string]bool{}
	for _, dir := range r.KeyDirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
		sort.Strings(files)
		for _, f := range files {
			if !isRoleKeyFile(filepath.Base(f)) {
				continue // the bundle signing key and certificate live beside the TUF keys
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read key %s: %w", filepath.Base(f), err)
			}
			blk, _ := pem.Decode(b)
			if blk == nil {
				return nil, fmt.Errorf("key %s: not PEM", filepath.Base(f))
			}
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("key %s: %w", filepath.Base(f), err)
			}
			priv, ok := k.(ed25519.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("key %s: not ed25519", filepath.Base(f))
			}
			mk, err := metadata.KeyFromPublicKey(priv.Public())
			if err != nil {
				return nil, err
			}
			id, err := mk.ID()
			if err != nil {
				return nil, err
			}
			if !want[id] || seen[id] {
				continue
			}
			seen[id] = true
			s, err := signature.LoadSigner(priv, crypto.Hash(0))
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

type signable interface {
	Sign(signature.Signer) (*metadata.Signature, error)
	ClearSignatures()
}

// sign signs md with every available key of role (as root lists it) and checks the threshold is met.
func (r *Repo) sign(md signable, root *metadata.Metadata[metadata.RootType], role string, extra ...string) error {
	rr := root.Signed.Roles[role]
	if rr == nil {
		return fmt.Errorf("release: root has no role %s", role)
	}
	md.ClearSignatures()
	ss, err := r.signers(append(append([]string(nil), rr.KeyIDs...), extra...))
	if err != nil {
		return err
	}
	for _, s := range ss {
		if _, err := md.Sign(s); err != nil {
			return fmt.Errorf("sign %s: %w", role, err)
		}
	}
	if len(ss) < rr.Threshold {
		return fmt.Errorf("release: %s needs %d signatures, %d of its keys are at hand", role, rr.Threshold, len(ss))
	}
	return nil
}

// Init creates a new repository with fresh keys: root, targets, snapshot and timestamp, version 1.
func (r *Repo) Init(o RepoOptions) error {
	if _, err := os.Stat(filepath.Join(r.metaDir(), "root.json")); err == nil {
		return errors.New("release: repository already exists")
	}
	if o.RootKeys < 1 {
		o.RootKeys = 1
	}
	if o.RootThreshold < 1 {
		o.RootThreshold = 1
	}
	if o.TargetsKeys < 1 {
		o.TargetsKeys = 1
	}
	if o.TargetsThreshold < 1 {
		o.TargetsThreshold = 1
	}
	if o.RootThreshold > o.RootKeys || o.TargetsThreshold > o.TargetsKeys {
		return errors.New("release: a threshold is larger than the number of keys")
	}
	root := metadata.Root(r.expires(metadata.ROOT))
	counts := map[string][2]int{metadata.ROOT: {o.RootKeys, o.RootThreshold}, metadata.TARGETS: {o.TargetsKeys, o.TargetsThreshold},
		metadata.SNAPSHOT: {1, 1}, metadata.TIMESTAMP: {1, 1}}
	for role, c := range counts {
		for i := 0; i < c[0]; i++ {
			k, err := r.GenerateKey(role)
			if err != nil {
				return err
			}
			if err := root.Signed.AddKey(k, role); err != nil {
				return err
			}
		}
		root.Signed.Roles[role].Threshold = c[1]
	}
	if err := os.MkdirAll(r.metaDir(), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(r.targetsDir(), 0o755); err != nil {
		return err
	}
	if err := r.writeRoot(root); err != nil {
		return err
	}
	targets := metadata.Targets(r.expires(metadata.TARGETS))
	return r.publish(root, targets, 1)
}

func (r *Repo) writeRoot(root *metadata.Metadata[metadata.RootType]) error {
	if err := r.sign(root, root, metadata.ROOT); err != nil {
		return err
	}
	b, err := root.ToBytes(true)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(r.metaDir(), fmt.Sprintf("%d.root.json", root.Signed.Version)), b); err != nil {
		return err
	}
	return writeFile(filepath.Join(r.metaDir(), "root.json"), b)
}

// load reads the current root and targets.
func (r *Repo) load() (*metadata.Metadata[metadata.RootType], *metadata.Metadata[metadata.TargetsType], error) {
	root, err := metadata.Root().FromFile(filepath.Join(r.metaDir(), "root.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("release: read root: %w", err)
	}
	ts, err := metadata.Timestamp().FromFile(filepath.Join(r.metaDir(), "timestamp.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("release: read timestamp: %w", err)
	}
	sv := ts.Signed.Meta["snapshot.json"].Version
	snap, err := metadata.Snapshot().FromFile(filepath.Join(r.metaDir(), fmt.Sprintf("%d.snapshot.json", sv)))
	if err != nil {
		return nil, nil, fmt.Errorf("release: read snapshot: %w", err)
	}
	tv := snap.Signed.Meta["targets.json"].Version
	targets, err := metadata.Targets().FromFile(filepath.Join(r.metaDir(), fmt.Sprintf("%d.targets.json", tv)))
	if err != nil {
		return nil, nil, fmt.Errorf("release: read targets: %w", err)
	}
	return root, targets, nil
}

// publish signs targets (at version tv) and writes a new snapshot and timestamp pointing at it.
func (r *Repo) publish(root *metadata.Metadata[metadata.RootType], targets *metadata.Metadata[metadata.TargetsType], tv int64) error {
	targets.Signed.Version = tv
	targets.Signed.Expires = r.expires(metadata.TARGETS)
	if err := r.sign(targets, root, metadata.TARGETS); err != nil {
		return err
	}
	tb, err := targets.ToBytes(true)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(r.metaDir(), fmt.Sprintf("%d.targets.json", tv)), tb); err != nil {
		return err
	}
	sv := int64(1)
	if old, err := metadata.Snapshot().FromFile(filepath.Join(r.metaDir(), "snapshot.json")); err == nil {
		sv = old.Signed.Version + 1
	}
	snap := metadata.Snapshot(r.expires(metadata.SNAPSHOT))
	snap.Signed.Version = sv
	snap.Signed.Meta["targets.json"] = metadata.MetaFile(tv)
	if err := r.sign(snap, root, metadata.SNAPSHOT); err != nil {
		return err
	}
	sb, err := snap.ToBytes(true)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(r.metaDir(), fmt.Sprintf("%d.snapshot.json", sv)), sb); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(r.metaDir(), "snapshot.json"), sb); err != nil {
		return err
	}
	return r.timestamp(root, sv, sb)
}

func (r *Repo) timestamp(root *metadata.Metadata[metadata.RootType], sv int64, snapBytes []byte) error {
	tsv := int64(1)
	if old, err := metadata.Timestamp().FromFile(filepath.Join(r.metaDir(), "timestamp.json")); err == nil {
		tsv = old.Signed.Version + 1
	}
	ts := metadata.Timestamp(r.expires(metadata.TIMESTAMP))
	ts.Signed.Version = tsv
	mf := metadata.MetaFile(sv)
	sum := sha256.Sum256(snapBytes)
	mf.Length = int64(len(snapBytes))
	mf.Hashes = metadata.Hashes{"sha256": sum[:]}
	ts.Signed.Meta["snapshot.json"] = mf
	if err := r.sign(ts, root, metadata.TIMESTAMP); err != nil {
		return err
	}
	b, err := ts.ToBytes(true)
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(r.metaDir(), "timestamp.json"), b)
}

// AddBundle copies a RAUC bundle into the repository as the target for t.Board and t.Version and publishes
// new targets, snapshot and timestamp metadata.
func (r *Repo) AddBundle(bundle string, t Target) (string, error) {
	v, err := ParseVersion(t.Version)
	if err != nil {
		return "", err
	}
	if !ValidName(t.Board) || !ValidName(t.Compatible) {
		return "", fmt.Errorf("release: bad board or compatible name")
	}
	root, targets, err := r.load()
	if err != nil {
		return "", err
	}
	in, err := os.Open(bundle)
	if err != nil {
		return "", fmt.Errorf("release: %w", err)
	}
	defer in.Close()
	tp := TargetPath(t.Board, v)
	dir := filepath.Join(r.targetsDir(), t.Board)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".add-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), in)
	if err != nil {
		tmp.Close()
		return "", fmt.Errorf("release: copy bundle: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	sum := h.Sum(nil)
	if err := os.Rename(tmp.Name(), filepath.Join(dir, hex.EncodeToString(sum)+"."+filepath.Base(tp))); err != nil {
		return "", err
	}
	custom, err := json.Marshal(Target{Board: t.Board, Compatible: t.Compatible, Version: v.String()})
	if err != nil {
		return "", err
	}
	raw := json.RawMessage(custom)
	targets.Signed.Targets[tp] = &metadata.TargetFiles{Length: n, Hashes: metadata.Hashes{"sha256": sum}, Custom: &raw, Path: tp}
	return tp, r.publish(root, targets, targets.Signed.Version+1)
}

// Refresh re-signs the timestamp with a new expiry: the fleet server's heartbeat, run daily, so that an
// appliance cut off from it notices (freeze attack).
func (r *Repo) Refresh() error {
	root, _, err := r.load()
	if err != nil {
		return err
	}
	sb, err := os.ReadFile(filepath.Join(r.metaDir(), "snapshot.json"))
	if err != nil {
		return err
	}
	snap, err := metadata.Snapshot().FromBytes(sb)
	if err != nil {
		return err
	}
	return r.timestamp(root, snap.Signed.Version, sb)
}

// RotateKey replaces every key of role with a fresh one: a new root version lists the new key, signed by
// the threshold of the old root keys and (for a root rotation) the new ones too, as clients require; then
// targets, snapshot and timestamp are re-signed. The old key files are moved to KEYS/retired/.
func (r *Repo) RotateKey(role string) error {
	root, targets, err := r.load()
	if err != nil {
		return err
	}
	rr := root.Signed.Roles[role]
	if rr == nil {
		return fmt.Errorf("release: no role %q", role)
	}
	oldRootIDs := append([]string(nil), root.Signed.Roles[metadata.ROOT].KeyIDs...)
	oldIDs := append([]string(nil), rr.KeyIDs...)
	for _, id := range oldIDs {
		if err := root.Signed.RevokeKey(id, role); err != nil {
			return err
		}
	}
	for range oldIDs {
		k, err := r.GenerateKey(role)
		if err != nil {
			return err
		}
		if err := root.Signed.AddKey(k, role); err != nil {
			return err
		}
	}
	root.Signed.Version++
	root.Signed.Expires = r.expires(metadata.ROOT)
	// Signed by the new root keys and by the old ones: the client checks the new root against both.
	if err := r.sign(root, root, metadata.ROOT, oldRootIDs...); err != nil {
		return err
	}
	b, err := root.ToBytes(true)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(r.metaDir(), fmt.Sprintf("%d.root.json", root.Signed.Version)), b); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(r.metaDir(), "root.json"), b); err != nil {
		return err
	}
	if err := r.publish(root, targets, targets.Signed.Version+1); err != nil {
		return err
	}
	return r.retire(oldIDs)
}

func (r *Repo) retire(ids []string) error {
	for _, dir := range r.KeyDirs {
		for _, id := range ids {
			files, _ := filepath.Glob(filepath.Join(dir, "*-"+id[:16]+".pem"))
			for _, f := range files {
				if err := os.MkdirAll(filepath.Join(dir, "retired"), 0o700); err != nil {
					return err
				}
				if err := os.Rename(f, filepath.Join(dir, "retired", filepath.Base(f))); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func isRoleKeyFile(name string) bool {
	for _, r := range metadata.TOP_LEVEL_ROLE_NAMES {
		if strings.HasPrefix(name, r+"-") {
			return true
		}
	}
	return false
}

// writeFile writes atomically: temp file, fsync, rename.
func writeFile(name string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+strings.TrimSuffix(filepath.Base(name), ".json")+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
