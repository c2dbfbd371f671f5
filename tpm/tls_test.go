package tpm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/edgenvr/nvr/internal/swtpmtest"
	"github.com/edgenvr/nvr/tpm"
)

func TestTLSKeySignsAndIsStable(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp := open(t, dev)
	k, err := tp.TLSKey()
	if err != nil {
		t.Fatalf("TLSKey: %v", err)
	}
	pub := k.Public().(*ecdsa.PublicKey)
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		var d []byte
		switch h {
		case crypto.SHA256:
			s := sha256.Sum256([]byte("hello"))
			d = s[:]
		case crypto.SHA384:
			s := sha512.Sum384([]byte("hello"))
			d = s[:]
		default:
			s := sha512.Sum512([]byte("hello"))
			d = s[:]
		}
		sig, err := k.Sign(rand.Reader, d, h)
		if err != nil {
			t.Fatalf("Sign %v: %v", h, err)
		}
		if !ecdsa.VerifyASN1(pub, d, sig) {
			t.Fatalf("signature with %v does not verify", h)
		}
	}
	if _, err := k.Sign(rand.Reader, make([]byte, 20), crypto.SHA1); err == nil {
		t.Fatal("SHA-1 signature accepted")
	}
	if _, err := k.Sign(rand.Reader, make([]byte, 31), crypto.SHA256); err == nil {
		t.Fatal("short digest accepted")
	}
	if err := k.Close(); err != nil {
		t.Fatalf("Close key: %v", err)
	}
	if _, err := k.Sign(rand.Reader, make([]byte, 32), crypto.SHA256); !errors.Is(err, tpm.ErrClosed) {
		t.Fatalf("Sign after Close: %v, want ErrClosed", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkNoTransient(t, dev)

	tp2 := open(t, dev)
	defer tp2.Close()
	k2, err := tp2.TLSKey()
	if err != nil {
		t.Fatalf("TLSKey again: %v", err)
	}
	defer k2.Close()
	if !k2.Public().(*ecdsa.PublicKey).Equal(pub) {
		t.Fatal("TLS key changed across opens")
	}
}

// TestTLSKeyHandshake serves TLS 1.3 and 1.2 with the TPM-held key and
// connects with crypto/tls pinning the certificate.
func TestTLSKeyHandshake(t *testing.T) {
	dev := swtpmtest.Start(t)
	tp := open(t, dev)
	t.Cleanup(func() { tp.Close() })
	k, err := tp.TLSKey()
	if err != nil {
		t.Fatalf("TLSKey: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "nvr test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatalf("self-sign with the TPM key: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: k}},
			MinVersion:   v, MaxVersion: v,
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				err = c.(*tls.Conn).Handshake()
				c.Close()
			}
			done <- err
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Fatalf("TLS %x handshake: %v", v, err)
		}
		if got := c.ConnectionState().Version; got != v {
			t.Errorf("version %x, want %x", got, v)
		}
		c.Close()
		if err := <-done; err != nil {
			t.Errorf("server handshake: %v", err)
		}
		ln.Close()
	}
}
