package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/camera"
)

// cameraRow is one camera of the inventory as the page shows it. It holds no secret: the manager's
// Camera has none.
type cameraRow struct {
	camera.Camera
	// FirmwareAge is the time since the last firmware update (since adoption when never updated).
	FirmwareAge string
	// PasswordAge is the time since the appliance last set the camera's password.
	PasswordAge string
	// Latest is the newer firmware known for its model, if the camera runs an older one.
	Latest string
}

// Kept reports whether an administrator exempted the account name of this camera from the policy.
func (r cameraRow) Kept(name string) bool {
	return slices.ContainsFunc(r.KeepAccounts, func(k camera.KeptAccount) bool { return k.Username == name })
}

// adoptFormData refills the adoption form after an error: never the password.
type adoptFormData struct {
	HTTP, HTTPS, Username, Name, CertSHA256 string
}

// camerasData is what cameras.html receives.
type camerasData struct {
	Available  bool
	Cameras    []cameraRow
	Models     []string
	Stale      []staleRow
	Alarms     []camera.Alarm
	Discovered []camera.Discovered
	Searched   bool
	Adopt      adoptFormData
	Rotation   []camera.RotationResult
	Jobs       []rolloutJob
	Running    bool
	MaxImageMB int64
}

type staleRow struct {
	camera.StaleEntry
	Since string
}

// maxAlarmsShown bounds the alarm table.
const maxAlarmsShown = 100

func (p *cameraPages) available() bool { return p.cfg != nil && p.cfg.Fleet != nil }

// allowed decides the cameras system right for a page or action (audited by authz) and answers 403 or
// 503 itself when the caller may not, or the appliance cannot, manage cameras.
func (p *cameraPages) allowed(w http.ResponseWriter, r *http.Request, c *caller) bool {
	if _, ok := p.s.decide(w, r, c, authz.Request{Action: authz.ManageCameras}); !ok {
		return false
	}
	if !p.available() {
		p.s.fail(w, r, c, http.StatusServiceUnavailable, "camera management is not available on this appliance")
		return false
	}
	return true
}

// show renders the camera page with d's action results on top of the current state.
func (p *cameraPages) show(w http.ResponseWriter, r *http.Request, c *caller, code int, errMsg, msg string, d camerasData) {
	fleet := p.cfg.Fleet
	now := p.s.cfg.Now()
	d.Available = true
	d.MaxImageMB = p.cfg.maxImage() >> 20
	stale := fleet.StaleFirmware(p.releases())
	latest := map[string]string{}
	for _, e := range stale {
		latest[e.Camera] = e.Latest
		d.Stale = append(d.Stale, staleRow{StaleEntry: e, Since: humanAge(e.SinceUpdate)})
	}
	for _, cam := range fleet.Cameras() {
		d.Cameras = append(d.Cameras, cameraRow{Camera: cam, FirmwareAge: humanAge(cam.SinceFirmwareUpdate(now)),
			PasswordAge: humanAge(now.Sub(cam.PasswordRotated)), Latest: latest[cam.ID]})
		if cam.Model != "" && !slices.Contains(d.Models, cam.Model) {
			d.Models = append(d.Models, cam.Model)
		}
	}
	slices.Sort(d.Models)
	al := fleet.Alarms()
	slices.Reverse(al)
	if len(al) > maxAlarmsShown {
		al = al[:maxAlarmsShown]
	}
	d.Alarms = al
	d.Jobs = p.jobs.snapshot(fleet)
	for _, j := range d.Jobs {
		d.Running = d.Running || j.State == "running"
	}
	p.s.render(w, r, c, code, "cameras.html", page{Title: "Cameras", Error: errMsg, Message: msg, Data: d})
}

func (p *cameraPages) listPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if !p.allowed(w, r, c) {
		return
	}
	p.show(w, r, c, http.StatusOK, "", "", camerasData{})
}

// event audits the outcome of a camera action (the access decision itself is audited by Decide).
func (p *cameraPages) event(r *http.Request, c *caller, action, object string, err error, detail string) {
	res := "ok"
	if err != nil {
		res, detail = "fail", strings.TrimSpace(detail+" "+err.Error())
	}
	p.s.az.Event(c.sub, action, object, res, detail, source(r))
}

func (p *cameraPages) discoverPost(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if !p.allowed(w, r, c) {
		return
	}
	found, err := p.cfg.Fleet.Discover(r.Context(), discoverWait)
	p.event(r, c, "camera.discover", "cameras", err, fmt.Sprintf("%d devices answered", len(found)))
	if err != nil {
		p.show(w, r, c, http.StatusBadGateway, "discovery failed: "+err.Error(), "", camerasData{})
		return
	}
	msg := fmt.Sprintf("%d ONVIF devices answered on the camera network", len(found))
	p.show(w, r, c, http.StatusOK, "", msg, camerasData{Discovered: found, Searched: true})
}

func (p *cameraPages) adoptPost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	if !p.allowed(w, r, c) {
		return
	}
	req, err := parseAdoptForm(f)
	f.Del("password") // typed once: it goes to the manager and is not kept by this package
	refill := adoptFormData{HTTP: req.HTTP, HTTPS: req.HTTPS, Username: req.Username, Name: req.Name, CertSHA256: f.Get("cert_sha256")}
	if err != nil {
		p.show(w, r, c, http.StatusBadRequest, err.Error(), "", camerasData{Adopt: refill})
		return
	}
	addr := req.HTTPS
	if addr == "" {
		addr = req.HTTP
	}
	cam, err := p.cfg.Fleet.Adopt(r.Context(), req)
	req.Password = ""
	object := "camera/" + cam.ID
	if err != nil {
		object = "camera@" + addr
	}
	p.event(r, c, "camera.adopt", object, err, "at "+addr)
	if err != nil {
		p.show(w, r, c, statusOfCamera(err), "adoption failed: "+err.Error(), "", camerasData{Adopt: refill})
		return
	}
	msg := fmt.Sprintf("camera %s adopted (%s %s, serial %s): its certificate is pinned and the installer's password was replaced by a generated one",
		cam.ID, cam.Manufacturer, cam.Model, cam.Serial)
	p.show(w, r, c, http.StatusOK, "", msg, camerasData{})
}

func (p *cameraPages) rotatePost(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	id := r.PathValue("id")
	if !p.allowed(w, r, c) {
		return
	}
	err := p.cfg.Fleet.Rotate(r.Context(), id)
	p.event(r, c, "camera.rotate", "camera/"+id, err, "")
	if err != nil {
		p.show(w, r, c, statusOfCamera(err), "password rotation of "+id+" failed: "+err.Error(), "", camerasData{})
		return
	}
	p.show(w, r, c, http.StatusOK, "", "the password of "+id+" was replaced by a new generated one, verified with the camera", camerasData{})
}

func (p *cameraPages) rotateAllPost(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if !p.allowed(w, r, c) {
		return
	}
	// Every camera, a few at a time: this may take longer than the usual write limit.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(30 * time.Minute))
	res := p.cfg.Fleet.RotateAll(r.Context(), nil)
	failed := 0
	for _, x := range res {
		var err error
		if !x.OK {
			failed++
			err = errors.New(x.Error)
		}
		p.event(r, c, "camera.rotate", "camera/"+x.Camera, err, "bulk rotation")
	}
	msg := fmt.Sprintf("%d of %d passwords replaced", len(res)-failed, len(res))
	if failed > 0 {
		p.show(w, r, c, http.StatusOK, fmt.Sprintf("%d rotations failed: those cameras keep their previous password", failed), msg, camerasData{Rotation: res})
		return
	}
	p.show(w, r, c, http.StatusOK, "", msg, camerasData{Rotation: res})
}

func (p *cameraPages) acceptPost(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	id := r.PathValue("id")
	if !p.allowed(w, r, c) {
		return
	}
	cam, err := p.cfg.Fleet.Accept(r.Context(), id)
	p.event(r, c, "camera.accept", "camera/"+id, err, "")
	if err != nil {
		p.show(w, r, c, statusOfCamera(err), "accepting "+id+" failed: "+err.Error(), "", camerasData{})
		return
	}
	p.show(w, r, c, http.StatusOK, "", fmt.Sprintf("camera %s accepted with serial %s and MAC %s: it is recorded again", id, cam.Serial, cam.MAC), camerasData{})
}

func (p *cameraPages) forgetPost(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	id := r.PathValue("id")
	if !p.allowed(w, r, c) {
		return
	}
	err := p.cfg.Fleet.Forget(id)
	p.event(r, c, "camera.forget", "camera/"+id, err, "")
	if err != nil {
		p.show(w, r, c, statusOfCamera(err), "forgetting "+id+" failed: "+err.Error(), "", camerasData{})
		return
	}
	p.show(w, r, c, http.StatusOK, "", "camera "+id+" is no longer managed nor recorded; its recordings stay", camerasData{})
}

// uploadPost starts a firmware rollout from the page's multipart form: the image, the vendor checksum,
// the cameras and the canary. The form is read within its own limits (the image may be large), then the
// CSRF token and the access decision are checked before anything else happens.
func (p *cameraPages) uploadPost(w http.ResponseWriter, r *http.Request) {
	c, ok := p.s.authenticate(r)
	if !ok {
		p.s.fail(w, r, nil, http.StatusUnauthorized, "sign in first")
		return
	}
	if c.session == nil {
		p.s.fail(w, r, c, http.StatusForbidden, "API tokens are for /api/ only")
		return
	}
	// Refuse a cross-site or stale upload before reading it.
	if !sameOrigin(r) {
		p.s.fail(w, r, c, http.StatusForbidden, "the form is stale or came from another site: reload the page")
		return
	}
	// Decided (and audited) before the image is read: nobody without the right makes the appliance
	// read 128 MiB.
	if !p.allowed(w, r, c) {
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadLimit))
	up, err := readFirmwareUpload(r.Header.Get("Content-Type"), r.Body, p.cfg.maxImage())
	if err != nil {
		code := http.StatusBadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			code = http.StatusRequestEntityTooLarge
		}
		p.s.fail(w, r, c, code, err.Error())
		return
	}
	defer clear(up.Image)
	if !c.checkCSRF(r, up.Fields) {
		p.s.fail(w, r, c, http.StatusForbidden, "the form is stale or came from another site: reload the page")
		return
	}
	form, err := parseRolloutForm(up.Fields)
	if err == nil && len(up.Image) == 0 {
		err = errors.New("choose the firmware image file")
	}
	if err != nil {
		p.show(w, r, c, http.StatusBadRequest, "rollout refused: "+err.Error(), "", camerasData{})
		return
	}
	if got := hex.EncodeToString(up.Sum[:]); got != form.SHA256 {
		err := fmt.Errorf("%w: the uploaded file's SHA-256 is %s, the vendor's is %s", camera.ErrChecksum, got, form.SHA256)
		p.event(r, c, "camera.firmware-rollout", "cameras", err, form.Model+" "+form.Version)
		p.show(w, r, c, http.StatusUnprocessableEntity, "rollout refused, no camera touched: "+err.Error(), "", camerasData{})
		return
	}
	var idb [6]byte
	if _, err := rand.Read(idb[:]); err != nil {
		p.s.fail(w, r, c, http.StatusInternalServerError, "no randomness")
		return
	}
	job := &rolloutJob{ID: hex.EncodeToString(idb[:]), By: c.sub.User, Model: form.Model, Version: form.Version,
		Canary: form.Canary, Cameras: form.Cameras, Started: p.s.cfg.Now()}
	// The manager holds the image until the rollout ends; the request's copy is cleared on return.
	img := camera.Image{Model: form.Model, Version: form.Version, SHA256: form.SHA256, Data: slices.Clone(up.Image)}
	plan := camera.RolloutPlan{Images: []camera.Image{img}, Cameras: form.Cameras, Canary: form.Canary}
	// The rollout outlives the request (the operator may leave the page); it is bounded in time and
	// each camera's update is bounded by the manager.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), rolloutLimit)
	sub, src, fleet := c.sub, source(r), p.cfg.Fleet
	err = p.jobs.start(job, func() (camera.RolloutReport, error) {
		defer cancel()
		rep, err := fleet.Rollout(ctx, plan)
		clear(plan.Images[0].Data)
		res, detail := "ok", fmt.Sprintf("rollout %s: %s %s on %d cameras", job.ID, job.Model, job.Version, len(job.Cameras))
		if err != nil {
			res, detail = "fail", detail+": "+err.Error()
		}
		p.s.az.Event(sub, "camera.firmware-rollout", "cameras", res, detail, src)
		return rep, err
	}, p.s.cfg.Now)
	if err != nil {
		cancel()
		p.show(w, r, c, http.StatusConflict, "rollout refused: "+err.Error(), "", camerasData{})
		return
	}
	p.s.az.Event(c.sub, "camera.firmware-rollout", "cameras", "started",
		fmt.Sprintf("rollout %s: %s %s (sha256 %s, %d bytes) on %d cameras, %d canary", job.ID, form.Model, form.Version, form.SHA256, len(up.Image), len(form.Cameras), form.Canary), source(r))
	p.show(w, r, c, http.StatusAccepted, "", fmt.Sprintf("rollout %s started: canary first, then the rest; its status follows below", job.ID), camerasData{})
}

// statusOfCamera maps the manager's errors to an HTTP status for the page.
func statusOfCamera(err error) int {
	switch {
	case errors.Is(err, camera.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, camera.ErrBusy), errors.Is(err, camera.ErrAlreadyAdopted), errors.Is(err, camera.ErrQuarantined):
		return http.StatusConflict
	case errors.Is(err, camera.ErrChecksum):
		return http.StatusUnprocessableEntity
	case errors.Is(err, camera.ErrUnauthorized), errors.Is(err, camera.ErrNoHTTPS):
		return http.StatusBadRequest
	}
	return http.StatusBadGateway
}

// humanAge says how long d is in the largest fitting units: "3 d 4 h", "12 min", "40 s".
func humanAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	days := int(d.Hours()) / 24
	return fmt.Sprintf("%d d %d h", days, int(d.Hours())%24)
}

// maxAccountsAnswer bounds the camera API answer an account action of the page reads back.
const maxAccountsAnswer = 4 << 20

// accountsPost runs an account action of the camera page — audit (list the accounts now and apply the
// policy), keep (exempt one account, with a reason) or enforce (withdraw an exemption: the account is
// deleted or secured at once) — as the camera API call it is: the same handler, access decision, audit
// entries and checks ([cameraPages.callAPI]), so the page refuses what the API refuses, with its words.
func (p *cameraPages) accountsPost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	id, action := r.PathValue("id"), r.PathValue("action")
	if p.api == nil {
		p.allowed(w, r, c) // decided and audited; answers 403, or 503 to those allowed
		return
	}
	var body any
	switch action {
	case "audit":
	case "keep":
		body = camera.KeepRequest{Username: f.Get("username"), Level: f.Get("level"), Reason: f.Get("reason")}
	case "enforce":
		body = struct {
			Username string `json:"username"`
		}{f.Get("username")}
	default:
		if p.allowed(w, r, c) {
			p.s.fail(w, r, c, http.StatusNotFound, "no such camera account action")
		}
		return
	}
	code, answer, d, err := p.accountsAPI(r, c, id, action, body)
	if err != nil {
		p.s.fail(w, r, c, http.StatusInternalServerError, err.Error())
		return
	}
	if d.denied != "" || code == http.StatusForbidden {
		reason := d.denied
		if reason == "" {
			reason = "the camera manager refused the request"
		}
		p.s.fail(w, r, c, http.StatusForbidden, "denied: "+reason)
		return
	}
	var v struct {
		camera.CameraView
		Error string `json:"error"`
	}
	if err := json.Unmarshal(answer, &v); err != nil && code < 300 {
		code, v.Error = http.StatusBadGateway, "unreadable answer of the camera manager"
	}
	user := cleanText(f.Get("username"), 64)
	if code >= 300 {
		what := map[string]string{"audit": "the account audit of " + id, "keep": "keeping account " + user + " of " + id,
			"enforce": "withdrawing the exemption of account " + user + " of " + id}[action]
		if v.Error == "" {
			v.Error = http.StatusText(code)
		}
		p.show(w, r, c, code, what+" failed: "+v.Error, "", camerasData{})
		return
	}
	p.show(w, r, c, http.StatusOK, "", accountsMessage(action, id, user, v.Camera), camerasData{})
}

// accountsMessage says what an account action did, from the camera the manager answered.
func accountsMessage(action, id, user string, cam camera.Camera) string {
	switch action {
	case "keep":
		for _, k := range cam.KeepAccounts {
			if k.Username == user {
				return fmt.Sprintf("account %s of %s is kept (level %s at most) by %s: %s. The appliance neither deletes nor secures it while the exemption lasts; a higher level is an alarm",
					user, id, k.Level, k.By, k.Reason)
			}
		}
		return fmt.Sprintf("account %s of %s is kept", user, id)
	case "enforce":
		state := "not on the camera"
		for _, a := range cam.Accounts {
			if a.Username == user && (a.Present || a.State == camera.AccountDeleted) {
				state = string(a.State)
			}
		}
		return fmt.Sprintf("account %s of %s is no longer kept; the camera was audited at once: %s", user, id, state)
	}
	n := 0
	for _, a := range cam.Accounts {
		if a.Present {
			n++
		}
	}
	return fmt.Sprintf("the accounts of %s were listed now and the policy applied: %d accounts on the camera", id, n)
}

// accountsAPI calls POST /api/v1/cameras/{id}/accounts/{action} with body (JSON, nil for none) for c
// and returns the API's status and answer and the access decision.
func (p *cameraPages) accountsAPI(r *http.Request, c *caller, id, action string, body any) (int, []byte, *apiDecision, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return 0, nil, nil, fmt.Errorf("account request: %w", err)
		}
	}
	u := &url.URL{Path: "/api/v1/cameras/" + id + "/accounts/" + action,
		RawPath: "/api/v1/cameras/" + url.PathEscape(id) + "/accounts/" + action}
	ir := r.Clone(r.Context())
	ir.Method, ir.URL, ir.RequestURI, ir.Pattern = http.MethodPost, u, u.RequestURI(), ""
	ir.Body, ir.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	ir.Form, ir.PostForm, ir.MultipartForm = nil, nil, nil
	ir.Header.Set("Content-Type", "application/json")
	rec := &bufferedAnswer{h: http.Header{}}
	d := p.callAPI(rec, ir, c)
	return rec.code, rec.buf.Bytes(), d, nil
}

// bufferedAnswer collects a camera API answer for a page, up to [maxAccountsAnswer] bytes.
type bufferedAnswer struct {
	h    http.Header
	code int
	buf  bytes.Buffer
}

func (b *bufferedAnswer) Header() http.Header { return b.h }

func (b *bufferedAnswer) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedAnswer) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	if b.buf.Len()+len(p) > maxAccountsAnswer {
		return 0, errors.New("camera API answer too large")
	}
	return b.buf.Write(p)
}
