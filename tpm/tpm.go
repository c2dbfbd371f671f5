// Package tpm is the appliance's only door to its TPM 2.0.
//
// It owns the transport (a Linux TPM character device, or swtpm over TCP or
// a unix socket), the key templates, and the commands the rest of the
// appliance needs. Today that is the vault key: an ECC P-256 decryption key
// derived as a primary object from a fixed template under the owner
// (storage) hierarchy, so the TPM re-creates the identical key on every start
// and nothing about it is stored on disk. Its public half is handed out by
// [TPM.VaultKey]; its private half is only ever used inside the TPM through
// [TPM.ECDH] (TPM2_ECDH_ZGen).
//
// The package is a leaf: it imports no other project package. It must never
// export private key material, never keep a logger of its own (one is
// injected), and never send simulator platform commands (such as PowerOn) to
// swtpm, which is started already powered up.
package tpm

import (
	"crypto/ecdh"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// ErrClosed is returned by methods called after [TPM.Close].
var ErrClosed = errors.New("tpm: closed")

// dialTimeout bounds connecting to swtpm.
const dialTimeout = 10 * time.Second

// TPM is an open connection to a TPM. Its methods are safe for concurrent
// use; commands are serialised, since a TPM executes one at a time.
type TPM struct {
	log *slog.Logger

	mu     sync.Mutex
	tr     transport.TPMCloser
	closed bool
	// vault is the transient handle of the vault key, or 0 before first use.
	vault     tpm2.TPMHandle
	vaultName tpm2.TPM2BName
	vaultPub  *ecdh.PublicKey
}

// Open connects to the TPM named by device:
//
//   - a character device path such as /dev/tpmrm0 (use the kernel resource
//     manager, not /dev/tpm0, so transient handles are cleaned up per process);
//   - "swtpm:HOST:PORT" for swtpm's TCP server socket;
//   - "swtpm:unix:PATH" for swtpm's unix socket (type=unixio).
//
// The swtpm forms expect swtpm started with --flags
// not-need-init,startup-clear; Open sends no platform commands.
func Open(device string, log *slog.Logger) (*TPM, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr, err := openTransport(device)
	if err != nil {
		return nil, fmt.Errorf("tpm: open %s: %w", device, err)
	}
	if strings.HasPrefix(device, "swtpm:") {
		// swtpm has no resource manager: objects a killed process loaded stay loaded until the TPM runs out
		// of slots. The appliance is crash-only and owns its TPM, so start-up clears what a crash left.
		n, err := flushStale(tr)
		if err != nil {
			tr.Close()
			return nil, fmt.Errorf("tpm: open %s: %w", device, err)
		}
		if n > 0 {
			log.Info("tpm: flushed objects left loaded by an earlier process", "count", n)
		}
	}
	log.Debug("tpm opened", "device", device)
	return &TPM{log: log, tr: tr}, nil
}

// flushStale flushes every loaded transient object and session. Only for TPMs without a resource manager,
// which one process owns.
func flushStale(tr transport.TPM) (int, error) {
	n := 0
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		hs, err := loadedHandles(tr, ht)
		if err != nil {
			return n, err
		}
		for _, h := range hs {
			if _, err := (tpm2.FlushContext{FlushHandle: tpm2.TPMHandle(h)}).Execute(tr); err != nil {
				return n, fmt.Errorf("flush stale handle %#x: %w", h, err)
			}
			n++
		}
	}
	return n, nil
}

func openTransport(device string) (transport.TPMCloser, error) {
	rest, ok := strings.CutPrefix(device, "swtpm:")
	if !ok {
		if device == "" {
			return nil, errors.New("empty device")
		}
		return linuxtpm.Open(device)
	}
	network, addr := "tcp", rest
	if p, ok := strings.CutPrefix(rest, "unix:"); ok {
		network, addr = "unix", p
	}
	if addr == "" {
		return nil, fmt.Errorf("device %q names no address", device)
	}
	conn, err := net.DialTimeout(network, addr, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial swtpm: %w", err)
	}
	return &streamTransport{conn: conn}, nil
}

// maxResponse bounds a TPM response; TPM2 responses are far smaller.
const maxResponse = 1 << 16

// streamTransport sends raw TPM commands over a stream connection (swtpm's
// server socket) and reads exactly one framed response: a 10-byte header
// whose size field gives the total length.
type streamTransport struct {
	conn net.Conn
}

func (s *streamTransport) Send(cmd []byte) ([]byte, error) {
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("write command: %w", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, fmt.Errorf("read response header: %w", err)
	}
	size := int(hdr[2])<<24 | int(hdr[3])<<16 | int(hdr[4])<<8 | int(hdr[5])
	if size < len(hdr) || size > maxResponse {
		return nil, fmt.Errorf("response size %d out of range", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.conn, rsp[len(hdr):]); err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	return rsp, nil
}

func (s *streamTransport) Close() error { return s.conn.Close() }

// vaultTemplate is the fixed public template of the vault key. Changing any
// field changes the derived key and makes every recorded segment unreadable:
// never change it.
func vaultTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			Decrypt:             true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   tpm2.TPMECCNistP256,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		// A fixed label in the unique field keeps this key distinct from any
		// other P-256 primary with the same attributes (such as an SRK).
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: []byte("edgenvr vault key v1")},
			Y: tpm2.TPM2BECCParameter{},
		}),
	}
}

// loadVaultLocked makes sure the vault key is known: a deterministic primary kept at the persistent handle
// VaultKeyHandle, so it takes no transient slot between uses. t.mu must be held.
func (t *TPM) loadVaultLocked() error {
	if t.closed {
		return ErrClosed
	}
	if t.vault != 0 {
		return nil
	}
	rp, err := t.persistentLocked(VaultKeyHandle, vaultTemplate(), "vault key")
	if err != nil {
		return err
	}
	pub, err := ecdhPublic(rp.OutPublic)
	if err != nil {
		return fmt.Errorf("tpm: vault key public: %w", err)
	}
	t.vault, t.vaultName, t.vaultPub = tpm2.TPMHandle(VaultKeyHandle), rp.Name, pub
	return nil
}

func ecdhPublic(p tpm2.TPM2BPublic) (*ecdh.PublicKey, error) {
	pub, err := p.Contents()
	if err != nil {
		return nil, err
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, err
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, err
	}
	return tpm2.ECDHPub(parms, point)
}

func (t *TPM) flushLocked(h tpm2.TPMHandle) error {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t.tr); err != nil {
		return fmt.Errorf("tpm: flush 0x%08x: %w", uint32(h), err)
	}
	return nil
}

// VaultKey returns the public half of the vault key, a P-256 key. It is the
// same on every call and across restarts for as long as the TPM's owner seed
// is unchanged (a TPM2_Clear changes it).
func (t *TPM) VaultKey() (*ecdh.PublicKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.loadVaultLocked(); err != nil {
		return nil, err
	}
	return t.vaultPub, nil
}

// ECDH multiplies peer, a P-256 public key, by the vault private key inside
// the TPM (TPM2_ECDH_ZGen) and returns the 32-byte X coordinate of the
// product: the same bytes crypto/ecdh returns for the matching private key.
func (t *TPM) ECDH(peer *ecdh.PublicKey) ([]byte, error) {
	if peer == nil || peer.Curve() != ecdh.P256() {
		return nil, errors.New("tpm: ecdh zgen: peer is not a P-256 public key")
	}
	raw := peer.Bytes() // 0x04 || X || Y
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.loadVaultLocked(); err != nil {
		return nil, err
	}
	rsp, err := tpm2.ECDHZGen{
		KeyHandle: tpm2.AuthHandle{Handle: t.vault, Name: t.vaultName, Auth: tpm2.PasswordAuth(nil)},
		InPoint: tpm2.New2B(tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: raw[33:65]},
		}),
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: ecdh zgen: %w", err)
	}
	out, err := rsp.OutPoint.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: ecdh zgen: decode point: %w", err)
	}
	x := out.X.Buffer
	if len(x) > 32 {
		return nil, fmt.Errorf("tpm: ecdh zgen: X coordinate of %d bytes", len(x))
	}
	// Left-pad: the TPM may strip leading zero bytes.
	z := make([]byte, 32)
	copy(z[32-len(x):], x)
	return z, nil
}

// TransientHandles lists the transient object handles currently loaded in
// the TPM. Under the kernel resource manager it only sees this connection's
// objects. It is meant for leak checks in tests and diagnostics.
func (t *TPM) TransientHandles() ([]uint32, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	return transientHandles(t.tr)
}

func transientHandles(tr transport.TPM) ([]uint32, error) {
	return loadedHandles(tr, tpm2.TPMHTTransient)
}

// loadedHandles lists the loaded handles of one handle type.
func loadedHandles(tr transport.TPM, ht tpm2.TPMHT) ([]uint32, error) {
	var out []uint32
	next := uint32(ht) << 24
	for {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      next,
			PropertyCount: 64,
		}.Execute(tr)
		if err != nil {
			return nil, fmt.Errorf("tpm: get capability handles: %w", err)
		}
		hl, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("tpm: get capability handles: %w", err)
		}
		for _, h := range hl.Handle {
			if uint32(h)>>24 != uint32(ht) {
				return out, nil
			}
			out = append(out, uint32(h))
			next = uint32(h) + 1
		}
		if !rsp.MoreData || len(hl.Handle) == 0 {
			return out, nil
		}
	}
}

// Close flushes the handles this TPM loaded and closes the transport. Further
// calls return [ErrClosed].
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.closed = true
	var errs []error
	t.vault, t.vaultName, t.vaultPub = 0, tpm2.TPM2BName{}, nil // persistent: stays in the TPM
	if err := t.tr.Close(); err != nil {
		errs = append(errs, fmt.Errorf("tpm: close transport: %w", err))
	}
	return errors.Join(errs...)
}
