package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// tlsTemplate is the fixed public template of the web server's TLS key: an
// ECC P-256 signing key, derived as a primary object under the owner
// hierarchy so the TPM re-creates the identical key on every start. Changing
// any field changes the key (and the fingerprint users pinned): never change it.
func tlsTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			// A null scheme lets each signature name its hash (TLS 1.2 peers may ask for SHA-384).
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: []byte("edgenvr tls key v1")},
			Y: tpm2.TPM2BECCParameter{},
		}),
	}
}

// TLSKey is the web server's TLS private key, held by the TPM. It implements
// [crypto.Signer] with ECDSA over P-256: crypto/tls calls Sign during each
// handshake, and the private half never leaves the TPM. Close forgets the handle; the key stays persistent.
type TLSKey struct {
	t *TPM

	mu     sync.Mutex
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    *ecdsa.PublicKey
}

// TLSKey loads the TPM-held TLS key (created on first use, deterministically, and kept at the persistent
// handle [TLSKeyHandle] so that it takes no transient slot between handshakes). Close does not remove it
// from the TPM.
func (t *TPM) TLSKey() (*TLSKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	rp, err := t.persistentLocked(TLSKeyHandle, tlsTemplate(), "tls key")
	if err != nil {
		return nil, err
	}
	pub, err := ecdsaPublic(rp.OutPublic)
	if err != nil {
		return nil, fmt.Errorf("tpm: tls key public: %w", err)
	}
	return &TLSKey{t: t, handle: tpm2.TPMHandle(TLSKeyHandle), name: rp.Name, pub: pub}, nil
}

func ecdsaPublic(p tpm2.TPM2BPublic) (*ecdsa.PublicKey, error) {
	pub, err := p.Contents()
	if err != nil {
		return nil, err
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, err
	}
	x := new(big.Int).SetBytes(point.X.Buffer)
	y := new(big.Int).SetBytes(point.Y.Buffer)
	if !elliptic.P256().IsOnCurve(x, y) {
		return nil, errors.New("point is not on P-256")
	}
	return &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}, nil
}

// Public returns the *ecdsa.PublicKey of the TLS key.
func (k *TLSKey) Public() crypto.PublicKey { return k.pub }

// Sign signs digest, which must be the hash named by opts (SHA-256, SHA-384
// or SHA-512: TLS 1.2 peers choose), inside the TPM and returns an ASN.1 DER ECDSA signature, as
// crypto/tls expects. rand is ignored: the TPM draws its own nonce.
func (k *TLSKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var alg tpm2.TPMIAlgHash
	switch opts.HashFunc() {
	case crypto.SHA256:
		alg = tpm2.TPMAlgSHA256
	case crypto.SHA384:
		alg = tpm2.TPMAlgSHA384
	case crypto.SHA512:
		alg = tpm2.TPMAlgSHA512
	default:
		return nil, fmt.Errorf("tpm: tls sign: unsupported hash %v", opts.HashFunc())
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("tpm: tls sign: digest of %d bytes for %v", len(digest), opts.HashFunc())
	}
	k.mu.Lock()
	h, name := k.handle, k.name
	k.mu.Unlock()
	if h == 0 {
		return nil, ErrClosed
	}
	k.t.mu.Lock()
	defer k.t.mu.Unlock()
	if k.t.closed {
		return nil, ErrClosed
	}
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(nil)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: alg}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(k.t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: tls sign: %w", err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("tpm: tls sign: %w", err)
	}
	der, err := asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.SignatureR.Buffer),
		new(big.Int).SetBytes(sig.SignatureS.Buffer),
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: tls sign: encode: %w", err)
	}
	return der, nil
}

// Close forgets the handle (the persistent key stays in the TPM). Sign fails afterwards.
func (k *TLSKey) Close() error {
	k.mu.Lock()
	h := k.handle
	k.handle = 0
	k.mu.Unlock()
	if h == 0 {
		return ErrClosed
	}
	return nil // persistent: the key stays in the TPM
}
