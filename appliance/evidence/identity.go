package evidence

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"
)

// LogKeyURIPrefix begins the subject alternative name URI by which the device certificate names the log
// key: the prefix, then the standard base64 of the key's SubjectPublicKeyInfo (DER).
const LogKeyURIPrefix = "urn:edgenvr:log-key:"

// maxCert bounds a device certificate.
const maxCert = 16 << 10

// Identity is what a device certificate says: the appliance id and its two public keys.
type Identity struct {
	Appliance string
	ExportKey *rsa.PublicKey   // signs manifests and ONVIF files (RSASSA-PSS, SHA-256)
	LogKey    *ecdsa.PublicKey // signs checkpoints (ECDSA P-256, SHA-256)
	Cert      *x509.Certificate
	DER       []byte
}

// ApplianceID derives the appliance id from the export key: "nvr-" and the first 16 hex digits of the
// SHA-256 of its SubjectPublicKeyInfo. The TPM keeps the key, so the id survives a lost index.
func ApplianceID(exportKey *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(exportKey)
	if err != nil {
		return "", fmt.Errorf("appliance id: %w", err)
	}
	sum := sha256.Sum256(der)
	return "nvr-" + hex.EncodeToString(sum[:8]), nil
}

// KeyFingerprint is the SHA-256 of a public key's SubjectPublicKeyInfo (DER).
func KeyFingerprint(pub crypto.PublicKey) ([32]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(der), nil
}

// NewDeviceCert makes the device certificate: self-signed by the export key (RSASSA-PSS, SHA-256) inside
// the TPM, naming the appliance id in its subject and carrying the log key's public key in the
// subject alternative name URI that begins with [LogKeyURIPrefix]. It returns the DER bytes.
func NewDeviceCert(exportKey, logKey crypto.Signer, now time.Time) ([]byte, error) {
	ek, ok := exportKey.Public().(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("device certificate: the export key is not RSA")
	}
	lk, ok := logKey.Public().(*ecdsa.PublicKey)
	if !ok || lk.Curve != elliptic.P256() {
		return nil, errors.New("device certificate: the log key is not ECDSA P-256")
	}
	id, err := ApplianceID(ek)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(lk)
	if err != nil {
		return nil, fmt.Errorf("device certificate: log key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("device certificate: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id, Organization: []string{"edgenvr NVR appliance"}},
		NotBefore:             now.Add(-time.Minute).UTC(),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), // RFC 5280 4.1.2.5: no expiry
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    x509.SHA256WithRSAPSS,
		URIs:                  []*url.URL{{Scheme: "urn", Opaque: strings.TrimPrefix(LogKeyURIPrefix, "urn:") + base64.StdEncoding.EncodeToString(spki)}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ek, exportKey)
	if err != nil {
		return nil, fmt.Errorf("device certificate: %w", err)
	}
	if _, err := ParseDeviceCert(der); err != nil {
		return nil, fmt.Errorf("device certificate made but unreadable: %w", err)
	}
	return der, nil
}

// ParseDeviceCert reads a device certificate (DER or PEM) and checks it: its self-signature, an RSA
// export key of at least 2048 bits, a P-256 log key named by a [LogKeyURIPrefix] URI, and a subject naming
// the appliance id that the export key derives.
func ParseDeviceCert(b []byte) (*Identity, error) {
	if len(b) > maxCert {
		return nil, fmt.Errorf("%w: certificate of %d bytes", ErrFormat, len(b))
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %q, want CERTIFICATE", ErrFormat, blk.Type)
		}
		der = blk.Bytes
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %v", ErrFormat, err)
	}
	ek, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok || ek.N.BitLen() < 2048 {
		return nil, fmt.Errorf("%w: certificate key is not RSA of at least 2048 bits", ErrFormat)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		return nil, fmt.Errorf("certificate self-signature: %w", err)
	}
	var lk *ecdsa.PublicKey
	for _, u := range c.URIs {
		b64, ok := strings.CutPrefix(u.String(), LogKeyURIPrefix)
		if !ok {
			continue
		}
		if lk != nil {
			return nil, fmt.Errorf("%w: certificate names two log keys", ErrFormat)
		}
		spki, err := base64.StdEncoding.Strict().DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate log key: %v", ErrFormat, err)
		}
		pub, err := x509.ParsePKIXPublicKey(spki)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate log key: %v", ErrFormat, err)
		}
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: certificate log key is not ECDSA P-256", ErrFormat)
		}
		lk = k
	}
	if lk == nil {
		return nil, fmt.Errorf("%w: certificate names no log key", ErrFormat)
	}
	id, err := ApplianceID(ek)
	if err != nil {
		return nil, err
	}
	if c.Subject.CommonName != id {
		return nil, fmt.Errorf("%w: certificate subject %.60q does not match its key's appliance id %s", ErrFormat, c.Subject.CommonName, id)
	}
	return &Identity{Appliance: id, ExportKey: ek, LogKey: lk, Cert: c, DER: der}, nil
}

// CertPEM encodes DER certificate bytes as PEM.
func CertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// Fingerprint is the SHA-256 of the certificate's DER bytes, as openssl x509 -fingerprint -sha256 shows it.
func (id *Identity) Fingerprint() string {
	sum := sha256.Sum256(id.DER)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}
