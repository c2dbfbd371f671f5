package web

import (
	"net/http"
	"testing"
)

// FuzzDecodeForm feeds arbitrary bodies to the form decoder: it must not panic, and what it accepts
// stays within the limits.
func FuzzDecodeForm(f *testing.F) {
	for _, s := range []string{"", "csrf=abc&name=admin&password=x", "a=%zz", "a=1&a=2&a=3", "=&=&=", "code=AAAA-BBBB-CCCC"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := decodeForm(body)
		if err != nil {
			return
		}
		if len(v) > maxFields {
			t.Fatalf("%d fields accepted", len(v))
		}
		for k, vs := range v {
			if len(k) > 64 || len(vs) > 16 {
				t.Fatal("oversized field accepted")
			}
			for _, x := range vs {
				if len(x) > maxFieldBytes {
					t.Fatal("oversized value accepted")
				}
			}
		}
	})
}

// FuzzCookie feeds arbitrary Cookie headers to the session and login cookie readers.
func FuzzCookie(f *testing.F) {
	for _, s := range []string{"", sessionCookie + "=abc", sessionCookie + "=a; " + sessionCookie + "=b", loginCookie + "=" + string(make([]byte, 200)),
		preCSRFCookie + "=\"quoted\"", "a=b; c", ";;;="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r, err := http.NewRequest("GET", "https://localhost/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Cookie", header)
		for _, name := range []string{sessionCookie, loginCookie, preCSRFCookie} {
			v := cookieValue(r, name)
			if v != "" && validToken(v) != v {
				t.Fatalf("cookie %s: invalid value accepted", name)
			}
			if len(v) > 96 {
				t.Fatalf("cookie %s: %d bytes accepted", name, len(v))
			}
		}
	})
}
