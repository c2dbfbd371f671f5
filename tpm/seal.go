package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// MaxSealSize is the most data [TPM.Seal] takes: a TPM seals at most 128
// bytes (MAX_SYM_DATA). Seal a key, and encrypt larger secrets under it.
const MaxSealSize = 128

// ErrSealedBlob is returned by [TPM.Unseal] for a blob that is not one
// [TPM.Seal] made, or that this TPM cannot load (another TPM, a cleared one).
var ErrSealedBlob = errors.New("tpm: bad sealed blob")

// sealBlobMagic starts every sealed blob, with a format version.
const sealBlobMagic = "NVRSEAL1"

// sealParentTemplate is the storage parent of sealed objects: the TCG
// reference ECC P-256 SRK, derived from the owner seed, so it is re-created
// identically on every start and never stored. Never change it: sealed blobs
// would no longer load.
func sealParentTemplate() tpm2.TPMTPublic { return tpm2.ECCSRKTemplate }

// loadSealParentLocked creates the storage parent and returns its handle and
// name; the caller flushes it. t.mu must be held.
func (t *TPM) loadSealParentLocked() (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	if t.closed {
		return 0, tpm2.TPM2BName{}, ErrClosed
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(sealParentTemplate()),
	}.Execute(t.tr)
	if err != nil {
		return 0, tpm2.TPM2BName{}, fmt.Errorf("tpm: create storage parent: %w", err)
	}
	return rsp.ObjectHandle, rsp.Name, nil
}

// Seal stores data (at most [MaxSealSize] bytes) in a sealed data object
// under the owner hierarchy's storage key (TPM2_Create) and returns the
// object's public and encrypted private parts as one blob. Only this TPM,
// with its owner seed unchanged, can unseal it; the blob itself may be kept
// anywhere. Data never appears in logs or errors.
func (t *TPM) Seal(data []byte) ([]byte, error) {
	if len(data) == 0 || len(data) > MaxSealSize {
		return nil, fmt.Errorf("tpm: seal: %d bytes; 1 to %d allowed", len(data), MaxSealSize)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	parent, name, err := t.loadSealParentLocked()
	if err != nil {
		return nil, err
	}
	defer func() {
		if ferr := t.flushLocked(parent); ferr != nil {
			t.log.Warn("tpm: flush storage parent", "err", ferr)
		}
	}()
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: parent, Name: name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: data}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM:     true,
				FixedParent:  true,
				UserWithAuth: true,
				NoDA:         true,
			},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
		}),
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: seal: create: %w", err)
	}
	pub := tpm2.Marshal(rsp.OutPublic)
	priv := tpm2.Marshal(rsp.OutPrivate)
	blob := make([]byte, 0, len(sealBlobMagic)+8+len(pub)+len(priv))
	blob = append(blob, sealBlobMagic...)
	blob = binary.BigEndian.AppendUint32(blob, uint32(len(pub)))
	blob = append(blob, pub...)
	blob = binary.BigEndian.AppendUint32(blob, uint32(len(priv)))
	blob = append(blob, priv...)
	return blob, nil
}

// maxSealedPart bounds each part of a blob; real parts are a few hundred bytes.
const maxSealedPart = 4096

// Unseal loads a blob made by [TPM.Seal] and returns the sealed data.
func (t *TPM) Unseal(blob []byte) ([]byte, error) {
	pubB, privB, err := splitSealed(blob)
	if err != nil {
		return nil, err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pubB)
	if err != nil {
		return nil, fmt.Errorf("%w: public part: %v", ErrSealedBlob, err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](privB)
	if err != nil {
		return nil, fmt.Errorf("%w: private part: %v", ErrSealedBlob, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	parent, name, err := t.loadSealParentLocked()
	if err != nil {
		return nil, err
	}
	defer func() {
		if ferr := t.flushLocked(parent); ferr != nil {
			t.log.Warn("tpm: flush storage parent", "err", ferr)
		}
	}()
	lrsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: parent, Name: name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv,
		InPublic:     *pub,
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("%w: load: %v", ErrSealedBlob, err)
	}
	defer func() {
		if ferr := t.flushLocked(lrsp.ObjectHandle); ferr != nil {
			t.log.Warn("tpm: flush sealed object", "err", ferr)
		}
	}()
	ursp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{Handle: lrsp.ObjectHandle, Name: lrsp.Name, Auth: tpm2.PasswordAuth(nil)},
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: unseal: %w", err)
	}
	return ursp.OutData.Buffer, nil
}

func splitSealed(blob []byte) (pub, priv []byte, err error) {
	rest, ok := cutPrefix(blob, sealBlobMagic)
	if !ok {
		return nil, nil, fmt.Errorf("%w: wrong magic", ErrSealedBlob)
	}
	part := func() ([]byte, error) {
		if len(rest) < 4 {
			return nil, fmt.Errorf("%w: truncated", ErrSealedBlob)
		}
		n := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if n == 0 || n > maxSealedPart || int(n) > len(rest) {
			return nil, fmt.Errorf("%w: part length %d", ErrSealedBlob, n)
		}
		p := rest[:n]
		rest = rest[n:]
		return p, nil
	}
	if pub, err = part(); err != nil {
		return nil, nil, err
	}
	if priv, err = part(); err != nil {
		return nil, nil, err
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("%w: %d trailing bytes", ErrSealedBlob, len(rest))
	}
	return pub, priv, nil
}

func cutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return nil, false
	}
	return b[len(prefix):], true
}
