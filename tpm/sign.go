package tpm

import (
	"crypto"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// ExportKeyHandle is the persistent handle (owner hierarchy) of the export
// signing key. RSA key generation takes the TPM seconds, so the key is made
// once and kept under this handle rather than re-derived at every start.
const ExportKeyHandle = 0x81010002

// logTemplate is the fixed template of the evidence log signing key: ECC
// P-256, ECDSA with SHA-256, derived as a primary object under the owner
// hierarchy, so the TPM re-creates the identical key at every start and
// nothing of it is stored. Never change it: the device certificate and every
// signed checkpoint name this key.
func logTemplate() tpm2.TPMTPublic {
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
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: []byte("edgenvr evidence log key v1")},
			Y: tpm2.TPM2BECCParameter{},
		}),
	}
}

// exportTemplate is the template of the export signing key: RSA-2048 whose
// only scheme is RSASSA-PSS with SHA-256, the algorithm the ONVIF Export
// File Format requires.
func exportTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{
				Scheme:  tpm2.TPMAlgRSAPSS,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAPSS, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: []byte("edgenvr export key v1")}),
	}
}

// SigningKey is a signing key held by the TPM. It implements
// [crypto.Signer]; the private half never leaves the TPM. Its methods are
// safe for concurrent use.
type SigningKey struct {
	t     *TPM
	what  string
	rsa   bool
	flush bool // a transient object that Close flushes (a persistent one stays)

	mu     sync.Mutex
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    crypto.PublicKey
}

// LogKey loads the evidence log signing key, an ECDSA P-256 key the TPM
// derives from a fixed template (the same key at every start for as long as
// the owner seed is unchanged), kept at the persistent handle [LogKeyHandle]
// so that it takes no transient slot between signatures. Close does not
// remove it from the TPM.
func (t *TPM) LogKey() (*SigningKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	rp, err := t.persistentLocked(LogKeyHandle, logTemplate(), "log key")
	if err != nil {
		return nil, err
	}
	pub, err := ecdsaPublic(rp.OutPublic)
	if err != nil {
		return nil, fmt.Errorf("tpm: log key public: %w", err)
	}
	return &SigningKey{t: t, what: "log key", handle: tpm2.TPMHandle(LogKeyHandle), name: rp.Name, pub: pub}, nil
}

// ExportKey loads the export signing key, an RSA-2048 RSASSA-PSS/SHA-256
// key kept at the persistent handle [ExportKeyHandle]. At first use the TPM
// generates it and makes it persistent; afterwards it is read back. A
// persistent object at that handle that is not such a key is an error, never
// overwritten. Close does not remove the key from the TPM.
func (t *TPM) ExportKey() (*SigningKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	h := tpm2.TPMHandle(ExportKeyHandle)
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t.tr)
	if err != nil {
		if !isHandleError(err) {
			return nil, fmt.Errorf("tpm: read export key 0x%08x: %w", ExportKeyHandle, err)
		}
		if rp, err = t.createExportKeyLocked(h); err != nil {
			return nil, err
		}
	}
	pub, err := exportPublic(rp.OutPublic)
	if err != nil {
		return nil, fmt.Errorf("tpm: persistent object 0x%08x is not the export key: %w", ExportKeyHandle, err)
	}
	return &SigningKey{t: t, what: "export key", rsa: true, handle: h, name: rp.Name, pub: pub}, nil
}

// isHandleError reports whether err says the handle names no object.
func isHandleError(err error) bool { return errors.Is(err, tpm2.TPMRCHandle) }

func (t *TPM) createExportKeyLocked(h tpm2.TPMHandle) (*tpm2.ReadPublicResponse, error) {
	t.log.Info("tpm: generating the export signing key (RSA-2048); this happens once")
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(exportTemplate()),
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: create export key: %w", err)
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: h,
	}.Execute(t.tr)
	flushErr := t.flushLocked(rsp.ObjectHandle)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tpm: persist export key at 0x%08x: %w", uint32(h), err), flushErr)
	}
	if flushErr != nil {
		return nil, flushErr
	}
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: read back export key: %w", err)
	}
	return rp, nil
}

// exportPublic checks that p is an RSA-2048 RSASSA-PSS/SHA-256 signing key
// bound to this TPM and returns its public key.
func exportPublic(p tpm2.TPM2BPublic) (*rsa.PublicKey, error) {
	pub, err := p.Contents()
	if err != nil {
		return nil, err
	}
	if pub.Type != tpm2.TPMAlgRSA || !pub.ObjectAttributes.SignEncrypt || pub.ObjectAttributes.Decrypt ||
		!pub.ObjectAttributes.FixedTPM || !pub.ObjectAttributes.SensitiveDataOrigin {
		return nil, errors.New("not a TPM-generated RSA signing key")
	}
	parms, err := pub.Parameters.RSADetail()
	if err != nil {
		return nil, err
	}
	if parms.KeyBits != 2048 || parms.Scheme.Scheme != tpm2.TPMAlgRSAPSS {
		return nil, fmt.Errorf("RSA-%d with scheme 0x%x, want RSA-2048 RSASSA-PSS", parms.KeyBits, parms.Scheme.Scheme)
	}
	d, err := parms.Scheme.Details.RSAPSS()
	if err != nil || d.HashAlg != tpm2.TPMAlgSHA256 {
		return nil, errors.New("RSASSA-PSS scheme without SHA-256")
	}
	mod, err := pub.Unique.RSA()
	if err != nil {
		return nil, err
	}
	return tpm2.RSAPub(parms, mod)
}

// Public returns the key's public half: *ecdsa.PublicKey for the log key,
// *rsa.PublicKey for the export key.
func (k *SigningKey) Public() crypto.PublicKey { return k.pub }

// Sign signs a SHA-256 digest inside the TPM. The log key returns an ASN.1
// DER ECDSA signature; the export key an RSASSA-PSS signature, for which
// opts must be *rsa.PSSOptions with SHA-256 (the salt length is the TPM's:
// the hash length on TPMs that follow the current TCG specification;
// verify with rsa.PSSSaltLengthAuto). rand is ignored: the TPM draws its own
// randomness.
func (k *SigningKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != 32 {
		return nil, fmt.Errorf("tpm: %s sign: want a SHA-256 digest, got %v of %d bytes", k.what, opts.HashFunc(), len(digest))
	}
	if _, pss := opts.(*rsa.PSSOptions); k.rsa && !pss {
		return nil, fmt.Errorf("tpm: %s sign: the export key signs RSASSA-PSS only", k.what)
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
		KeyHandle:  tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(nil)},
		Digest:     tpm2.TPM2BDigest{Buffer: digest},
		InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(k.t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: %s sign: %w", k.what, err)
	}
	if k.rsa {
		sig, err := rsp.Signature.Signature.RSAPSS()
		if err != nil {
			return nil, fmt.Errorf("tpm: %s sign: %w", k.what, err)
		}
		return sig.Sig.Buffer, nil
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("tpm: %s sign: %w", k.what, err)
	}
	der, err := asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.SignatureR.Buffer),
		new(big.Int).SetBytes(sig.SignatureS.Buffer),
	})
	if err != nil {
		return nil, fmt.Errorf("tpm: %s sign: encode: %w", k.what, err)
	}
	return der, nil
}

// Close flushes a transient key from the TPM (the persistent export key
// stays). Sign fails afterwards.
func (k *SigningKey) Close() error {
	k.mu.Lock()
	h := k.handle
	k.handle = 0
	k.mu.Unlock()
	if h == 0 {
		return ErrClosed
	}
	if !k.flush {
		return nil
	}
	k.t.mu.Lock()
	defer k.t.mu.Unlock()
	if k.t.closed {
		return nil
	}
	return k.t.flushLocked(h)
}
