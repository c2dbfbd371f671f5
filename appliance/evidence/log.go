package evidence

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// LogStore is what the log needs of the index: leaves, the tree's stored hashes, signed checkpoints and
// small metadata, each write one durable transaction. *store.DB implements it.
type LogStore interface {
	// LogSize returns the number of leaves.
	LogSize() (uint64, error)
	// AppendLog appends leaf at index, which must equal the current size (else it fails and writes
	// nothing), storing hashes from hash index firstHash on and the meta pairs, and, when segment is not
	// zero, recording index as that segment's log position: all in one transaction.
	AppendLog(index uint64, leaf []byte, firstHash int64, hashes [][32]byte, segment [16]byte, meta map[string][]byte) error
	// LogLeaf returns the leaf at index.
	LogLeaf(index uint64) ([]byte, error)
	// LogHashes returns the stored hashes at the given indexes.
	LogHashes(indexes []int64) ([][32]byte, error)
	// PutCheckpoint stores the signed checkpoint of a tree of size leaves, replacing one of equal size.
	PutCheckpoint(size uint64, signed []byte) error
	// LatestCheckpoint returns the checkpoint of the largest tree, or 0 and nil.
	LatestCheckpoint() (uint64, []byte, error)
	// CheckpointAtLeast returns the checkpoint of the smallest tree of at least size leaves.
	CheckpointAtLeast(size uint64) (uint64, []byte, error)
	// Checkpoints calls fn for every checkpoint by increasing size.
	Checkpoints(fn func(size uint64, signed []byte) error) error
	// EvidenceMeta returns a metadata value, or nil.
	EvidenceMeta(key string) ([]byte, error)
}

// ErrFork is returned when the stored tree does not extend a checkpoint the log key signed: the index
// was rolled back or edited. The log refuses to run on it.
var ErrFork = errors.New("evidence log does not extend its signed checkpoints")

// Config configures a [Log].
type Config struct {
	Store LogStore
	// Key is the log signing key (ECDSA P-256), the TPM's log key in the appliance.
	Key crypto.Signer
	// Appliance is the appliance id; with the two key fingerprints it makes the genesis leaf.
	Appliance            string
	LogKeyFingerprint    [32]byte
	ExportKeyFingerprint [32]byte
	// Interval between checkpoints. Default 5 s.
	Interval time.Duration
	// Clock gives checkpoint and genesis times. Nil means time.Now.
	Clock func() time.Time
}

// Segment is a closed segment to log.
type Segment struct {
	ID        [16]byte
	Camera    string
	Start     time.Time
	End       time.Time
	Chunks    uint64
	Init      [32]byte
	Chain     [32]byte
	Recovered bool
}

// Log is the appliance's append-only evidence log. Appends are safe for concurrent use and never wait on
// the signing key; checkpoints are signed by Run.
type Log struct {
	cfg    Config
	log    *slog.Logger
	origin string

	mu   sync.Mutex // orders appends
	size atomic.Uint64

	signs atomic.Uint64
}

// New opens the log in cfg.Store: on an empty store it appends the genesis leaf; otherwise it checks that
// the stored tree extends the latest signed checkpoint (ErrFork if not).
func New(cfg Config, log *slog.Logger) (*Log, error) {
	if cfg.Store == nil || cfg.Key == nil || cfg.Appliance == "" {
		return nil, errors.New("evidence log: store, key and appliance id are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Log{cfg: cfg, log: log, origin: Origin(cfg.Appliance)}
	n, err := cfg.Store.LogSize()
	if err != nil {
		return nil, fmt.Errorf("evidence log: %w", err)
	}
	l.size.Store(n)
	if n == 0 {
		g := GenesisLeaf{Appliance: cfg.Appliance, LogKey: cfg.LogKeyFingerprint, ExportKey: cfg.ExportKeyFingerprint, Created: cfg.Clock()}
		if err := l.append(g.Marshal(), [16]byte{}, nil); err != nil {
			return nil, fmt.Errorf("evidence log: genesis: %w", err)
		}
		log.Info("evidence log created", "origin", l.origin)
		return l, nil
	}
	leaf, err := cfg.Store.LogLeaf(0)
	if err != nil {
		return nil, fmt.Errorf("evidence log: genesis: %w", err)
	}
	g, err := ParseGenesisLeaf(leaf)
	if err != nil {
		return nil, fmt.Errorf("evidence log: genesis: %w", err)
	}
	if g.Appliance != cfg.Appliance || g.LogKey != cfg.LogKeyFingerprint {
		return nil, fmt.Errorf("evidence log: %w: the log was begun by appliance %s with another log key", ErrFork, g.Appliance)
	}
	if err := l.checkLatest(); err != nil {
		return nil, err
	}
	return l, nil
}

// checkLatest verifies the latest stored checkpoint's signature and that the tree extends it.
func (l *Log) checkLatest() error {
	size, signed, err := l.cfg.Store.LatestCheckpoint()
	if err != nil || signed == nil {
		return err
	}
	return l.checkCheckpoint(size, signed)
}

func (l *Log) checkCheckpoint(size uint64, signed []byte) error {
	pub, err := ecdsaPub(l.cfg.Key)
	if err != nil {
		return err
	}
	c, err := OpenCheckpoint(signed, pub)
	if err != nil {
		return fmt.Errorf("evidence log: %w: checkpoint of size %d: %v", ErrFork, size, err)
	}
	if c.Size != size || c.Origin != l.origin {
		return fmt.Errorf("evidence log: %w: checkpoint stored under size %d says %s size %d", ErrFork, size, c.Origin, c.Size)
	}
	if c.Size > l.size.Load() {
		return fmt.Errorf("evidence log: %w: checkpoint of %d leaves, the log has %d", ErrFork, c.Size, l.size.Load())
	}
	root, err := tlog.TreeHash(int64(c.Size), l.hashReader())
	if err != nil {
		return fmt.Errorf("evidence log: tree hash at %d: %w", c.Size, err)
	}
	if [32]byte(root) != c.Root {
		return fmt.Errorf("evidence log: %w: the tree of %d leaves has root %x, the signed checkpoint %x", ErrFork, c.Size, root[:], c.Root[:])
	}
	return nil
}

// VerifyCheckpoints checks every stored checkpoint: signed by the log key, and a prefix of the current
// tree, so that consistency proofs hold between every pair. It returns how many it checked.
func (l *Log) VerifyCheckpoints() (int, error) {
	n := 0
	err := l.cfg.Store.Checkpoints(func(size uint64, signed []byte) error {
		n++
		return l.checkCheckpoint(size, signed)
	})
	return n, err
}

func ecdsaPub(k crypto.Signer) (*ecdsa.PublicKey, error) {
	pub, ok := k.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("evidence log: the log key is not ECDSA")
	}
	return pub, nil
}

func (l *Log) hashReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		hs, err := l.cfg.Store.LogHashes(idx)
		if err != nil {
			return nil, err
		}
		out := make([]tlog.Hash, len(hs))
		for i, h := range hs {
			out[i] = tlog.Hash(h)
		}
		return out, nil
	})
}

// append adds a leaf at the end. l.mu must be held, except from New.
func (l *Log) append(leaf []byte, segment [16]byte, meta map[string][]byte) error {
	n := l.size.Load()
	hs, err := tlog.StoredHashes(int64(n), leaf, l.hashReader())
	if err != nil {
		return fmt.Errorf("hashes for leaf %d: %w", n, err)
	}
	raw := make([][32]byte, len(hs))
	for i, h := range hs {
		raw[i] = h
	}
	if err := l.cfg.Store.AppendLog(n, leaf, tlog.StoredHashIndex(0, int64(n)), raw, segment, meta); err != nil {
		return err
	}
	l.size.Store(n + 1)
	return nil
}

// cameraHead is what the log remembers per camera: the last logged segment's sequence number, leaf hash
// and start.
type cameraHead struct {
	seq   uint64
	leaf  [32]byte
	start time.Time
}

func headKey(camera string) string { return "cam/" + camera }

func (h cameraHead) bytes() []byte {
	b := binary.BigEndian.AppendUint64(nil, h.seq)
	b = append(b, h.leaf[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(h.start.UnixNano()))
}

func (l *Log) head(camera string) (cameraHead, error) {
	v, err := l.cfg.Store.EvidenceMeta(headKey(camera))
	if err != nil || v == nil {
		return cameraHead{}, err
	}
	if len(v) != 48 {
		return cameraHead{}, fmt.Errorf("evidence log: head of camera %s is %d bytes", camera, len(v))
	}
	return cameraHead{seq: binary.BigEndian.Uint64(v), leaf: [32]byte(v[8:40]), start: time.Unix(0, int64(binary.BigEndian.Uint64(v[40:]))).UTC()}, nil
}

// LastLogged returns the start of the camera's last logged segment, and false when none is logged.
func (l *Log) LastLogged(camera string) (time.Time, bool, error) {
	h, err := l.head(camera)
	if err != nil {
		return time.Time{}, false, err
	}
	return h.start, h.seq > 0, nil
}

// Append logs a closed segment and returns its leaf index. It is durable when it returns. It costs one
// index transaction and no signature.
func (l *Log) Append(s Segment) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, err := l.head(s.Camera)
	if err != nil {
		return 0, err
	}
	leaf := SegmentLeaf{
		Appliance: l.cfg.Appliance, Camera: s.Camera, Seq: h.seq + 1, Prev: h.leaf, Segment: s.ID,
		Start: s.Start.UTC(), End: s.End.UTC(), Chunks: s.Chunks, Init: s.Init, Chain: s.Chain, Recovered: s.Recovered,
	}
	b := leaf.Marshal()
	idx := l.size.Load()
	next := cameraHead{seq: leaf.Seq, leaf: LeafHash(b), start: leaf.Start}
	if err := l.append(b, s.ID, map[string][]byte{headKey(s.Camera): next.bytes()}); err != nil {
		return 0, fmt.Errorf("evidence log: append segment %x of %s: %w", s.ID, s.Camera, err)
	}
	return idx, nil
}

// Size returns the number of leaves.
func (l *Log) Size() uint64 { return l.size.Load() }

// Signatures returns how many checkpoints this Log has signed.
func (l *Log) Signatures() uint64 { return l.signs.Load() }

// Origin returns the log's origin line.
func (l *Log) Origin() string { return l.origin }

// Checkpoint signs a checkpoint of the current tree, stores it and returns it. The signature is made
// without holding the append lock.
func (l *Log) Checkpoint() (Checkpoint, []byte, error) {
	l.mu.Lock()
	n := l.size.Load()
	root, err := tlog.TreeHash(int64(n), l.hashReader())
	l.mu.Unlock()
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("evidence log: tree hash: %w", err)
	}
	c := Checkpoint{Origin: l.origin, Size: n, Root: root, Time: l.cfg.Clock().UTC()}
	signed, err := SignCheckpoint(c, l.cfg.Key)
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("evidence log: %w", err)
	}
	l.signs.Add(1)
	if err := l.cfg.Store.PutCheckpoint(n, signed); err != nil {
		return Checkpoint{}, nil, fmt.Errorf("evidence log: %w", err)
	}
	return c, signed, nil
}

// Run signs a checkpoint every interval, one signature for every camera, until ctx ends; then it signs a
// last one, so that a clean stop leaves every logged segment under a checkpoint. A failed signature is
// logged and retried at the next tick.
func (l *Log) Run(ctx context.Context) error {
	t := time.NewTicker(l.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if _, _, err := l.Checkpoint(); err != nil {
				return fmt.Errorf("final checkpoint: %w", err)
			}
			return nil
		case <-t.C:
			if _, _, err := l.Checkpoint(); err != nil {
				l.log.Error("signing a checkpoint failed; retrying at the next tick", "err", err)
			}
		}
	}
}

// InclusionProof proves leaf index in the tree of size leaves.
func (l *Log) InclusionProof(index, size uint64) ([][32]byte, error) {
	p, err := tlog.ProveRecord(int64(size), int64(index), l.hashReader())
	if err != nil {
		return nil, fmt.Errorf("evidence log: prove leaf %d in %d: %w", index, size, err)
	}
	out := make([][32]byte, len(p))
	for i, h := range p {
		out[i] = h
	}
	return out, nil
}

// ConsistencyProof proves that the tree of size old is a prefix of the tree of size size.
func (l *Log) ConsistencyProof(old, size uint64) ([][32]byte, error) {
	p, err := tlog.ProveTree(int64(size), int64(old), l.hashReader())
	if err != nil {
		return nil, fmt.Errorf("evidence log: prove %d consistent with %d: %w", old, size, err)
	}
	out := make([][32]byte, len(p))
	for i, h := range p {
		out[i] = h
	}
	return out, nil
}

// Leaf returns the leaf at index.
func (l *Log) Leaf(index uint64) ([]byte, error) { return l.cfg.Store.LogLeaf(index) }

// CheckpointCovering returns the latest stored checkpoint if it covers leaf index, and otherwise signs a
// new one.
func (l *Log) CheckpointCovering(index uint64) (Checkpoint, []byte, error) {
	size, signed, err := l.cfg.Store.LatestCheckpoint()
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if signed != nil && size > index {
		pub, err := ecdsaPub(l.cfg.Key)
		if err != nil {
			return Checkpoint{}, nil, err
		}
		c, err := OpenCheckpoint(signed, pub)
		if err != nil {
			return Checkpoint{}, nil, err
		}
		return c, signed, nil
	}
	return l.Checkpoint()
}

// CheckCheckpoints checks a stored log offline against a device identity: the genesis leaf names the
// identity's keys, and every stored checkpoint is signed by its log key and is a prefix of the stored
// tree (so a consistency proof holds between every pair). It returns the number of checkpoints and the
// log's size. It needs no TPM: the log key's public half comes from the device certificate.
func CheckCheckpoints(st LogStore, id *Identity) (int, uint64, error) {
	return checkCheckpoints(st, id, nil)
}

// checkCheckpoints is CheckCheckpoints calling visit, if not nil, with each checkpoint once it is checked,
// by increasing size.
func checkCheckpoints(st LogStore, id *Identity, visit func(Checkpoint)) (int, uint64, error) {
	size, err := st.LogSize()
	if err != nil {
		return 0, 0, err
	}
	if size == 0 {
		return 0, 0, nil
	}
	leaf, err := st.LogLeaf(0)
	if err != nil {
		return 0, size, err
	}
	g, err := ParseGenesisLeaf(leaf)
	if err != nil {
		return 0, size, fmt.Errorf("genesis: %w", err)
	}
	lfp, _ := KeyFingerprint(id.LogKey)
	if g.Appliance != id.Appliance || g.LogKey != lfp {
		return 0, size, fmt.Errorf("%w: the log was begun by %s with another log key", ErrFork, g.Appliance)
	}
	l := &Log{cfg: Config{Store: st}, origin: Origin(id.Appliance)}
	l.size.Store(size)
	n := 0
	var prev Checkpoint
	err = st.Checkpoints(func(cs uint64, signed []byte) error {
		n++
		c, err := OpenCheckpoint(signed, id.LogKey)
		if err != nil {
			return fmt.Errorf("%w: checkpoint of size %d: %v", ErrFork, cs, err)
		}
		if c.Size != cs || c.Origin != l.origin || c.Size > size {
			return fmt.Errorf("%w: checkpoint stored under size %d says %s size %d", ErrFork, cs, c.Origin, c.Size)
		}
		root, err := tlog.TreeHash(int64(c.Size), l.hashReader())
		if err != nil {
			return err
		}
		if [32]byte(root) != c.Root {
			return fmt.Errorf("%w: the tree of %d leaves does not have the root signed at %s", ErrFork, c.Size, c.Time.Format(time.RFC3339))
		}
		if n > 1 {
			p, err := tlog.ProveTree(int64(c.Size), int64(prev.Size), l.hashReader())
			if err == nil {
				err = tlog.CheckTree(p, int64(c.Size), tlog.Hash(c.Root), int64(prev.Size), tlog.Hash(prev.Root))
			}
			if err != nil {
				return fmt.Errorf("%w: checkpoint %d not consistent with %d: %v", ErrFork, c.Size, prev.Size, err)
			}
		}
		prev = c
		if visit != nil {
			visit(c)
		}
		return nil
	})
	return n, size, err
}
