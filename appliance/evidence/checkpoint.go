package evidence

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// maxCheckpoint bounds a signed checkpoint's bytes.
const maxCheckpoint = 16 << 10

// sigTypeECDSA is the signature type byte hashed into the key ID of an ECDSA P-256 / SHA-256 note key.
const sigTypeECDSA = 0x02

// Checkpoint is the signed statement of the log's state: C2SP tlog-checkpoint's origin, size and root
// hash, with one extension line carrying the time of signing.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [32]byte
	Time   time.Time
}

// Origin returns the log origin (and note key name) of an appliance's log.
func Origin(appliance string) string { return "edgenvr-nvr/" + appliance }

// Body encodes the checkpoint body, the text the log key signs.
func (c Checkpoint) Body() []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\ntime %s\n", c.Origin, c.Size,
		base64.StdEncoding.EncodeToString(c.Root[:]), c.Time.UTC().Format(time.RFC3339Nano))
}

// ParseCheckpointBody decodes a checkpoint body, accepting only the canonical form Body produces.
func ParseCheckpointBody(b []byte) (Checkpoint, error) {
	var c Checkpoint
	if len(b) > maxCheckpoint || !bytes.HasSuffix(b, []byte("\n")) {
		return c, fmt.Errorf("%w: checkpoint body of %d bytes without a final newline", ErrFormat, len(b))
	}
	lines := strings.Split(string(b[:len(b)-1]), "\n")
	if len(lines) != 4 {
		return c, fmt.Errorf("%w: checkpoint body has %d lines, want 4", ErrFormat, len(lines))
	}
	c.Origin = lines[0]
	if c.Origin == "" || strings.ContainsAny(c.Origin, " \t\r+") {
		return c, fmt.Errorf("%w: checkpoint origin %.60q", ErrFormat, c.Origin)
	}
	n, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != lines[1] || n > 1<<62 {
		return c, fmt.Errorf("%w: checkpoint size %.30q", ErrFormat, lines[1])
	}
	c.Size = n
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return c, fmt.Errorf("%w: checkpoint root %.60q is not 32 bytes of base64", ErrFormat, lines[2])
	}
	c.Root = [32]byte(root)
	ts, ok := strings.CutPrefix(lines[3], "time ")
	if !ok {
		return c, fmt.Errorf("%w: checkpoint extension %.60q, want a time line", ErrFormat, lines[3])
	}
	c.Time, err = time.Parse(time.RFC3339Nano, ts)
	if err != nil || c.Time.Location() != time.UTC && c.Time.UTC().Format(time.RFC3339Nano) != ts {
		return c, fmt.Errorf("%w: checkpoint time %.40q", ErrFormat, ts)
	}
	c.Time = c.Time.UTC()
	if !bytes.Equal(c.Body(), b) {
		return c, fmt.Errorf("%w: checkpoint body is not in canonical form", ErrFormat)
	}
	return c, nil
}

// keyID is the 4-byte key hash of a note key: SHA-256(name ‖ "\n" ‖ type ‖ SubjectPublicKeyInfo)[:4].
func keyID(name string, pub *ecdsa.PublicKey) (uint32, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', sigTypeECDSA})
	h.Write(der)
	return binary.BigEndian.Uint32(h.Sum(nil)), nil
}

// noteSigner signs note bodies with an ECDSA P-256 crypto.Signer (the TPM's log key).
type noteSigner struct {
	name string
	id   uint32
	key  crypto.Signer
}

func (s noteSigner) Name() string    { return s.name }
func (s noteSigner) KeyHash() uint32 { return s.id }
func (s noteSigner) Sign(msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	return s.key.Sign(rand.Reader, d[:], crypto.SHA256)
}

// noteVerifier checks note signatures with an ECDSA P-256 public key.
type noteVerifier struct {
	name string
	id   uint32
	pub  *ecdsa.PublicKey
}

func (v noteVerifier) Name() string    { return v.name }
func (v noteVerifier) KeyHash() uint32 { return v.id }
func (v noteVerifier) Verify(msg, sig []byte) bool {
	d := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(v.pub, d[:], sig)
}

// SignCheckpoint signs c with key, an ECDSA P-256 signer whose key name is c.Origin, and returns the
// signed note: the body, a blank line and one signature line.
func SignCheckpoint(c Checkpoint, key crypto.Signer) ([]byte, error) {
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("sign checkpoint: the log key is not an ECDSA key")
	}
	id, err := keyID(c.Origin, pub)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	out, err := note.Sign(&note.Note{Text: string(c.Body())}, noteSigner{name: c.Origin, id: id, key: key})
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return out, nil
}

// OpenCheckpoint verifies a signed checkpoint with the log's public key and decodes it. The note must
// carry a valid signature by that key under the checkpoint's origin; other signatures are ignored.
func OpenCheckpoint(signed []byte, pub *ecdsa.PublicKey) (Checkpoint, error) {
	if len(signed) > maxCheckpoint {
		return Checkpoint{}, fmt.Errorf("%w: signed checkpoint of %d bytes", ErrFormat, len(signed))
	}
	origin, _, _ := strings.Cut(string(signed), "\n")
	id, err := keyID(origin, pub)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(noteVerifier{name: origin, id: id, pub: pub}))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	return ParseCheckpointBody([]byte(n.Text))
}
