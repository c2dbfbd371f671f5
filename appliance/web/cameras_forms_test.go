package web

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
)

const sumA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// cameraFormCases feed the table tests and seed FuzzCameraForms.
var cameraFormCases = []struct {
	name, body string
	adoptOK    bool
	rolloutOK  bool
}{
	{"adopt https", "https=10.1.2.3%3A443&username=admin&password=factory-pw&name=Gate", true, false},
	{"adopt http only", "http=%5Bfe80%3A%3A1%5D%3A80&username=admin&password=x", true, false},
	{"adopt pinned cert", "https=cam.local%3A443&username=admin&password=x&cert_sha256=9F%3A86%3Ad0%3A81%3A88%3A4c%3A7d%3A65%3A9a%3A2f%3Aea%3Aa0%3Ac5%3A5a%3Ad0%3A15%3Aa3%3Abf%3A4f%3A1b%3A2b%3A0b%3A82%3A2c%3Ad1%3A5d%3A6c%3A15%3Ab0%3Af0%3A0a%3A08", true, false},
	{"adopt no address", "username=admin&password=x", false, false},
	{"adopt bad address", "https=10.1.2.3&username=admin&password=x", false, false},
	{"adopt no password", "https=10.1.2.3%3A443&username=admin", false, false},
	{"adopt control char", "https=10.1.2.3%3A443&username=ad%0Amin&password=x", false, false},
	{"adopt short cert", "https=10.1.2.3%3A443&username=admin&password=x&cert_sha256=abcd", false, false},
	{"rollout", "model=CamSim-1080&version=2.0.0&sha256=" + sumA + "&camera=cam-a&camera=cam-b&canary=1", false, true},
	{"rollout first", "model=CamSim-1080&version=2.0.0&sha256=" + sumA + "&camera=cam-a&camera=cam-b&first=cam-b", false, true},
	{"rollout first not chosen", "model=M&version=2&sha256=" + sumA + "&camera=cam-a&first=cam-z", false, false},
	{"rollout no camera", "model=M&version=2&sha256=" + sumA, false, false},
	{"rollout bad id", "model=M&version=2&sha256=" + sumA + "&camera=..%2Fetc", false, false},
	{"rollout bad canary", "model=M&version=2&sha256=" + sumA + "&camera=a&canary=-1", false, false},
	{"rollout bad sum", "model=M&version=2&sha256=zz&camera=a", false, false},
}

func TestCameraForms(t *testing.T) {
	for _, tc := range cameraFormCases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := decodeForm([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req, err := parseAdoptForm(f)
			if (err == nil) != tc.adoptOK {
				t.Errorf("adopt: %v", err)
			}
			if pw := f.Get("password"); err != nil && len(pw) > 3 && strings.Contains(err.Error(), pw) {
				t.Error("the password is in the error")
			}
			if err == nil && tc.name == "adopt pinned cert" && req.CertSHA256 != sumA {
				t.Errorf("fingerprint %q", req.CertSHA256)
			}
			r, err := parseRolloutForm(f)
			if (err == nil) != tc.rolloutOK {
				t.Errorf("rollout: %v", err)
			}
			if err == nil && tc.name == "rollout first" && (len(r.Cameras) != 2 || r.Cameras[0] != "cam-b") {
				t.Errorf("canary order %v", r.Cameras)
			}
		})
	}
}

func TestFirmwareUploadLimits(t *testing.T) {
	ct, body := multipartBody(t, [][2]string{{"csrf", "tok"}, {"model", "M"}}, []byte("image bytes"))
	up, err := readFirmwareUpload(ct, body, 1<<20)
	if err != nil || string(up.Image) != "image bytes" || up.Fields.Get("model") != "M" || up.FileName != "camsim-2.0.0.bin" {
		t.Fatalf("upload: %+v %v", up, err)
	}
	ct, body = multipartBody(t, nil, bytes.Repeat([]byte{1}, 2048))
	if _, err := readFirmwareUpload(ct, body, 1024); !errors.Is(err, errBadUpload) {
		t.Errorf("oversized image: %v", err)
	}
	ct, body = multipartBody(t, [][2]string{{"x", strings.Repeat("a", maxUploadFieldBytes+1)}}, nil)
	if _, err := readFirmwareUpload(ct, body, 1024); !errors.Is(err, errBadUpload) {
		t.Errorf("oversized field: %v", err)
	}
	var many [][2]string
	for range maxUploadParts + 1 {
		many = append(many, [2]string{"camera", "a"})
	}
	ct, body = multipartBody(t, many, nil)
	if _, err := readFirmwareUpload(ct, body, 1024); !errors.Is(err, errBadUpload) {
		t.Errorf("too many parts: %v", err)
	}
	if _, err := readFirmwareUpload("application/x-www-form-urlencoded", strings.NewReader("a=b"), 1024); !errors.Is(err, errBadUpload) {
		t.Errorf("not multipart: %v", err)
	}
}

func TestCameraAPIAuditNames(t *testing.T) {
	for _, tc := range []struct{ method, pattern, id, action, object string }{
		{"POST", "POST /cameras/{id}/rotate", "cam-a", "camera.rotate", "camera/cam-a"},
		{"POST", "POST /cameras/rotate", "", "camera.rotate-all", "cameras"},
		{"POST", "POST /cameras/adopt", "", "camera.adopt", "cameras"},
		{"DELETE", "DELETE /cameras/{id}", "cam-a", "camera.forget", "camera/cam-a"},
		{"POST", "POST /cameras/firmware/rollout", "", "camera.firmware-rollout", "cameras"},
		{"POST", "POST /cameras/{id}/accept", "cam-a", "camera.accept", "camera/cam-a"},
		{"POST", "POST /cameras/{id}/accounts/keep", "cam-a", "camera.account-keep", "camera/cam-a"},
		{"POST", "POST /cameras/{id}/accounts/enforce", "cam-a", "camera.account-enforce", "camera/cam-a"},
		{"POST", "POST /cameras/{id}/accounts/audit", "cam-a", "camera.account-audit", "camera/cam-a"},
		{"POST", "POST /cameras/discover", "", "camera.discover", "cameras"},
	} {
		if a, o := apiAction(tc.method, tc.pattern, tc.id); a != tc.action || o != tc.object {
			t.Errorf("%s: %s %s", tc.pattern, a, o)
		}
	}
	cams := &Cameras{MaxImage: 8 << 20}
	for _, tc := range []struct {
		method, path string
		want         int64
	}{
		{"POST", "/cameras/firmware", 9 << 20},
		{"POST", "/api/v1/cameras/firmware/rollout", maxCameraAPIBody},
		{"POST", "/cameras/adopt", maxBody},
		{"GET", "/cameras/firmware", maxBody},
	} {
		r, _ := http.NewRequest(tc.method, "https://x"+tc.path, nil)
		if got := bodyLimit(r, cams); got != tc.want {
			t.Errorf("%s %s: limit %d, want %d", tc.method, tc.path, got, tc.want)
		}
	}
}

// FuzzCameraForms: the adoption and rollout forms never panic, never accept control characters in what
// they keep, and never put the password in an error.
func FuzzCameraForms(f *testing.F) {
	for _, tc := range cameraFormCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := decodeForm(body)
		if err != nil {
			return
		}
		if req, err := parseAdoptForm(v); err == nil {
			for _, s := range []string{req.HTTP, req.HTTPS, req.Username, req.Name} {
				if s != cleanText(s, 1<<10) {
					t.Fatalf("kept control characters: %q", s)
				}
			}
		} else if pw := v.Get("password"); len(pw) > 3 && strings.Contains(err.Error(), pw) {
			t.Fatal("password in the error")
		}
		if r, err := parseRolloutForm(v); err == nil {
			if len(r.SHA256) != 64 || r.Canary < 1 || len(r.Cameras) == 0 {
				t.Fatalf("accepted %+v", r)
			}
			for _, id := range r.Cameras {
				if !validCameraID(id) {
					t.Fatalf("camera id %q", id)
				}
			}
		}
	})
}

// FuzzFirmwareUpload: any body is read within the limits or refused with errBadUpload.
func FuzzFirmwareUpload(f *testing.F) {
	f.Add("multipart/form-data; boundary=xx", []byte("--xx\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nM\r\n--xx\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.bin\"\r\n\r\nIMG\r\n--xx--\r\n"))
	f.Add("multipart/form-data; boundary=xx", []byte("--xx\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\n1\r\n--xx\r\nContent-Disposition: form-data; name=\"image\"; filename=\"b\"\r\n\r\n2\r\n--xx--\r\n"))
	f.Add("multipart/form-data; boundary=xx", []byte("--xx\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--xx--\r\n"))
	f.Add("multipart/form-data", []byte("--\r\n"))
	f.Add("text/plain", []byte("model=M"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		up, err := readFirmwareUpload(ct, bytes.NewReader(body), 4096)
		if err != nil {
			if !errors.Is(err, errBadUpload) {
				t.Fatalf("error not wrapping errBadUpload: %v", err)
			}
			return
		}
		if len(up.Image) > 4096 || len(up.FileName) > 128 {
			t.Fatalf("limits not held: %d bytes", len(up.Image))
		}
		sum := 0
		for k, vs := range up.Fields {
			for _, v := range vs {
				sum += len(k) + len(v)
			}
		}
		if sum > maxUploadFieldsSum {
			t.Fatalf("fields %d bytes", sum)
		}
	})
}
