package netconfig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// CA is the appliance's camera CA: it issues the cameras' EAP-TLS client certificates and the authenticator's
// server certificate. Its key never leaves the appliance; on disk it is a 0600 file in the state directory.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
	rnd     io.Reader
	now     func() time.Time
}

// ErrCSR says a certificate request was malformed or its signature did not verify.
var ErrCSR = errors.New("bad certificate request")

// LoadOrCreateCA loads the camera CA from dir (ca.pem, ca.key) or creates it there. rnd and now are the
// randomness and clock (crypto/rand.Reader and time.Now in production).
func LoadOrCreateCA(dir, name string, rnd io.Reader, now func() time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, "camera-ca.pem"), filepath.Join(dir, "camera-ca.key")
	cb, cerr := os.ReadFile(certPath)
	kb, kerr := os.ReadFile(keyPath)
	if cerr == nil && kerr == nil {
		ca, err := parseCA(cb, kb)
		if err != nil {
			return nil, fmt.Errorf("camera CA in %s: %w", dir, err)
		}
		ca.rnd, ca.now = rnd, now
		return ca, nil
	}
	if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		return nil, fmt.Errorf("camera CA in %s: incomplete (%v, %v)", dir, cerr, kerr)
	}
	ca, err := NewCA(name, rnd, now)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("camera CA key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("camera CA dir: %w", err)
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, fmt.Errorf("camera CA key: %w", err)
	}
	if err := writeFileAtomic(certPath, ca.certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("camera CA certificate: %w", err)
	}
	return ca, nil
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, errors.New("unreadable key")
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("key does not match the certificate")
	}
	return &CA{cert: cert, certPEM: certPEM, key: key}, nil
}

// NewCA makes a fresh camera CA (ECDSA P-256, ten years) in memory.
func NewCA(name string, rnd io.Reader, now func() time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, fmt.Errorf("camera CA key: %w", err)
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(rnd),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"edgenvr camera CA"}},
		NotBefore:             t.Add(-time.Hour),
		NotAfter:              t.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("camera CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key, rnd: rnd, now: now}, nil
}

func serial(rnd io.Reader) *big.Int {
	b := make([]byte, 16)
	_, _ = io.ReadFull(rnd, b)
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha256.Sum256(der)
	return h[:20]
}

// CertPEM is the CA certificate, PEM-encoded: the trust anchor cameras and hostapd are given.
func (c *CA) CertPEM() []byte { return c.certPEM }

// Certificate is the CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// IssueCamera issues an EAP-TLS client certificate for a camera (CN = its name) valid for validity, with a
// fresh P-256 key, and returns both PEM-encoded. The key is a secret: hand it to the camera and forget it.
func (c *CA) IssueCamera(name string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), c.rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("camera key: %w", err)
	}
	certPEM, err = c.sign(name, &key.PublicKey, validity, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("camera key: %w", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// SignCameraCSR issues a client certificate for the key in a camera's PEM certificate request (the camera
// keeps its key). The CN comes from name, never from the request.
func (c *CA) SignCameraCSR(name string, csrPEM []byte, validity time.Duration) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" || len(b.Bytes) > 16<<10 {
		return nil, fmt.Errorf("%w: not a PEM certificate request", ErrCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSR, err)
	}
	return c.sign(name, csr.PublicKey, validity, x509.ExtKeyUsageClientAuth)
}

// IssueServer issues the authenticator's (hostapd's) server certificate and key.
func (c *CA) IssueServer(name string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), c.rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("server key: %w", err)
	}
	certPEM, err = c.sign(name, &key.PublicKey, validity, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("server key: %w", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func (c *CA) sign(name string, pub crypto.PublicKey, validity time.Duration, eku x509.ExtKeyUsage) ([]byte, error) {
	if name == "" || len(name) > 64 {
		return nil, fmt.Errorf("certificate name %q: want 1 to 64 characters", name)
	}
	t := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:   serial(c.rnd),
		Subject:        pkix.Name{CommonName: name},
		NotBefore:      t.Add(-time.Hour),
		NotAfter:       t.Add(validity),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{eku},
		AuthorityKeyId: c.cert.SubjectKeyId,
	}
	if eku == x509.ExtKeyUsageServerAuth {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(c.rnd, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// writeFileAtomic writes data to path through a temporary file, fsync and rename, then fsyncs the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
