package authz

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
)

// Entry is one line of the audit log.
type Entry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // "decision", "event" or "checkpoint"
	Subject string    `json:"subject,omitempty"`
	Action  string    `json:"action,omitempty"`
	Object  string    `json:"object,omitempty"`
	Result  string    `json:"result,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Source  string    `json:"source,omitempty"`
	// Checkpoint is set on checkpoint entries.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// Prev is the hash of the previous line's entry (hex), empty for the first.
	Prev string `json:"prev"`
}

// Checkpoint commits to the first Size entries of the log, the last of which hashes to Head.
type Checkpoint struct {
	Size uint64    `json:"size"`
	Head string    `json:"head"`
	Time time.Time `json:"time"`
	// Key is the signer's public key (PKIX DER, base64); verifiers pin it rather than trust it.
	Key string `json:"key"`
	Sig string `json:"sig"` // base64
}

// line is the stored form: the entry's exact bytes and their SHA-256.
type line struct {
	E json.RawMessage `json:"e"`
	H string          `json:"h"`
}

// Anchor commits the log's state somewhere an attacker who can edit the log file cannot reach. The
// default, [SignerAnchor], signs a checkpoint written into the log itself; the evidence log can later
// implement Anchor by appending the head to its Merkle tree.
type Anchor interface {
	// Anchor commits to size entries ending in head at time t. A returned checkpoint is written into the
	// audit log; nil means the state was anchored elsewhere.
	Anchor(size uint64, head string, t time.Time) (*Checkpoint, error)
}

// SignerAnchor signs checkpoints with a key, normally held by the TPM.
type SignerAnchor struct{ Signer crypto.Signer }

// CheckpointMessage is the byte string a checkpoint's signature covers.
func CheckpointMessage(size uint64, head string, t time.Time) []byte {
	return []byte("edgenvr audit checkpoint v1\n" + strconv.FormatUint(size, 10) + "\n" + head + "\n" + t.UTC().Format(time.RFC3339Nano) + "\n")
}

// Anchor signs the checkpoint message's SHA-256.
func (a SignerAnchor) Anchor(size uint64, head string, t time.Time) (*Checkpoint, error) {
	der, err := x509.MarshalPKIXPublicKey(a.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	d := sha256.Sum256(CheckpointMessage(size, head, t))
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := a.Signer.Public().(ed25519.PublicKey); ok {
		return nil, errors.New("checkpoint key: ed25519 is not supported")
	}
	if _, ok := a.Signer.Public().(*rsa.PublicKey); ok {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	}
	sig, err := a.Signer.Sign(rand.Reader, d[:], opts)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return &Checkpoint{Size: size, Head: head, Time: t.UTC(), Key: base64.StdEncoding.EncodeToString(der), Sig: base64.StdEncoding.EncodeToString(sig)}, nil
}

// maxLine bounds one audit line.
const maxLine = 64 << 10

type auditLog struct {
	path    string
	anchor  Anchor
	now     func() time.Time
	log     *slog.Logger
	forward func(Entry)
	every   int // entries between checkpoints

	mu      sync.Mutex
	f       *os.File
	seq     uint64 // entries written
	head    string
	sinceCP int
	dirty   bool
}

func openAuditLog(path string, anchor Anchor, now func() time.Time, log *slog.Logger) (*auditLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	a := &auditLog{path: path, anchor: anchor, now: now, log: log, f: f}
	// Recover the head; a torn last line (a crash mid-write) is cut off.
	var good int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxLine+1)
	for sc.Scan() {
		b := sc.Bytes()
		var l line
		var e Entry
		if json.Unmarshal(b, &l) != nil || json.Unmarshal(l.E, &e) != nil {
			break
		}
		a.seq, a.head = e.Seq, l.H
		if e.Kind == "checkpoint" {
			a.sinceCP = 0
		} else {
			a.sinceCP++
		}
		good += int64(len(b)) + 1
	}
	st, err := f.Stat()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("stat audit log: %w", err), f.Close())
	}
	if st.Size() != good {
		log.Warn("audit log: cutting a torn last line", "bytes", st.Size()-good)
		if err := f.Truncate(good); err != nil {
			return nil, errors.Join(fmt.Errorf("truncate audit log: %w", err), f.Close())
		}
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return nil, errors.Join(fmt.Errorf("seek audit log: %w", err), f.Close())
	}
	return a, nil
}

func (a *auditLog) append(e Entry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = a.now().UTC()
	}
	if err := a.appendLocked(e); err != nil {
		return err
	}
	if a.every > 0 && a.sinceCP >= a.every {
		return a.checkpointLocked()
	}
	return nil
}

func (a *auditLog) appendLocked(e Entry) error {
	if a.f == nil {
		return errors.New("audit log closed")
	}
	e.Seq = a.seq + 1
	e.Prev = a.head
	raw, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit entry: %w", err)
	}
	sum := sha256.Sum256(raw)
	h := hex.EncodeToString(sum[:])
	b, err := json.Marshal(line{E: raw, H: h})
	if err != nil {
		return fmt.Errorf("encode audit line: %w", err)
	}
	b = append(b, '\n')
	if _, err := a.f.Write(b); err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	a.seq, a.head, a.dirty = e.Seq, h, true
	if e.Kind == "checkpoint" {
		a.sinceCP = 0
	} else {
		a.sinceCP++
	}
	if a.forward != nil {
		a.forward(e)
	}
	return nil
}

func (a *auditLog) checkpoint() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sinceCP == 0 || a.f == nil {
		return a.syncLocked()
	}
	return a.checkpointLocked()
}

func (a *auditLog) checkpointLocked() error {
	// What is anchored must be on disk first: a crash right after anchoring must not lose anchored entries
	// (the next start would cut them as a torn tail, and the anchor would then accuse an honest log).
	if err := a.syncLocked(); err != nil {
		return err
	}
	t := a.now().UTC()
	cp, err := a.anchor.Anchor(a.seq, a.head, t)
	if err != nil {
		return fmt.Errorf("audit checkpoint: %w", err)
	}
	if cp != nil {
		if err := a.appendLocked(Entry{Kind: "checkpoint", Time: t, Checkpoint: cp}); err != nil {
			return err
		}
	} else {
		a.sinceCP = 0
	}
	return a.syncLocked()
}

func (a *auditLog) sinceCheckpoint() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sinceCP
}

func (a *auditLog) sync() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.syncLocked()
}

func (a *auditLog) syncLocked() error {
	if !a.dirty || a.f == nil {
		return nil
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("sync audit log: %w", err)
	}
	a.dirty = false
	return nil
}

func (a *auditLog) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.syncLocked()
	cerr := a.f.Close()
	a.f = nil
	return errors.Join(err, cerr)
}

// VerifyReport is what [VerifyLog] and [VerifyLogWith] found.
type VerifyReport struct {
	Entries     uint64 // lines read
	Checkpoints int
	// Anchored is the size of the last valid checkpoint written into the log itself; entries after it are
	// covered by the chain only, unless an external anchor covers them.
	Anchored uint64
	// KeyPinned is false when no key was given and the checkpoints' own key was taken.
	KeyPinned bool
	// ExternalAnchors is the number of external anchors (see [VerifyOptions.Anchors]) that match the file.
	ExternalAnchors int
	// SignedAnchored is the size named by the largest matching external anchor that is signed: entries 1 …
	// SignedAnchored cannot be edited, deleted, reordered or truncated without showing. UnsignedAnchored is
	// the same for anchors not (yet) under a signature.
	SignedAnchored, UnsignedAnchored uint64
	// LastSigned is the largest matching signed external anchor, when there is one.
	LastSigned *ExternalAnchor
	// BeyondEnd counts the external anchors naming more entries than the file holds when the file is
	// verified as a prefix (an earlier export); otherwise each of them is a problem: the file was truncated.
	BeyondEnd int
	// Problems lists every inconsistency found, in plain words; empty means the log holds.
	Problems []string
}

// OK reports whether no problem was found.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

// ExternalAnchor is a commitment to the audit log's state kept where whoever can edit the log file cannot
// reach, such as an audit leaf of the evidence log: the first Size entries, the last of which hashes to Head.
type ExternalAnchor struct {
	Size   uint64
	Head   string // hex SHA-256 of entry Size as stored, the chain head
	Time   time.Time
	Where  string // names the anchor in reports, such as "evidence log leaf 1234"
	Signed bool   // the caller verified a signature covering it
}

// VerifyOptions configures [VerifyLogWith].
type VerifyOptions struct {
	// Key pins the key of the checkpoints written into the log; nil takes the first checkpoint's (and the
	// report says so).
	Key crypto.PublicKey
	// Anchors are external anchors to check the file against, in any order: each must name an entry the
	// file has, with the same hash. Because an anchor is kept outside the file, an attacker who edits,
	// deletes, reorders or truncates entries and then recomputes the whole hash chain is still caught.
	Anchors []ExternalAnchor
	// Prefix says the file may legitimately end before the latest anchors (an export made earlier).
	Prefix bool
}

// VerifyLog reads an audit log (as written, or as exported) and checks that every entry hashes to its
// recorded hash, links to the previous one, carries the next sequence number, and that every checkpoint is
// signed by pub over the state it names. An edited, deleted, inserted or reordered entry breaks one of
// these. pub nil takes the key of the first checkpoint (and says so). The error is for an unreadable input;
// problems with the content are in the report.
func VerifyLog(r io.Reader, pub crypto.PublicKey) (VerifyReport, error) {
	return VerifyLogWith(r, VerifyOptions{Key: pub})
}

// VerifyLogWith is [VerifyLog] that also checks the file against external anchors (see [VerifyOptions]).
func VerifyLogWith(r io.Reader, o VerifyOptions) (VerifyReport, error) {
	pub := o.Key
	rep := VerifyReport{KeyPinned: pub != nil}
	var pinned []byte
	if pub != nil {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return rep, fmt.Errorf("public key: %w", err)
		}
		pinned = der
	}
	bySize := map[uint64][]int{}
	checked := make([]bool, len(o.Anchors))
	var lastMatch uint64 // the largest anchor that matched so far: a mismatch lies after it
	for i, a := range o.Anchors {
		bySize[a.Size] = append(bySize[a.Size], i)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var prevHash string
	var prevSeq uint64
	n := 0
	problem := func(format string, args ...any) {
		if len(rep.Problems) < 100 {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	for {
		b, err := readLine(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return rep, err
		}
		n++
		if len(bytes.TrimSpace(b)) == 0 {
			problem("line %d: empty", n)
			continue
		}
		rep.Entries++
		var l line
		if err := json.Unmarshal(b, &l); err != nil {
			problem("line %d: not an audit line", n)
			continue
		}
		sum := sha256.Sum256(l.E)
		h := hex.EncodeToString(sum[:])
		for _, i := range bySize[rep.Entries] {
			a := o.Anchors[i]
			checked[i] = true
			if a.Head != h {
				span := fmt.Sprintf("entries %d–%d (to line %d) are", lastMatch+1, a.Size, n)
				if lastMatch+1 == a.Size {
					span = fmt.Sprintf("entry %d (line %d) is", a.Size, n)
				}
				problem("%s not what %s anchored at %s (entry %d hashed to %.16s…, now to %.16s…): edited, deleted, inserted, reordered or replaced",
					span, a.Where, a.Time.UTC().Format(time.RFC3339), a.Size, a.Head, h)
				continue
			}
			lastMatch = max(lastMatch, a.Size)
			rep.ExternalAnchors++
			if a.Signed && a.Size >= rep.SignedAnchored {
				rep.SignedAnchored, rep.LastSigned = a.Size, &a
			}
			if !a.Signed {
				rep.UnsignedAnchored = max(rep.UnsignedAnchored, a.Size)
			}
		}
		var e Entry
		if err := json.Unmarshal(l.E, &e); err != nil {
			problem("line %d: entry does not decode", n)
			continue
		}
		if h != l.H {
			problem("entry %d (line %d): content does not match its hash: edited", e.Seq, n)
		}
		if e.Seq != prevSeq+1 {
			problem("entry %d (line %d): expected sequence %d: an entry was deleted, inserted or reordered", e.Seq, n, prevSeq+1)
		}
		if e.Prev != prevHash {
			problem("entry %d (line %d): does not link to the previous entry: an entry was deleted, inserted, edited or reordered", e.Seq, n)
		}
		if e.Kind == "checkpoint" {
			rep.Checkpoints++
			if ok, why := checkCheckpoint(e, prevSeq, prevHash, &pinned); !ok {
				problem("checkpoint %d (line %d): %s", e.Seq, n, why)
			} else {
				rep.Anchored = e.Checkpoint.Size
			}
		}
		prevSeq, prevHash = e.Seq, l.H
	}
	for i, a := range o.Anchors {
		if a.Size <= rep.Entries {
			if !checked[i] {
				problem("%s anchored %d entries at %s; the file's entry %d is unreadable", a.Where, a.Size, a.Time.UTC().Format(time.RFC3339), a.Size)
			}
			continue
		}
		if o.Prefix {
			rep.BeyondEnd++
			continue
		}
		problem("%s anchored %d entries at %s; the file ends after entry %d: it was truncated (or replaced)",
			a.Where, a.Size, a.Time.UTC().Format(time.RFC3339), rep.Entries)
	}
	return rep, nil
}

func readLine(br *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		b, isPrefix, err := br.ReadLine()
		if err != nil {
			if err == io.EOF && len(out) > 0 {
				return out, nil
			}
			return nil, err
		}
		out = append(out, b...)
		if len(out) > maxLine {
			return nil, fmt.Errorf("audit line longer than %d bytes", maxLine)
		}
		if !isPrefix {
			return out, nil
		}
	}
}

func checkCheckpoint(e Entry, prevSeq uint64, prevHash string, pinned *[]byte) (bool, string) {
	cp := e.Checkpoint
	if cp == nil {
		return false, "no checkpoint body"
	}
	if cp.Size != prevSeq || cp.Head != prevHash {
		return false, "names a state the log does not have"
	}
	der, err := base64.StdEncoding.DecodeString(cp.Key)
	if err != nil {
		return false, "key does not decode"
	}
	if *pinned == nil {
		*pinned = der
	}
	if !bytes.Equal(der, *pinned) {
		return false, "signed by another key"
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return false, "key does not parse"
	}
	sig, err := base64.StdEncoding.DecodeString(cp.Sig)
	if err != nil {
		return false, "signature does not decode"
	}
	d := sha256.Sum256(CheckpointMessage(cp.Size, cp.Head, cp.Time))
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, d[:], sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPSS(k, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	}
	if !ok {
		return false, "signature does not verify"
	}
	return true, ""
}

// AuditFilter selects entries for [Service.AuditEntries].
type AuditFilter struct {
	Subject, Action, Result string
	Limit                   int // newest first; default 200
}

// AuditEntries returns the newest entries matching f. The caller must have been allowed [ReadAudit].
func (s *Service) AuditEntries(f AuditFilter) ([]Entry, error) {
	if f.Limit <= 0 {
		f.Limit = 200
	}
	file, err := os.Open(s.audit.path)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	defer file.Close()
	var ring []Entry
	br := bufio.NewReaderSize(file, 64<<10)
	for {
		b, err := readLine(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		var l line
		var e Entry
		if json.Unmarshal(b, &l) != nil || json.Unmarshal(l.E, &e) != nil {
			continue
		}
		if f.Subject != "" && !bytes.Contains([]byte(e.Subject), []byte(f.Subject)) ||
			f.Action != "" && e.Action != f.Action || f.Result != "" && e.Result != f.Result {
			continue
		}
		ring = append(ring, e)
		if len(ring) > 2*f.Limit {
			ring = append(ring[:0], ring[len(ring)-f.Limit:]...)
		}
	}
	if len(ring) > f.Limit {
		ring = ring[len(ring)-f.Limit:]
	}
	for i, j := 0, len(ring)-1; i < j; i, j = i+1, j-1 {
		ring[i], ring[j] = ring[j], ring[i]
	}
	return ring, nil
}

// ExportAudit writes the whole audit log, as JSON lines exactly as stored, to w: the form `nvr audit
// verify` checks. The caller must have been allowed [ReadAudit].
func (s *Service) ExportAudit(w io.Writer) (int64, error) {
	if err := s.audit.sync(); err != nil {
		return 0, err
	}
	s.audit.mu.Lock()
	size := int64(0)
	if s.audit.f != nil {
		if off, err := s.audit.f.Seek(0, io.SeekCurrent); err == nil {
			size = off
		}
	}
	s.audit.mu.Unlock()
	f, err := os.Open(s.audit.path)
	if err != nil {
		return 0, fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()
	// Only whole lines: copy up to the size seen under the lock.
	return io.Copy(w, io.LimitReader(f, size))
}

// AuditPath returns the path of the audit log file.
func (s *Service) AuditPath() string { return s.audit.path }

// Checkpoint signs a checkpoint now if entries were added since the last one.
func (s *Service) Checkpoint() error { return s.audit.checkpoint() }
