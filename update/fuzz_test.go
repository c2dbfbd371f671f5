package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

// FuzzParseTargetCustom: the custom field of a signed target (the fleet server's words about a bundle).
func FuzzParseTargetCustom(f *testing.F) {
	f.Add("x86-generic/nvr-1.2.3.raucb", []byte(`{"board":"x86-generic","compatible":"nvr-x86","version":"1.2.3"}`))
	f.Fuzz(func(t *testing.T, p string, custom []byte) {
		tg, err := ParseTargetCustom(p, custom)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		v, err := ParseVersion(tg.Version)
		if err != nil || TargetPath(tg.Board, v) != p || !ValidName(tg.Board) || !ValidName(tg.Compatible) {
			t.Fatalf("accepted inconsistent target %q %+v", p, tg)
		}
	})
}

// FuzzParseBundleInfo: a bundle's manifest as RAUC reports it, checked against the signed target.
func FuzzParseBundleInfo(f *testing.F) {
	f.Add([]byte(`{"compatible":"nvr-x86","version":"1.2.3","images":[]}`), "1.2.3")
	f.Fuzz(func(t *testing.T, b []byte, tv string) {
		info, err := ParseBundleInfo(b)
		if err != nil {
			return
		}
		if _, err := ParseVersion(info.Version); err != nil {
			t.Fatalf("accepted bad version %q", info.Version)
		}
		tg := Target{Board: "b", Compatible: info.Compatible, Version: tv}
		err = CheckBundle(info, tg, info.Compatible, Version{})
		if err == nil && info.Version != tv {
			t.Fatalf("bundle %q accepted for target %q", info.Version, tv)
		}
	})
}

// FuzzParseSlotStatus: RAUC's status report.
func FuzzParseSlotStatus(f *testing.F) {
	f.Add([]byte(`{"compatible":"nvr-x86","booted":"A","boot_primary":"rootfs.0","slots":[{"rootfs.0":{"class":"rootfs","device":"/dev/vda2","type":"raw","bootname":"A","state":"booted","boot_status":"good"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseSlotStatus(b)
		if err != nil {
			return
		}
		st.BootedSlot()
	})
}

// FuzzParseEnv: a boot environment listing.
func FuzzParseEnv(f *testing.F) {
	f.Add([]byte("ORDER=A B\nA_OK=1\nA_TRY=0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := ParseEnv(b)
		if err != nil {
			return
		}
		for k := range env {
			if k == "" {
				t.Fatal("empty name accepted")
			}
		}
	})
}

// FuzzDownload: whatever a fleet server sends as a bundle, only the exact signed bytes are kept.
func FuzzDownload(f *testing.F) {
	signed := bytes.Repeat([]byte("bundle"), 100)
	f.Add(signed)
	f.Add(append(append([]byte(nil), signed...), 0))
	f.Add(signed[:10])
	f.Fuzz(func(t *testing.T, body []byte) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
		defer srv.Close()
		c, err := NewClient(ClientConfig{RepositoryURL: srv.URL, TrustedRoot: []byte("{}"), StateDir: t.TempDir(),
			Board: "b", MaxBundleSize: 4096, Now: time.Now}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(signed)
		p, err := c.Download(context.Background(), Target{Path: "b/nvr-1.0.0.raucb", Length: int64(len(signed)), SHA256: sum[:]})
		if bytes.Equal(body, signed) {
			if err != nil {
				t.Fatalf("signed bytes refused: %v", err)
			}
			got, _ := os.ReadFile(p)
			if !bytes.Equal(got, signed) {
				t.Fatal("kept bytes differ")
			}
			return
		}
		if err == nil {
			t.Fatalf("accepted %d bytes that are not the signed bundle", len(body))
		}
		if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("unclassified rejection: %v", err)
		}
	})
}
