package camera

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAPI drives the camera API as the pages will: refusals without the
// right, adoption, inventory, rotation and the stale-firmware report, with
// no password in any answer.
func TestAPI(t *testing.T) {
	s := startSim(t, 1)
	m, _ := newManager(t, t.TempDir(), testTPM(t), &syncBuffer{}, nil)
	authz := func(r *http.Request, right string) error {
		if r.Header.Get("X-Test-Rights") == "all" || (right == RightView && r.Header.Get("X-Test-Rights") == "view") {
			return nil
		}
		return errors.New("no")
	}
	srv := httptest.NewServer(m.Handler(authz, func() []Release { return []Release{{Model: "CamSim-1080", Version: "3.0"}} }))
	defer srv.Close()
	do := func(method, path, rights string, body any) (int, string) {
		t.Helper()
		var b bytes.Buffer
		if body != nil {
			json.NewEncoder(&b).Encode(body)
		}
		req, _ := http.NewRequestWithContext(context.Background(), method, srv.URL+path, &b)
		req.Header.Set("X-Test-Rights", rights)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out bytes.Buffer
		out.ReadFrom(res.Body)
		return res.StatusCode, out.String()
	}
	req := AdoptRequest{HTTPS: s.ONVIF[0].HTTPS, HTTP: s.ONVIF[0].HTTP, Username: factoryUser, Password: factoryPass}
	if code, _ := do("POST", "/cameras/adopt", "view", req); code != http.StatusForbidden {
		t.Fatalf("adopt with view rights: %d", code)
	}
	code, body := do("POST", "/cameras/adopt", "all", req)
	if code != 200 {
		t.Fatalf("adopt: %d %s", code, body)
	}
	var c CameraView
	json.Unmarshal([]byte(body), &c)
	code, body = do("GET", "/cameras", "view", nil)
	if code != 200 || !strings.Contains(body, c.ID) || !strings.Contains(body, `"supports_dot1x":true`) {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body := do("POST", "/cameras/"+c.ID+"/rotate", "all", nil); code != 200 {
		t.Fatalf("rotate: %d %s", code, body)
	}
	code, body = do("POST", "/cameras/rotate", "all", map[string][]string{"cameras": {c.ID}})
	if code != 200 || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("bulk rotate: %d %s", code, body)
	}
	if code, body := do("GET", "/cameras/firmware/stale", "view", nil); code != 200 || !strings.Contains(body, `"latest":"3.0"`) {
		t.Fatalf("stale: %d %s", code, body)
	}
	if code, body := do("POST", "/cameras/adopt", "all", AdoptRequest{HTTP: s.ONVIF[0].HTTP, Username: factoryUser, Password: factoryPass}); code == 200 || !strings.Contains(body, "no HTTPS") {
		t.Fatalf("plain HTTP adoption: %d %s", code, body)
	}
	if code, _ := do("GET", "/cameras/nope", "view", nil); code != http.StatusNotFound {
		t.Fatalf("unknown camera: %d", code)
	}
	if code, _ := do("POST", "/cameras/adopt", "all", map[string]string{"bogus": "x"}); code != http.StatusBadRequest {
		t.Fatalf("bad body: %d", code)
	}
	_, all := do("GET", "/cameras", "view", nil)
	noSecretIn(t, "the API", all+body, s.password(t, "cam1"), factoryPass)
}
