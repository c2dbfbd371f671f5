package evidence

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// metaAudit is the metadata key of the last audit anchor: its leaf index, big-endian.
const metaAudit = "audit"

// AppendAudit anchors the audit log's state in the evidence log: size entries, the last of which hashes to
// head, at time t. It appends one [AuditLeaf] and returns its index. Like a segment, it is durable when it
// returns and costs one index transaction and no signature: the log's next periodic checkpoint covers it.
func (l *Log) AppendAudit(size uint64, head [32]byte, t time.Time) (uint64, error) {
	if size == 0 {
		return 0, errors.New("evidence log: an audit anchor of no entries")
	}
	if t.IsZero() {
		t = l.cfg.Clock()
	}
	leaf := AuditLeaf{Appliance: l.cfg.Appliance, Size: size, Head: head, Time: t.UTC()}
	l.mu.Lock()
	defer l.mu.Unlock()
	idx := l.size.Load()
	if err := l.append(leaf.Marshal(), [16]byte{}, map[string][]byte{metaAudit: binary.BigEndian.AppendUint64(nil, idx)}); err != nil {
		return 0, fmt.Errorf("evidence log: append audit anchor of %d entries: %w", size, err)
	}
	return idx, nil
}

// LastAudit returns the last audit anchor and its leaf index; ok is false when the log holds none. The
// appliance compares it with the audit log at start: an audit log shorter than its last anchor, or with
// another entry at that place, was truncated or replaced.
func (l *Log) LastAudit() (leaf AuditLeaf, index uint64, ok bool, err error) {
	v, err := l.cfg.Store.EvidenceMeta(metaAudit)
	if err != nil || v == nil {
		return AuditLeaf{}, 0, false, err
	}
	if len(v) != 8 {
		return AuditLeaf{}, 0, false, fmt.Errorf("evidence log: last audit anchor is %d bytes", len(v))
	}
	index = binary.BigEndian.Uint64(v)
	b, err := l.cfg.Store.LogLeaf(index)
	if err != nil {
		return AuditLeaf{}, 0, false, fmt.Errorf("evidence log: last audit anchor: %w", err)
	}
	if leaf, err = ParseAuditLeaf(b); err != nil {
		return AuditLeaf{}, 0, false, fmt.Errorf("evidence log: last audit anchor at %d: %w", index, err)
	}
	return leaf, index, true, nil
}

// AuditAnchor is an audit leaf found in the log.
type AuditAnchor struct {
	AuditLeaf
	Index uint64 // its leaf index
	// SignedBy is the earliest signed checkpoint that covers the leaf; its Size is zero when no signed
	// checkpoint covers it yet (the appliance stopped within one checkpoint interval of anchoring, or was
	// killed), and then the leaf is only as trustworthy as the index that holds it.
	SignedBy Checkpoint
}

// Signed reports whether a checkpoint signed by the log key covers the anchor.
func (a AuditAnchor) Signed() bool { return a.SignedBy.Size > a.Index }

// AuditAnchors is what [ReadAuditAnchors] found.
type AuditAnchors struct {
	Anchors     []AuditAnchor // in log order
	LogSize     uint64        // leaves in the log
	Checkpoints int           // signed checkpoints checked
	Latest      Checkpoint    // the latest signed checkpoint; zero Size when there is none
}

// ReadAuditAnchors reads every audit anchor of a stored log and proves the signed ones, offline, with the
// device identity alone (no TPM). It checks the log as [CheckCheckpoints] does (the genesis leaf names the
// identity's keys; every checkpoint is signed by its log key and consistent with the others), and reads
// every leaf, recomputes the RFC 6962 root of the first Latest.Size leaves from their bytes and compares it
// with the latest signed root: so every anchor it returns as signed is included, byte for byte, under a
// checkpoint the log key signed, and no signed anchor can have been removed, added or edited in the index.
// Leaves past the latest checkpoint are returned unsigned. An error wrapping [ErrFork] means the index does
// not hold what the log key signed; one wrapping [ErrFormat] an unreadable signed leaf.
//
// It reads the whole log once (one SHA-256 per leaf and per node) and verifies each stored checkpoint's
// signature once, as `nvr log-check` does.
func ReadAuditAnchors(st LogStore, id *Identity) (AuditAnchors, error) {
	var out AuditAnchors
	size, err := st.LogSize()
	if err != nil {
		return out, err
	}
	out.LogSize = size
	csize, signed, err := st.LatestCheckpoint()
	if err != nil {
		return out, err
	}
	if signed != nil {
		if out.Latest, err = OpenCheckpoint(signed, id.LogKey); err != nil || out.Latest.Size != csize || out.Latest.Size > size {
			return out, fmt.Errorf("%w: latest checkpoint of size %d: %v", ErrFork, csize, err)
		}
	}
	var root compactRoot
	for i := range size {
		b, err := st.LogLeaf(i)
		if err != nil {
			return out, fmt.Errorf("leaf %d: %w", i, err)
		}
		if i < out.Latest.Size {
			root.add(LeafHash(b))
		}
		if !IsAuditLeaf(b) {
			continue
		}
		a, err := ParseAuditLeaf(b)
		if err == nil && a.Appliance != id.Appliance {
			err = fmt.Errorf("%w: audit leaf of appliance %.40q", ErrFormat, a.Appliance)
		}
		if err != nil {
			if i < out.Latest.Size {
				return out, fmt.Errorf("signed leaf %d: %w", i, err)
			}
			continue // an unsigned leaf proves nothing either way
		}
		out.Anchors = append(out.Anchors, AuditAnchor{AuditLeaf: a, Index: i})
	}
	if out.Latest.Size > 0 && root.sum() != out.Latest.Root {
		return out, fmt.Errorf("%w: the index's first %d leaves do not hash to the root the log key signed at %s: a leaf was edited",
			ErrFork, out.Latest.Size, out.Latest.Time.Format(time.RFC3339))
	}
	// Every checkpoint signed by the log key and consistent with the others (so with the latest, whose root
	// the leaves were just checked against); the earliest covering each anchor says when it was signed.
	next := 0
	out.Checkpoints, _, err = checkCheckpoints(st, id, func(c Checkpoint) {
		for ; next < len(out.Anchors) && out.Anchors[next].Index < c.Size; next++ {
			out.Anchors[next].SignedBy = c
		}
	})
	if err != nil {
		return out, err
	}
	return out, nil
}

// compactRoot computes an RFC 6962 Merkle tree hash over leaf hashes given in order, keeping one hash per
// complete subtree (at most 64).
type compactRoot struct {
	n      uint64
	hashes [][32]byte // complete subtrees, largest first
}

func (c *compactRoot) add(h [32]byte) {
	c.hashes = append(c.hashes, h)
	for m := c.n; m&1 == 1; m >>= 1 {
		k := len(c.hashes)
		c.hashes = append(c.hashes[:k-2], [32]byte(tlog.NodeHash(c.hashes[k-2], c.hashes[k-1])))
	}
	c.n++
}

func (c *compactRoot) sum() [32]byte {
	if len(c.hashes) == 0 {
		return sha256.Sum256(nil)
	}
	h := c.hashes[len(c.hashes)-1]
	for i := len(c.hashes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(c.hashes[i], h)
	}
	return h
}
