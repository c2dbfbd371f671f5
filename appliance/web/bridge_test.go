package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/bridge"
	"github.com/edgenvr/nvr/appliance/record"
)

// testBridgeStore is the appliance's adapter (appliance/bridgewire.go) over the real credential store,
// rebuilt here because web cannot import the appliance; the e2e test drives the appliance's own.
type testBridgeStore struct {
	az    *authz.Service
	creds *bridge.Credentials

	mu        sync.Mutex
	listeners []BridgeListener
}

func (s *testBridgeStore) Issue(u authz.User) (string, BridgeCredential, error) {
	secret, info, err := s.creds.Issue(u)
	if errors.Is(err, bridge.ErrNotHolder) {
		return "", BridgeCredential{}, fmt.Errorf("%w: %v", ErrBridgeRefused, err)
	}
	if err != nil {
		return "", BridgeCredential{}, err
	}
	return secret, BridgeCredential{User: info.User, Serial: info.Serial, Issued: info.Issued}, nil
}

func (s *testBridgeStore) Revoke(user string) error {
	if err := s.creds.Revoke(user); errors.Is(err, bridge.ErrNoCredential) {
		return ErrNoBridgeCredential
	} else {
		return err
	}
}

func (s *testBridgeStore) Get(user string) (BridgeCredential, bool) {
	info, ok := s.creds.Info(user)
	return BridgeCredential{User: info.User, Serial: info.Serial, Issued: info.Issued}, ok
}

func (s *testBridgeStore) List() []BridgeCredential {
	var out []BridgeCredential
	for _, info := range s.creds.List() {
		c := BridgeCredential{User: info.User, Serial: info.Serial, Issued: info.Issued}
		if u, err := s.az.User(info.User); err != nil {
			c.State = "account deleted"
		} else if err := bridge.CheckHolder(u); err != nil {
			c.State = err.Error()
		} else if !s.az.Visible(authz.Subject{User: u.Name, Via: bridge.Door(u)}, authz.UseBridge) {
			c.State = "no role grants system.bridge any more"
		}
		out = append(out, c)
	}
	return out
}

func (s *testBridgeStore) Listeners() []BridgeListener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]BridgeListener(nil), s.listeners...)
}

// clipLive serves every camera live from a real H.264 clip (made with ffmpeg's libx264), cut into
// one-second fMP4 fragments stamped with the time they are sent, as the recorder's fan-out does.
type clipLive struct {
	init  []byte
	aus   [][][]byte // access units (NAL units without start codes)
	keyAt []bool
}

func newClipLive(t testing.TB) *clipLive {
	t.Helper()
	out := filepath.Join(t.TempDir(), "clip.h264")
	cmd := exec.Command("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-t", "2", "-c:v", "libx264", "-profile:v", "baseline", "-g", "25", "-bf", "0", "-x264-params", "repeat-headers=1",
		"-pix_fmt", "yuv420p", "-f", "h264", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	nalus := splitAnnexB(raw)
	c := &clipLive{}
	var sps, pps []byte
	var pending [][]byte
	for _, n := range nalus {
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		case h264.NALUTypeAccessUnitDelimiter:
			continue
		}
		pending = append(pending, n)
		if typ := h264.NALUType(n[0] & 0x1f); typ == h264.NALUTypeIDR || typ == h264.NALUTypeNonIDR {
			c.aus = append(c.aus, pending)
			c.keyAt = append(c.keyAt, typ == h264.NALUTypeIDR)
			pending = nil
		}
	}
	if sps == nil || pps == nil || len(c.aus) < 50 || !c.keyAt[0] {
		t.Fatalf("clip: %d access units, SPS %v, PPS %v", len(c.aus), sps != nil, pps != nil)
	}
	in := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: record.TimeScale, Codec: &fmp4.CodecH264{SPS: sps, PPS: pps}}}}
	var b seekablebuffer.Buffer
	if err := in.Marshal(&b); err != nil {
		t.Fatal(err)
	}
	c.init = b.Bytes()
	return c
}

// splitAnnexB cuts an H.264 byte stream at its start codes (mediacommon's parser caps the NAL units per
// buffer, made for one access unit).
func splitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				out = append(out, bytes.TrimRight(b[start:i], "\x00"))
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// fragment is the n-th second of the clip (cycling), starting at start.
func (c *clipLive) fragment(n int, start time.Time) ([]byte, error) {
	var samples []*fmp4.Sample
	first := (n * 25) % len(c.aus)
	for i := range 25 {
		au := c.aus[(first+i)%len(c.aus)]
		s, err := fmp4.NewSampleH264(0, au)
		if err != nil {
			return nil, err
		}
		s.Duration = record.TimeScale / 25
		s.IsNonSyncSample = !c.keyAt[(first+i)%len(c.aus)]
		samples = append(samples, s)
	}
	base := start.Unix()*record.TimeScale + int64(start.Nanosecond())*record.TimeScale/int64(time.Second)
	p := fmp4.Part{Tracks: []*fmp4.PartTrack{{ID: 1, BaseTime: uint64(base), Samples: samples}}}
	var b seekablebuffer.Buffer
	if err := p.Marshal(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// subscribe is a bridge.LiveSource: the init segment, then a fragment a second until cancelled.
func (c *clipLive) subscribe(string) (<-chan record.LiveFragment, func(), error) {
	ch := make(chan record.LiveFragment, 8)
	done := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(ch)
		ch <- record.LiveFragment{Init: c.init}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		start := time.Now()
		for n := 0; ; n++ {
			data, err := c.fragment(n, start.Add(time.Duration(n)*time.Second))
			if err != nil {
				return
			}
			select {
			case ch <- record.LiveFragment{Data: data, Key: true}:
			case <-done:
				return
			}
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	}()
	return ch, func() { once.Do(func() { close(done) }) }, nil
}

// bridgeEnv is a web server with a real bridge beside it, sharing its accounts and credential store.
type bridgeEnv struct {
	*env
	store *testBridgeStore
	rtsp  string // the bridge's host:port
}

func startBridgeEnv(t *testing.T) *bridgeEnv {
	t.Helper()
	creds, err := bridge.OpenCredentials(t.TempDir(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := &testBridgeStore{creds: creds}
	e := startEnv(t, func(c *Config) { c.Bridge = st })
	st.az = e.az
	live := newClipLive(t)
	ready := make(chan net.Addr, 1)
	br, err := bridge.New(bridge.Config{RTSPAddr: "127.0.0.1:0", Authz: e.az, Credentials: creds, Live: live.subscribe,
		Ready: func(rtsp, _ net.Addr) { ready <- rtsp }}, e.srv.log.With("part", "bridge"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bridge: %v", err)
		}
	})
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("bridge: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge did not listen")
	}
	st.mu.Lock()
	st.listeners = []BridgeListener{{Scheme: "rtsp", Addr: addr.String()}}
	st.mu.Unlock()
	return &bridgeEnv{env: e, store: st, rtsp: addr.String()}
}

// ffprobe reads a stream of the bridge as user with secret ("" for none) and returns the codec and width
// it saw, or ffprobe's error output.
func (e *bridgeEnv) ffprobe(path, user, secret string) (string, int, string) {
	e.t.Helper()
	u := url.URL{Scheme: "rtsp", Host: e.rtsp, Path: path}
	if user != "" {
		u.User = url.UserPassword(user, secret)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name,width",
		"-of", "json", u.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", 0, stderr.String()
	}
	var res struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Width     int
		}
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Streams) != 1 {
		return "", 0, fmt.Sprintf("ffprobe output %q", out)
	}
	return res.Streams[0].CodecName, res.Streams[0].Width, stderr.String()
}

// audited reports whether the audit log holds an entry of action on object with result by subject.
func (e *env) audited(action, object, result, subject string) bool {
	es, err := e.az.AuditEntries(authz.AuditFilter{Action: action, Limit: 500})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, en := range es {
		if en.Object == object && en.Result == result && strings.HasPrefix(en.Subject, subject) {
			return true
		}
	}
	return false
}

var bridgeSecretRE = regexp.MustCompile(`id="bridge-secret">(nvrb_[A-Za-z0-9_-]+)<`)

// TestBridgeCredentialRules: who may issue, list and revoke which bridge credential, through the page and
// the API, each decided and audited; what disabling and deleting an account does; no credential in a log,
// a URL or the audit log.
func TestBridgeCredentialRules(t *testing.T) {
	e := startBridgeEnv(t)
	adminC := e.client("")
	adminSecret := e.adminSetup(adminC, "admin", adminPassword)
	e.login(adminC, "admin", adminPassword, adminSecret)
	admin := authz.Subject{User: "admin", Via: "session"}
	bridgeRight := []authz.Action{authz.UseBridge}
	for _, r := range []authz.Role{
		{Name: "cam1-viewer", Cameras: map[string][]authz.Action{"cam1": {authz.Live}}, System: bridgeRight},
		{Name: "gate-playback", Cameras: map[string][]authz.Action{"gate": {authz.Playback}}, System: bridgeRight},
		{Name: "status-only", System: []authz.Action{authz.ViewStatus}},
		{Name: "cam1-watch", Cameras: map[string][]authz.Action{"cam1": {authz.Live}}},
	} {
		if err := e.az.PutRole(admin, r, ""); err != nil {
			t.Fatal(err)
		}
	}
	const pw = "lantern brook 42 cedar"
	for _, u := range []authz.NewUser{
		{Name: "viewer", Password: pw, Roles: []string{"cam1-viewer"}},
		{Name: "guard", Password: pw, Roles: []string{"gate-playback"}},
		{Name: "clerk", Password: pw, Roles: []string{"status-only"}},
		{Name: "watcher", Password: pw, Roles: []string{"cam1-watch"}},
		{Name: "vms", Service: true, Roles: []string{"cam1-viewer"}},
		{Name: "feed", Service: true, Roles: []string{"cam1-watch"}},
	} {
		if err := e.az.CreateUser(admin, u, ""); err != nil {
			t.Fatal(err)
		}
	}
	var secrets []string
	pagePost := func(c *http.Client, f url.Values) (int, string) {
		t.Helper()
		_, _, tok := e.get(c, "/bridge")
		f.Set("csrf", tok)
		resp := e.post(c, "/bridge", f)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	viewerC := e.client("")
	e.enrolLogin(viewerC, "viewer", pw)
	if code, body, _ := e.get(viewerC, "/bridge"); code != 200 || !strings.Contains(body, "You have no bridge credential") ||
		!strings.Contains(body, "rtsp://"+e.rtsp+"/CAMERA") || strings.Contains(body, "All bridge credentials") {
		t.Fatalf("viewer's bridge page: %d %.2000s", code, body)
	}
	// A person issues their own: shown once, in the page answering the POST.
	code, body := pagePost(viewerC, url.Values{"op": {"issue"}})
	m := bridgeSecretRE.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("issue: %d %.2000s", code, body)
	}
	first := m[1]
	secrets = append(secrets, first)
	if _, again, _ := e.get(viewerC, "/bridge"); strings.Contains(again, first) || !strings.Contains(again, `id="bridge-serial">1<`) {
		t.Fatal("the credential is shown again, or its serial is not")
	}
	if !e.audited("bridge.credential.issue", "user/viewer", "ok", "viewer (session") {
		t.Error("issue not audited")
	}
	// Rotating: serial 2, the first stops working.
	_, body = pagePost(viewerC, url.Values{"op": {"issue"}})
	if m = bridgeSecretRE.FindStringSubmatch(body); m == nil || m[1] == first {
		t.Fatal("rotation gave no new credential")
	}
	second := m[1]
	secrets = append(secrets, second)
	if c, _, msg := e.ffprobe("/cam1", "viewer", first); c != "" || !strings.Contains(msg, "401") {
		t.Errorf("the rotated-out credential: codec %q, %s", c, msg)
	}
	if c, w, msg := e.ffprobe("/cam1", "viewer", second); c != "h264" || w != 320 {
		t.Errorf("the new credential: codec %q width %d: %s", c, w, msg)
	}

	// The bridge right is what lets one hold a credential (one decision, audited); watching a camera
	// without it is not enough, and the page offers no issue button then.
	guardC := e.client("")
	e.enrolLogin(guardC, "guard", pw)
	if code, body := pagePost(guardC, url.Values{"op": {"issue"}}); code != 200 || !bridgeSecretRE.MatchString(body) {
		t.Errorf("guard (playback of gate, bridge right): %d", code)
	}
	if !e.audited("system.bridge", "system", "allow", "guard (session") {
		t.Error("the guard's bridge right is not decided")
	}
	for _, who := range []string{"clerk", "watcher"} {
		wc := e.client("")
		e.enrolLogin(wc, who, pw)
		if _, body, _ := e.get(wc, "/bridge"); !strings.Contains(body, `id="bridge-no-right"`) || strings.Contains(body, `id="bridge-issue"`) {
			t.Errorf("%s's page offers to issue: %.2000s", who, body)
		}
		if code, body := pagePost(wc, url.Values{"op": {"issue"}}); code != 403 || bridgeSecretRE.MatchString(body) ||
			!strings.Contains(body, "no role grants system.bridge") {
			t.Errorf("%s (no bridge right): %d %.1500s", who, code, body)
		}
		if !e.audited("system.bridge", "system", "deny", who+" (session") {
			t.Errorf("the refusal of %s is not audited", who)
		}
	}
	// Nobody issues for someone else, except an administrator for a service account.
	if code, _ := pagePost(viewerC, url.Values{"op": {"issue"}, "name": {"vms"}}); code != 403 {
		t.Errorf("a viewer issued for vms: %d", code)
	}
	if code, body := pagePost(adminC, url.Values{"op": {"issue"}, "name": {"viewer"}}); code != 403 || bridgeSecretRE.MatchString(body) {
		t.Errorf("the admin issued a person's credential: %d", code)
	}
	if !e.audited("bridge.credential.issue", "user/viewer", "refused", "admin") {
		t.Error("the refused issue is not audited")
	}
	// A service account whose roles lack the bridge right gets none, even from an administrator.
	if code, body := pagePost(adminC, url.Values{"op": {"issue"}, "name": {"feed"}}); code != 403 || bridgeSecretRE.MatchString(body) ||
		!strings.Contains(body, "denied for feed") {
		t.Errorf("the admin issued for feed (no bridge right): %d %.1500s", code, body)
	}
	if !e.audited("system.bridge", "system", "deny", "feed") {
		t.Error("feed's missing right is not decided")
	}
	code, body = pagePost(adminC, url.Values{"op": {"issue"}, "name": {"vms"}})
	if m = bridgeSecretRE.FindStringSubmatch(body); code != 200 || m == nil {
		t.Fatalf("admin for vms: %d", code)
	}
	secrets = append(secrets, m[1])
	if !strings.Contains(body, `id="bridge-all"`) || !strings.Contains(body, "<td>viewer</td>") || !strings.Contains(body, "<td>guard</td>") {
		t.Error("the admin's page does not list every credential")
	}

	// The role editor shows the bridge right like the others; taking it away from a role (through the
	// form) stops renewals at once and marks the credentials its holders still have for the administrator.
	_, users, usersTok := e.get(adminC, "/users")
	if !strings.Contains(users, `name="sys_system.bridge" checked`) || strings.Count(users, `name="sys_system.bridge"`) < 5 {
		t.Errorf("the role editor does not show the bridge right: %d forms", strings.Count(users, `name="sys_system.bridge"`))
	}
	resp := e.post(adminC, "/roles", url.Values{"csrf": {usersTok}, "op": {"put"}, "name": {"gate-playback"}, "cameras": {"gate"},
		"cam_camera.playback": {"on"}, "schedule": {""}, "max_age_hours": {"0"}})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("role editor: %d", resp.StatusCode)
	}
	if code, body := pagePost(guardC, url.Values{"op": {"issue"}}); code != 403 || bridgeSecretRE.MatchString(body) ||
		!strings.Contains(body, `id="bridge-no-right"`) || !strings.Contains(body, "can still be revoked") {
		t.Errorf("guard renewed without the right: %d %.1500s", code, body)
	}
	if _, body, _ := e.get(adminC, "/bridge"); !strings.Contains(body, "no role grants system.bridge any more") {
		t.Error("the administrator's list does not mark guard's credential")
	}
	resp = e.post(adminC, "/roles", url.Values{"csrf": {usersTok}, "op": {"put"}, "name": {"gate-playback"}, "cameras": {"gate"},
		"cam_camera.playback": {"on"}, "sys_system.bridge": {"on"}, "schedule": {""}, "max_age_hours": {"0"}})
	resp.Body.Close()
	if rs, _ := e.az.Roles(); resp.StatusCode != 200 || !slices.ContainsFunc(rs, func(r authz.Role) bool {
		return r.Name == "gate-playback" && slices.Contains(r.System, authz.UseBridge)
	}) {
		t.Errorf("the role editor did not grant the bridge right: %d", resp.StatusCode)
	}

	// The API: a service account issues its own with its API token; a session needs the CSRF header.
	vmsToken, err := e.az.IssueToken(admin, "vms", "test", "")
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, vmsToken)
	api := func(c *http.Client, method, path, bearer, csrf string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, e.origin+path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", e.origin)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, out := api(e.client(""), "POST", "/api/v1/bridge/credentials/vms", vmsToken, "")
	vmsCred, _ := out["credential"].(string)
	if code != 200 || !strings.HasPrefix(vmsCred, "nvrb_") || out["serial"] != float64(2) {
		t.Fatalf("vms issues its own: %d %v", code, out["error"])
	}
	secrets = append(secrets, vmsCred)
	if c, _, msg := e.ffprobe("/cam1", "vms", vmsCred); c != "h264" {
		t.Errorf("vms's credential: %s", msg)
	}
	if c, _, msg := e.ffprobe("/cam2", "vms", vmsCred); c != "" || !strings.Contains(msg, "403") {
		t.Errorf("vms on cam2 (not in its role): codec %q, %s", c, msg)
	}
	if code, out := api(e.client(""), "GET", "/api/v1/bridge", vmsToken, ""); code != 200 || out["credential"] == nil || out["credentials"] != nil {
		t.Errorf("vms GET /api/v1/bridge: %d %v", code, out)
	}
	if code, _ := api(e.client(""), "POST", "/api/v1/bridge/credentials/viewer/revoke", vmsToken, ""); code != 403 {
		t.Errorf("vms revoked the viewer's credential: %d", code)
	}
	_, _, adminCSRF := e.get(adminC, "/bridge")
	if code, _ := api(adminC, "POST", "/api/v1/bridge/credentials/guard/revoke", "", ""); code != 403 {
		t.Errorf("a session POST without the CSRF header: %d", code)
	}
	code, out = api(adminC, "GET", "/api/v1/bridge", "", "")
	if all, _ := out["credentials"].([]any); code != 200 || len(all) != 3 {
		t.Errorf("admin GET /api/v1/bridge: %d %v", code, out)
	}
	if code, _ := api(adminC, "POST", "/api/v1/bridge/credentials/guard/revoke", "", adminCSRF); code != 200 {
		t.Errorf("admin revokes guard's: %d", code)
	}
	if code, _ := api(adminC, "POST", "/api/v1/bridge/credentials/guard/revoke", "", adminCSRF); code != 404 {
		t.Errorf("revoking twice: %d", code)
	}
	if !e.audited("bridge.credential.revoke", "user/guard", "ok", "admin (session") {
		t.Error("the revocation is not audited")
	}

	// Disabling an account stops its credential at once (the bridge checks the account at every
	// request) and forgets it, so enabling the account again does not bring it back.
	_, _, tok := e.get(adminC, "/users")
	resp = e.post(adminC, "/users", url.Values{"csrf": {tok}, "op": {"update"}, "name": {"vms"}, "roles": {"cam1-viewer"}, "disabled": {"on"}})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("disable vms: %d", resp.StatusCode)
	}
	if c, _, msg := e.ffprobe("/cam1", "vms", vmsCred); c != "" || !strings.Contains(msg, "401") {
		t.Errorf("a disabled account's credential: codec %q, %s", c, msg)
	}
	if _, ok := e.store.Get("vms"); ok || !e.audited("bridge.credential.revoke", "user/vms", "ok", "admin") {
		t.Error("disabling did not revoke the credential")
	}
	// An account disabled elsewhere (not through the users page) is refused by the bridge all the same.
	if err := e.az.UpdateUser(admin, "viewer", []string{"cam1-viewer"}, false, true, ""); err != nil {
		t.Fatal(err)
	}
	if c, _, msg := e.ffprobe("/cam1", "viewer", second); c != "" || !strings.Contains(msg, "401") {
		t.Errorf("a disabled person's credential: codec %q, %s", c, msg)
	}
	if err := e.az.UpdateUser(admin, "viewer", []string{"cam1-viewer"}, false, false, ""); err != nil {
		t.Fatal(err)
	}
	if c, _, msg := e.ffprobe("/cam1", "viewer", second); c != "h264" {
		t.Errorf("enabled again: %s", msg)
	}
	// Deleted: refused, listed as such until revoked; a new account of the same name inherits nothing.
	if err := e.az.DeleteUser(admin, "viewer", ""); err != nil {
		t.Fatal(err)
	}
	if c, _, msg := e.ffprobe("/cam1", "viewer", second); c != "" || !strings.Contains(msg, "401") {
		t.Errorf("a deleted person's credential: codec %q, %s", c, msg)
	}
	if _, body, _ := e.get(adminC, "/bridge"); !strings.Contains(body, "account deleted") {
		t.Error("the deleted account's credential is not marked")
	}
	if err := e.az.CreateUser(admin, authz.NewUser{Name: "viewer", Password: pw, Roles: []string{"cam1-viewer"}}, ""); err != nil {
		t.Fatal(err)
	}
	if c, _, msg := e.ffprobe("/cam1", "viewer", second); c != "" || !strings.Contains(msg, "401") {
		t.Errorf("a new account of the same name uses the old credential: codec %q, %s", c, msg)
	}

	// No credential in the server's log or in the audit log.
	var audit bytes.Buffer
	if _, err := e.az.ExportAudit(&audit); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "web: request") {
		t.Fatal("no request was logged: the check below would prove nothing")
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) || strings.Contains(audit.String(), s) {
			t.Errorf("a credential (%d characters) is in the log or the audit log", len(s))
		}
	}
}

// TestBrowserBridgeCredential: in Chromium, a viewer issues a bridge credential on the page, ffprobe
// reads a live stream from the bridge with it, and after the viewer revokes it on the page the bridge
// answers 401.
func TestBrowserBridgeCredential(t *testing.T) {
	e := startBridgeEnv(t)
	adminC := e.client("")
	e.adminSetup(adminC, "admin", adminPassword)
	admin := authz.Subject{User: "admin", Via: "session"}
	if err := e.az.PutRole(admin, authz.Role{Name: "cam1-viewer", Cameras: map[string][]authz.Action{"cam1": {authz.Live, authz.Playback}},
		System: []authz.Action{authz.ViewStatus, authz.UseBridge}}, ""); err != nil {
		t.Fatal(err)
	}
	const pw = "thistle harbour 77 amber"
	if err := e.az.CreateUser(admin, authz.NewUser{Name: "viewer1", Password: pw, Roles: []string{"cam1-viewer"}}, ""); err != nil {
		t.Fatal(err)
	}
	secret := e.enrolLogin(e.client(""), "viewer1", pw)
	b := e.browser()
	tab := e.tab(b)
	e.browserLogin(tab, "viewer1", pw, secret)
	e.do(tab, "bridge page", chromedp.Click(chromedp.CSS(`a[href="/bridge"]`)), chromedp.WaitVisible(chromedp.ID("bridge-none")))
	e.do(tab, "issue", chromedp.Click(chromedp.ID("bridge-issue")), chromedp.WaitVisible(chromedp.ID("bridge-secret")))
	cred := e.text(tab, "#bridge-secret")
	if !strings.HasPrefix(cred, "nvrb_") {
		t.Fatalf("credential on the page: %q", cred)
	}
	if loc := e.location(tab); strings.Contains(loc, cred) || !strings.HasSuffix(loc, "/bridge") {
		t.Fatalf("the page's address is %s", loc)
	}
	urls := e.text(tab, "#bridge-urls")
	if !strings.Contains(urls, "rtsp://"+e.rtsp+"/CAMERA") {
		t.Errorf("addresses on the page: %q", urls)
	}
	if c, w, msg := e.ffprobe("/cam1", "viewer1", cred); c != "h264" || w != 320 {
		t.Fatalf("ffprobe with the credential from the page: codec %q width %d: %s", c, w, msg)
	}
	if c, _, msg := e.ffprobe("/cam1", "", ""); c != "" || !strings.Contains(msg, "401") {
		t.Errorf("ffprobe without credentials: codec %q, %s", c, msg)
	}
	// The revoke button asks for confirmation: accept it as a person would.
	go func() {
		for _, err := range chromedp.Events(tab, cdppage.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			if _, err := chromedp.Call(tab, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()
	e.do(tab, "revoke", chromedp.Click(chromedp.ID("bridge-revoke")), chromedp.WaitVisible(chromedp.ID("bridge-none")))
	if c, _, msg := e.ffprobe("/cam1", "viewer1", cred); c != "" || !strings.Contains(msg, "401") {
		t.Errorf("ffprobe after revoking: codec %q, %s", c, msg)
	}
	if !e.audited("bridge.credential.issue", "user/viewer1", "ok", "viewer1 (session") ||
		!e.audited("bridge.credential.revoke", "user/viewer1", "ok", "viewer1 (session") ||
		!e.audited("camera.live", "camera/cam1", "allow", "viewer1 (bridge bridge-1)") {
		t.Error("the issue, the revocation or the bridge's decision is not in the audit log")
	}
	if strings.Contains(e.logs.String(), cred) {
		t.Error("the credential is in the log")
	}
}
