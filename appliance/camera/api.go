package camera

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Rights the API asks the authorizer for.
const (
	RightView   = "cameras.view"   // list cameras, inventory, firmware report, alarms
	RightManage = "cameras.manage" // discover, adopt, rotate, update, accept, forget
)

// Authorizer decides whether the request's subject holds right; a non-nil
// error refuses the request (403) and is not shown to the client. The web
// server passes authz's decision here; this package decides nothing itself.
type Authorizer func(r *http.Request, right string) error

// maxAPIBody bounds a request body; a firmware rollout carries its image.
const maxAPIBody = 64 << 20

// Handler returns the JSON API the camera pages call, to be mounted under
// the web server's API prefix (paths below start with /cameras). releases
// returns the vendor releases known for the stale-firmware report (nil: none).
//
//	GET    /cameras                    inventory of every camera
//	GET    /cameras/{id}               one camera
//	POST   /cameras/discover           WS-Discovery on the camera network
//	POST   /cameras/adopt              AdoptRequest → Camera
//	POST   /cameras/{id}/rotate        rotate one password
//	POST   /cameras/rotate             {"cameras":[ids]} (empty: all) → []RotationResult
//	POST   /cameras/{id}/accept        accept a quarantined camera
//	POST   /cameras/{id}/accounts/audit    list the camera's accounts now and apply the policy
//	POST   /cameras/{id}/accounts/keep     KeepRequest: exempt one account (audited, by WithActor's name)
//	POST   /cameras/{id}/accounts/enforce  {"username":…}: withdraw an exemption; the account is removed
//	DELETE /cameras/{id}               forget a camera
//	GET    /cameras/firmware/stale     []StaleEntry
//	POST   /cameras/firmware/rollout   {"images":[…],"cameras":[…],"canary":1} → RolloutReport
//	GET    /cameras/alarms             recent alarms
func (m *Manager) Handler(authorize Authorizer, releases func() []Release) http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern, right string, h func(w http.ResponseWriter, r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if authorize == nil || authorize(r, right) != nil {
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden"})
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxAPIBody)
			v, err := h(w, r)
			if err != nil {
				writeJSON(w, statusOf(err), map[string]any{"error": err.Error(), "report": v})
				return
			}
			writeJSON(w, http.StatusOK, v)
		})
	}
	handle("GET /cameras", RightView, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return m.inventory(), nil
	})
	handle("GET /cameras/{id}", RightView, func(w http.ResponseWriter, r *http.Request) (any, error) {
		c, err := m.Camera(r.PathValue("id"))
		return view(c, m.cfg.Now()), err
	})
	handle("POST /cameras/discover", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return m.Discover(r.Context(), 0)
	})
	handle("POST /cameras/adopt", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var req AdoptRequest
		if err := decodeBody(r.Body, &req); err != nil {
			return nil, err
		}
		c, err := m.Adopt(r.Context(), req)
		return view(c, m.cfg.Now()), err
	})
	handle("POST /cameras/{id}/rotate", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return map[string]bool{"ok": true}, m.Rotate(r.Context(), r.PathValue("id"))
	})
	handle("POST /cameras/rotate", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var req struct {
			Cameras []string `json:"cameras"`
		}
		if err := decodeBody(r.Body, &req); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return m.RotateAll(r.Context(), req.Cameras), nil
	})
	handle("POST /cameras/{id}/accept", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		c, err := m.Accept(r.Context(), r.PathValue("id"))
		return view(c, m.cfg.Now()), err
	})
	handle("POST /cameras/{id}/accounts/audit", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		id := r.PathValue("id")
		err := m.AuditAccounts(r.Context(), id)
		c, cerr := m.Camera(id)
		return view(c, m.cfg.Now()), errors.Join(err, cerr)
	})
	handle("POST /cameras/{id}/accounts/keep", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var req KeepRequest
		if err := decodeBody(r.Body, &req); err != nil {
			return nil, err
		}
		c, err := m.KeepAccount(r.Context(), r.PathValue("id"), req)
		return view(c, m.cfg.Now()), err
	})
	handle("POST /cameras/{id}/accounts/enforce", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var req struct {
			Username string `json:"username"`
		}
		if err := decodeBody(r.Body, &req); err != nil {
			return nil, err
		}
		c, err := m.EnforceAccount(r.Context(), r.PathValue("id"), req.Username)
		return view(c, m.cfg.Now()), err
	})
	handle("DELETE /cameras/{id}", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return map[string]bool{"ok": true}, m.Forget(r.PathValue("id"))
	})
	handle("GET /cameras/firmware/stale", RightView, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var rs []Release
		if releases != nil {
			rs = releases()
		}
		return m.StaleFirmware(rs), nil
	})
	handle("POST /cameras/firmware/rollout", RightManage, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var req struct {
			Images []struct {
				Model   string `json:"model"`
				Version string `json:"version"`
				SHA256  string `json:"sha256"`
				Data    []byte `json:"data"` // base64 in JSON
			} `json:"images"`
			Cameras []string `json:"cameras"`
			Canary  int      `json:"canary"`
		}
		if err := decodeBody(r.Body, &req); err != nil {
			return nil, err
		}
		plan := RolloutPlan{Cameras: req.Cameras, Canary: req.Canary}
		for _, i := range req.Images {
			plan.Images = append(plan.Images, Image{Model: i.Model, Version: i.Version, SHA256: i.SHA256, Data: i.Data})
		}
		rep, err := m.Rollout(r.Context(), plan)
		return rep, err
	})
	handle("GET /cameras/alarms", RightView, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return m.Alarms(), nil
	})
	return mux
}

// CameraView is a camera as the API shows it.
type CameraView struct {
	Camera
	SinceFirmwareUpdateSeconds int64 `json:"since_firmware_update_s"`
	// Policy is the camera's account policy in words.
	Policy string `json:"account_policy,omitempty"`
}

func view(c Camera, now time.Time) CameraView {
	v := CameraView{Camera: c, SinceFirmwareUpdateSeconds: int64(c.SinceFirmwareUpdate(now) / time.Second)}
	if c.ID != "" {
		v.Policy = c.AccountPolicy()
	}
	return v
}

func (m *Manager) inventory() []CameraView {
	now := m.cfg.Now()
	var out []CameraView
	for _, c := range m.Cameras() {
		out = append(out, view(c, now))
	}
	return out
}

func decodeBody(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return err
		}
		return fmt.Errorf("%w: request body: %v", errBadRequest, err)
	}
	return nil
}

var errBadRequest = errors.New("bad request")

func statusOf(err error) int {
	switch {
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBusy), errors.Is(err, ErrQuarantined), errors.Is(err, ErrAlreadyAdopted):
		return http.StatusConflict
	case errors.Is(err, ErrChecksum), errors.Is(err, ErrPolicy):
		return http.StatusUnprocessableEntity
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest
	}
	return http.StatusBadGateway // the camera failed
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
