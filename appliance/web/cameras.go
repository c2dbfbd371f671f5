package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/camera"
)

// CameraFleet is the ONVIF camera manager as the camera pages and API need it; *camera.Manager
// satisfies it. Its methods must never return a camera password, and the pages never ask for one.
type CameraFleet interface {
	Cameras() []camera.Camera
	Discover(ctx context.Context, timeout time.Duration) ([]camera.Discovered, error)
	Adopt(ctx context.Context, req camera.AdoptRequest) (camera.Camera, error)
	Rotate(ctx context.Context, id string) error
	RotateAll(ctx context.Context, ids []string) []camera.RotationResult
	Accept(ctx context.Context, id string) (camera.Camera, error)
	Forget(id string) error
	StaleFirmware(releases []camera.Release) []camera.StaleEntry
	Rollout(ctx context.Context, plan camera.RolloutPlan) (camera.RolloutReport, error)
	Alarms() []camera.Alarm
	// Handler is the manager's JSON API (paths starting with /cameras), mounted under /api/v1.
	Handler(authorize camera.Authorizer, releases func() []camera.Release) http.Handler
}

// Cameras connects the camera management pages (/cameras) and the camera API (/api/v1/cameras…) to the
// camera manager. Both are behind the cameras system right ([authz.ManageCameras]).
type Cameras struct {
	// Fleet is the camera manager; required.
	Fleet CameraFleet
	// Releases, if set, returns the vendor releases known to the appliance for the stale-firmware
	// report. The report also counts the newest firmware seen running on a camera of the same model and
	// every image rolled out from these pages, so it says something useful without a release feed.
	Releases func() []camera.Release
	// MaxImage bounds a firmware image uploaded through the pages (default 128 MiB). The image is held
	// in memory while it is rolled out.
	MaxImage int64
}

// Limits of the camera pages and API.
const (
	defaultMaxImage = 128 << 20
	// maxCameraAPIBody is the camera API's own bound (a rollout carries its image in base64).
	maxCameraAPIBody = 64 << 20
	// uploadReadLimit is how long a firmware upload may take to arrive.
	uploadReadLimit = 10 * time.Minute
	// rolloutLimit bounds a rollout started from the pages; the manager bounds each camera's update.
	rolloutLimit = 12 * time.Hour
	// discoverWait is how long the pages wait for WS-Discovery answers.
	discoverWait = 2 * time.Second
)

// Paths of the firmware uploads, which may carry bodies larger than [maxBody].
const (
	pathRolloutPage = "/cameras/firmware"
	pathRolloutAPI  = "/api/v1/cameras/firmware/rollout"
)

// bodyLimit is the largest request body the server reads for r: [maxBody], except for the firmware
// uploads of the camera pages and API.
func bodyLimit(r *http.Request, cams *Cameras) int64 {
	if cams == nil || r.Method != http.MethodPost {
		return maxBody
	}
	switch r.URL.Path {
	case pathRolloutPage:
		return cams.maxImage() + 1<<20 // the form's other fields and the multipart framing
	case pathRolloutAPI:
		return maxCameraAPIBody
	}
	return maxBody
}

func (c *Cameras) maxImage() int64 {
	if c.MaxImage <= 0 {
		return defaultMaxImage
	}
	return c.MaxImage
}

// cameraPages serves the camera pages and API; it holds the firmware rollouts started from the pages.
type cameraPages struct {
	s    *Server
	cfg  *Cameras
	api  http.Handler
	jobs rolloutJobs
}

// cameraRoutes registers the camera pages and the camera API. Without [Config.Cameras] they answer that
// camera management is not available on this appliance (after the access decision, like the rest).
func (s *Server) cameraRoutes(m *http.ServeMux) {
	p := &cameraPages{s: s, cfg: s.cfg.Cameras}
	if p.cfg != nil && p.cfg.Fleet != nil {
		p.api = http.StripPrefix("/api/v1", p.cfg.Fleet.Handler(p.authorize, p.releases))
	}
	m.HandleFunc("GET /cameras", s.with(p.listPage))
	m.HandleFunc("POST /cameras/discover", s.with(p.discoverPost))
	m.HandleFunc("POST /cameras/adopt", s.with(p.adoptPost))
	m.HandleFunc("POST /cameras/rotate", s.with(p.rotateAllPost))
	m.HandleFunc("POST /cameras/{id}/rotate", s.with(p.rotatePost))
	m.HandleFunc("POST /cameras/{id}/accept", s.with(p.acceptPost))
	m.HandleFunc("POST /cameras/{id}/forget", s.with(p.forgetPost))
	m.HandleFunc("POST /cameras/{id}/accounts/{action}", s.with(p.accountsPost))
	m.HandleFunc("POST "+pathRolloutPage, p.uploadPost)
	m.HandleFunc("GET /api/v1/cameras/firmware/rollouts", s.with(p.rolloutsAPI))
	// The manager's API: the more specific live, recordings and export routes stay the server's own.
	m.HandleFunc("/api/v1/cameras", p.serveAPI)
	m.HandleFunc("/api/v1/cameras/", p.serveAPI)
}

// apiDecision is what the authorizer learnt about one API request, for the audit of its outcome.
type apiDecision struct {
	c       *caller
	source  string
	right   string
	pattern string
	id      string
	denied  string // the reason of a denial
	decided bool
}

type apiDecisionKey struct{}

// authorize is the [camera.Authorizer] the manager's API calls: both camera rights map onto the
// cameras system right, decided (and audited) by authz. The manager calls it once per matched route.
func (p *cameraPages) authorize(r *http.Request, right string) error {
	d, _ := r.Context().Value(apiDecisionKey{}).(*apiDecision)
	if d == nil || d.c == nil {
		return errors.New("no caller")
	}
	if right != camera.RightView && right != camera.RightManage {
		d.denied = "unknown camera right"
		return errors.New(d.denied)
	}
	d.right, d.pattern, d.id, d.decided = right, r.Pattern, r.PathValue("id"), true
	dec := p.s.az.Decide(authz.Request{Subject: d.c.sub, Action: authz.ManageCameras, Source: d.source})
	if !dec.Allow {
		d.denied = dec.Reason
		return errors.New(dec.Reason)
	}
	return nil
}

// serveAPI passes a camera API call to the manager: the caller is authenticated (session or bearer
// token), every state change of a session carries its CSRF token and comes from this site, the manager
// asks [cameraPages.authorize], and the outcome of a change is audited.
func (p *cameraPages) serveAPI(w http.ResponseWriter, r *http.Request) {
	c, ok := p.s.authenticate(r)
	if !ok {
		p.s.fail(w, r, nil, http.StatusUnauthorized, "sign in first")
		return
	}
	changes := r.Method != http.MethodGet && r.Method != http.MethodHead
	if changes && !c.checkCSRF(r, nil) {
		p.s.fail(w, r, c, http.StatusForbidden, "the request is stale or came from another site: reload the page")
		return
	}
	if p.api == nil {
		// Still decided and audited: the answer says whether the function exists only to those allowed.
		if _, ok := p.s.decide(w, r, c, authz.Request{Action: authz.ManageCameras}); ok {
			p.s.fail(w, r, c, http.StatusServiceUnavailable, "camera management is not available on this appliance")
		}
		return
	}
	if changes && r.URL.Path == pathRolloutAPI {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadLimit))
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(rolloutLimit))
	}
	p.callAPI(w, r, c)
}

// callAPI runs one camera API request of the authenticated caller c (whose CSRF token, for a change,
// was checked) through the manager's handler: the manager asks [cameraPages.authorize], which decides
// and audits the cameras right; the outcome of a change is audited; the manager records c's name on
// the choices it keeps (account exemptions). The camera pages' account actions call it too, so the API
// and the pages share one decision, one audit and one set of checks. p.api must be set.
func (p *cameraPages) callAPI(w http.ResponseWriter, r *http.Request, c *caller) *apiDecision {
	changes := r.Method != http.MethodGet && r.Method != http.MethodHead
	d := &apiDecision{c: c, source: source(r)}
	rw := &apiWriter{ResponseWriter: w, d: d}
	ctx := camera.WithActor(context.WithValue(r.Context(), apiDecisionKey{}, d), c.sub.User)
	p.api.ServeHTTP(rw, r.WithContext(ctx))
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	if d.decided && d.denied == "" && changes {
		res, reason := "ok", ""
		if rw.code >= 300 {
			res, reason = "fail", fmt.Sprintf("HTTP %d", rw.code)
		}
		action, object := apiAction(r.Method, d.pattern, d.id)
		p.s.az.Event(c.sub, action, object, res, reason, d.source)
	}
	return d
}

// apiAction names a camera API change for the audit log.
func apiAction(method, pattern, id string) (string, string) {
	object := "cameras"
	if id != "" {
		object = "camera/" + id
	}
	_, path, _ := strings.Cut(pattern, " ")
	switch {
	case method == http.MethodDelete:
		return "camera.forget", object
	case strings.HasSuffix(path, "/discover"):
		return "camera.discover", object
	case strings.HasSuffix(path, "/adopt"):
		return "camera.adopt", object
	case strings.HasSuffix(path, "/accept"):
		return "camera.accept", object
	case strings.HasSuffix(path, "/accounts/keep"):
		return "camera.account-keep", object
	case strings.HasSuffix(path, "/accounts/enforce"):
		return "camera.account-enforce", object
	case strings.HasSuffix(path, "/accounts/audit"):
		return "camera.account-audit", object
	case path == "/cameras/rotate":
		return "camera.rotate-all", object
	case strings.HasSuffix(path, "/rotate"):
		return "camera.rotate", object
	case strings.HasSuffix(path, "/rollout"):
		return "camera.firmware-rollout", object
	}
	return "camera.api", object
}

// apiWriter records the status of a camera API answer and replaces the manager's bare "forbidden" by
// the access decision's reason, as the rest of the API answers.
type apiWriter struct {
	http.ResponseWriter
	d       *apiDecision
	code    int
	wrote   bool
	replace bool
}

func (w *apiWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote, w.code = true, code
	if code == http.StatusForbidden && w.d.denied != "" {
		w.replace = true
		writeJSON(w.ResponseWriter, code, map[string]string{"error": "denied: " + w.d.denied})
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *apiWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.replace {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *apiWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// releases is what the stale-firmware report compares against: the configured releases, the newest
// firmware running on any camera of the model, and the images rolled out from the pages.
func (p *cameraPages) releases() []camera.Release {
	var out []camera.Release
	if p.cfg != nil && p.cfg.Releases != nil {
		out = append(out, p.cfg.Releases()...)
	}
	if p.cfg != nil && p.cfg.Fleet != nil {
		for _, c := range p.cfg.Fleet.Cameras() {
			if c.Model != "" && c.Firmware != "" && !c.Quarantined {
				out = append(out, camera.Release{Model: c.Model, Version: c.Firmware})
			}
		}
	}
	return append(out, p.jobs.releases()...)
}

// rolloutJobs are the rollouts started from the pages: one runs at a time; the last few are kept.
type rolloutJobs struct {
	mu   sync.Mutex
	list []*rolloutJob
}

const keepRollouts = 16

// rolloutJob is one rollout started from the pages.
type rolloutJob struct {
	ID       string    `json:"id"`
	By       string    `json:"by"`
	Model    string    `json:"model"`
	Version  string    `json:"version"`
	Canary   int       `json:"canary"`
	Cameras  []string  `json:"cameras"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// State is "running", "done", "stopped" (a camera failed: see Report) or "refused" (nothing touched).
	State  string               `json:"state"`
	Error  string               `json:"error,omitempty"`
	Report camera.RolloutReport `json:"report"`
}

func (j *rolloutJobs) running() *rolloutJob {
	for _, x := range j.list {
		if x.State == "running" {
			return x
		}
	}
	return nil
}

// start records job and runs f in the background; it refuses while another rollout runs.
func (j *rolloutJobs) start(job *rolloutJob, f func() (camera.RolloutReport, error), now func() time.Time) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if r := j.running(); r != nil {
		return fmt.Errorf("rollout %s (%s %s) is still running", r.ID, r.Model, r.Version)
	}
	job.State = "running"
	j.list = append([]*rolloutJob{job}, j.list...)
	if len(j.list) > keepRollouts {
		j.list = j.list[:keepRollouts]
	}
	go func() {
		rep, err := f()
		j.mu.Lock()
		defer j.mu.Unlock()
		job.Report, job.Finished = rep, now()
		switch {
		case err == nil:
			job.State = "done"
		case errors.Is(err, camera.ErrRolloutStopped):
			job.State, job.Error = "stopped", err.Error()
		default:
			job.State, job.Error = "refused", err.Error()
		}
	}()
	return nil
}

// snapshot returns copies of the jobs, newest first, with a running job's per-camera progress filled
// from the fleet (a camera running the new version is updated; the others wait or are being updated).
func (j *rolloutJobs) snapshot(fleet CameraFleet) []rolloutJob {
	j.mu.Lock()
	out := make([]rolloutJob, 0, len(j.list))
	for _, x := range j.list {
		c := *x
		c.Cameras = append([]string(nil), x.Cameras...)
		c.Report.Cameras = append([]camera.CameraStatus(nil), x.Report.Cameras...)
		out = append(out, c)
	}
	j.mu.Unlock()
	for i := range out {
		if out[i].State != "running" || fleet == nil {
			continue
		}
		running := map[string]camera.Camera{}
		for _, c := range fleet.Cameras() {
			running[c.ID] = c
		}
		for n, id := range out[i].Cameras {
			st := camera.CameraStatus{Camera: id, Stage: "bulk", State: "waiting or updating"}
			if n < max(out[i].Canary, 1) {
				st.Stage = "canary"
			}
			if c, ok := running[id]; ok {
				st.Model, st.From = c.Model, c.Firmware
				if c.Firmware == out[i].Version {
					st.State, st.To = camera.StatusUpdated, c.Firmware
				}
			}
			out[i].Report.Cameras = append(out[i].Report.Cameras, st)
		}
	}
	return out
}

// releases are the versions rolled out from the pages, for the stale-firmware report.
func (j *rolloutJobs) releases() []camera.Release {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []camera.Release
	for _, x := range j.list {
		if x.State == "done" || x.State == "stopped" {
			out = append(out, camera.Release{Model: x.Model, Version: x.Version, Released: x.Finished})
		}
	}
	return out
}

func (p *cameraPages) rolloutsAPI(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := p.s.decide(w, r, c, authz.Request{Action: authz.ManageCameras}); !ok {
		return
	}
	var fleet CameraFleet
	if p.cfg != nil {
		fleet = p.cfg.Fleet
	}
	writeJSON(w, http.StatusOK, p.jobs.snapshot(fleet))
}
