package main

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5"
)

// onvifSim starts camsim with ONVIF over HTTP and HTTPS and returns its
// addresses and the path of its state file.
func onvifSim(t *testing.T, cameras int, extra ...string) (testSim, string) {
	t.Helper()
	state := filepath.Join(t.TempDir(), "onvif-state.json")
	args := append([]string{"-onvif", "127.0.0.1:0", "-onvifs", "127.0.0.1:0", "-onvif-state", state,
		"-onvif-reboot", "200ms", "-cameras", fmt.Sprint(cameras)}, extra...)
	ts := startSim(t, args...)
	if len(ts.ONVIF) != cameras {
		t.Fatalf("ready file lists %d ONVIF devices, want %d", len(ts.ONVIF), cameras)
	}
	return ts, state
}

func readState(t *testing.T, path string) map[string]onvifState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]onvifState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// soapCall sends one operation with a WS-UsernameToken digest (empty user:
// none) and returns the HTTP status and body.
func soapCall(t *testing.T, url, user, pass, body string) (int, string) {
	t.Helper()
	return soapCallToken(t, url, token(user, pass, time.Now()), body)
}

func token(user, pass string, created time.Time) string {
	if user == "" {
		return ""
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	c := created.UTC().Format(time.RFC3339Nano)
	h := sha1.New()
	h.Write(nonce)
	h.Write([]byte(c))
	h.Write([]byte(pass))
	return fmt.Sprintf(`<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:UsernameToken><wsse:Username>%s</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">%s</wsse:Password><wsse:Nonce>%s</wsse:Nonce><wsu:Created>%s</wsu:Created></wsse:UsernameToken></wsse:Security>`,
		user, base64.StdEncoding.EncodeToString(h.Sum(nil)), base64.StdEncoding.EncodeToString(nonce), c)
}

var insecureClient = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

func soapCallToken(t *testing.T, url, tok, body string) (int, string) {
	t.Helper()
	env := `<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:trt="http://www.onvif.org/ver10/media/wsdl"><s:Header>` + tok + `</s:Header><s:Body>` + body + `</s:Body></s:Envelope>`
	res, err := insecureClient.Post(url, "application/soap+xml", strings.NewReader(env))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

func TestONVIFAuthentication(t *testing.T) {
	ts, _ := onvifSim(t, 1)
	url := "http://" + ts.ONVIF[0].HTTP + "/onvif/device_service"
	info := `<tds:GetDeviceInformation/>`

	if code, body := soapCall(t, url, "", "", `<tds:GetSystemDateAndTime/>`); code != 200 || !strings.Contains(body, "UTCDateTime") {
		t.Fatalf("GetSystemDateAndTime without credentials: %d %s", code, body)
	}
	if code, body := soapCall(t, url, "", "", info); code == 200 || !strings.Contains(body, "NotAuthorized") {
		t.Fatalf("GetDeviceInformation without credentials: %d %s", code, body)
	}
	if code, _ := soapCall(t, url, testUser, "wrong", info); code == 200 {
		t.Fatal("wrong password accepted")
	}
	tok := token(testUser, testPassword, time.Now())
	if code, body := soapCallToken(t, url, tok, info); code != 200 || !strings.Contains(body, "CamSim-1080") {
		t.Fatalf("GetDeviceInformation: %d %s", code, body)
	}
	if code, _ := soapCallToken(t, url, tok, info); code == 200 {
		t.Fatal("replayed token accepted")
	}
	if code, _ := soapCallToken(t, url, token(testUser, testPassword, time.Now().Add(-time.Hour)), info); code == 200 {
		t.Fatal("stale token accepted")
	}
	plain := strings.Replace(token(testUser, testPassword, time.Now()), "#PasswordDigest", "#PasswordText", 1)
	if code, _ := soapCallToken(t, url, plain, info); code == 200 {
		t.Fatal("plain-text password type accepted")
	}
	// The HTTPS endpoint presents the certificate whose hash the state lists.
	if code, body := soapCall(t, "https://"+ts.ONVIF[0].HTTPS+"/onvif/device_service", testUser, testPassword, `<tds:GetCapabilities/>`); code != 200 || !strings.Contains(body, "https://") {
		t.Fatalf("GetCapabilities over HTTPS: %d %s", code, body)
	}
	for _, evil := range []string{
		`<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>`,
		strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100),
	} {
		res, err := insecureClient.Post(url, "application/soap+xml", strings.NewReader(evil))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("hostile request: status %d, want 400", res.StatusCode)
		}
	}
}

func TestONVIFUsersAndRTSP(t *testing.T) {
	ts, state := onvifSim(t, 2)
	url := "http://" + ts.ONVIF[0].HTTP + "/onvif/device_service"
	const newPass = "Zq9-generated-password-of-40-characters!"
	code, body := soapCall(t, url, testUser, testPassword,
		`<tds:SetUser><tds:User><tt:Username>`+testUser+`</tt:Username><tt:Password>`+newPass+`</tt:Password><tt:UserLevel>Administrator</tt:UserLevel></tds:User></tds:SetUser>`)
	if code != 200 {
		t.Fatalf("SetUser: %d %s", code, body)
	}
	if code, _ := soapCall(t, url, testUser, testPassword, `<tds:GetDeviceInformation/>`); code == 200 {
		t.Fatal("old password still works after SetUser")
	}
	if code, body := soapCall(t, url, testUser, newPass, `<tds:GetUsers/>`); code != 200 || strings.Contains(body, newPass) {
		t.Fatalf("GetUsers with the new password: %d (passwords must not be listed)", code)
	}
	st := readState(t, state)
	if st["cam1"].Users[0].Password != newPass || st["cam2"].Users[0].Password != testPassword {
		t.Fatal("state file does not show the change on cam1 only")
	}
	// RTSP follows the camera's ONVIF users.
	r := play(t, ts.url("rtsp", ts.RTSP, testUser, newPass, "cam1"), gortsplib.ProtocolTCP, nil)
	r.waitAUs(t, 3)
	if _, err := ffprobe(t, ts.url("rtsp", ts.RTSP, testUser, testPassword, "cam1")); err == nil {
		t.Fatal("RTSP accepted the old password of cam1")
	}
	// A device can be told to refuse SetUser.
	ctl(t, ts, "/onvif/fault?cam=cam2&kind=reject-setuser")
	code, _ = soapCall(t, "http://"+ts.ONVIF[1].HTTP+"/onvif/device_service", testUser, testPassword,
		`<tds:SetUser><tds:User><tt:Username>`+testUser+`</tt:Username><tt:Password>x</tt:Password><tt:UserLevel>Administrator</tt:UserLevel></tds:User></tds:SetUser>`)
	if code == 200 {
		t.Fatal("SetUser succeeded on a device told to refuse it")
	}
}

func ctl(t *testing.T, ts testSim, pathQuery string) {
	t.Helper()
	res, err := http.Post("http://"+ts.Control+pathQuery, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("control %s: %d %s", pathQuery, res.StatusCode, b)
	}
}

// firmwareImage builds a camsim firmware image; corrupt breaks its checksum.
func firmwareImage(version string, corrupt bool) []byte {
	payload := []byte("firmware payload for " + version)
	sum := sha256.Sum256(payload)
	if corrupt {
		payload[0] ^= 0xff
	}
	return append([]byte(fmt.Sprintf("%s\nmodel: %s\nversion: %s\nsha256: %s\n\n", firmwareMagic, firmwareModel, version, hex.EncodeToString(sum[:]))), payload...)
}

func TestONVIFFirmware(t *testing.T) {
	ts, state := onvifSim(t, 1)
	url := "https://" + ts.ONVIF[0].HTTPS + "/onvif/device_service"
	upload := func(img []byte) int {
		code, body := soapCall(t, url, testUser, testPassword, `<tds:StartFirmwareUpgrade/>`)
		if code != 200 {
			t.Fatalf("StartFirmwareUpgrade: %d %s", code, body)
		}
		uri := body[strings.Index(body, "<tds:UploadUri>")+len("<tds:UploadUri>") : strings.Index(body, "</tds:UploadUri>")]
		res, err := insecureClient.Post(uri, "application/octet-stream", strings.NewReader(string(img)))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		// The token is single-use.
		res2, err := insecureClient.Post(uri, "application/octet-stream", strings.NewReader(string(img)))
		if err != nil {
			t.Fatal(err)
		}
		res2.Body.Close()
		if res2.StatusCode != http.StatusNotFound {
			t.Errorf("second upload to the same URI: %d, want 404", res2.StatusCode)
		}
		return res.StatusCode
	}
	if code := upload(firmwareImage("2.0.0", true)); code == 200 {
		t.Fatal("image with a bad checksum accepted")
	}
	if st := readState(t, state)["cam1"]; st.Firmware != "1.0.0" {
		t.Fatalf("firmware %s after a refused image", st.Firmware)
	}
	if code := upload(firmwareImage("2.0.0", false)); code != 200 {
		t.Fatalf("good image: status %d", code)
	}
	waitFor(t, 5*time.Second, "reboot to end", func() bool {
		code, _ := soapCall(t, url, "", "", `<tds:GetSystemDateAndTime/>`)
		return code == 200
	})
	if _, body := soapCall(t, url, testUser, testPassword, `<tds:GetDeviceInformation/>`); !strings.Contains(body, "<tds:FirmwareVersion>2.0.0<") {
		t.Fatalf("firmware not updated: %s", body)
	}
	// UpgradeSystemFirmware with the image inline.
	code, body := soapCall(t, url, testUser, testPassword, `<tds:UpgradeSystemFirmware><tds:Firmware><tt:Data>`+
		base64.StdEncoding.EncodeToString(firmwareImage("2.1.0", false))+`</tt:Data></tds:Firmware></tds:UpgradeSystemFirmware>`)
	if code != 200 {
		t.Fatalf("UpgradeSystemFirmware: %d %s", code, body)
	}
	if st := readState(t, state)["cam1"]; st.Firmware != "2.1.0" || st.FirmwareUpdated.IsZero() || st.Reboots != 2 {
		t.Fatalf("after UpgradeSystemFirmware: %+v", st)
	}
}

var npmOnce struct {
	done bool
	err  error
}

// nodeCheck returns the directory of test/onvif-node with its modules
// installed (npm ci from the committed lock file).
func nodeCheck(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../test/onvif-node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node not found (node 20 and npm are needed for the third-party ONVIF client check): %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "onvif", "package.json")); err != nil && !npmOnce.done {
		npmOnce.done = true
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			npmOnce.err = fmt.Errorf("npm ci: %v\n%s", err, out)
		}
	}
	if npmOnce.err != nil {
		t.Fatal(npmOnce.err)
	}
	return dir
}

// TestNPMOnvifClient checks camsim with the npm onvif client: device
// information, profiles, stream URI and a tamper event over a pull point.
func TestNPMOnvifClient(t *testing.T) {
	dir := nodeCheck(t)
	ts, _ := onvifSim(t, 2)
	_, port, _ := strings.Cut(ts.ONVIF[1].HTTP, ":")
	cmd := exec.Command("node", "check.js", "127.0.0.1", port, testUser)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(testPassword + "\n")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() map[string]any {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("node exited early; stderr: %s", stderr.String())
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("node printed %q: %v", l, err)
			}
			return m
		case <-time.After(30 * time.Second):
			t.Fatalf("no output from node; stderr: %s", stderr.String())
		}
		return nil
	}
	m := next()
	if m["connected"] != true || m["model"] != "CamSim-1080" || m["firmware"] != "1.0.0" {
		t.Fatalf("device information: %v", m)
	}
	if uri, _ := m["uri"].(string); !strings.HasSuffix(uri, "/cam2") || !strings.HasPrefix(uri, "rtsp://127.0.0.1:") {
		t.Fatalf("stream URI %v", m["uri"])
	}
	// The subscription is made right after the first line: raise the event until it is seen.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctl(t, ts, "/onvif/event?cam=cam2&kind=tamper&value=true")
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("node exited; stderr: %s", stderr.String())
			}
			if strings.Contains(l, "eventsError") {
				t.Fatalf("node: %s", l)
			}
			if !strings.Contains(l, topicTamper) || !strings.Contains(l, `"state":true`) {
				t.Fatalf("event line %s", l)
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("npm onvif saw no tamper event")
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 5 * time.Second, "PT1M": time.Minute, "PT0.5S": 500 * time.Millisecond, "PT1H2M3S": time.Hour + 2*time.Minute + 3*time.Second} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"P1D", "PT", "PTS", "PT-1S", "PT1X", "5s"} {
		if _, err := parseDuration(bad); err == nil {
			t.Errorf("parseDuration(%q) accepted", bad)
		}
	}
}
