package web

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

// apiRoutes registers the JSON API. Callers are service accounts with a bearer token, or a browser
// session sending X-CSRF-Token on state changes. Every call is decided and audited like a page.
func (s *Server) apiRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /api/v1/status", s.with(s.apiStatus))
	m.HandleFunc("GET /api/v1/cameras/{camera}/live", s.with(s.apiLive))
	m.HandleFunc("GET /api/v1/cameras/{camera}/recordings", s.with(s.apiRecordings))
	m.HandleFunc("POST /api/v1/cameras/{camera}/export", s.with(s.apiExport))
	m.HandleFunc("POST /api/v1/export", s.with(s.apiExportSet))
	m.HandleFunc("GET /api/v1/audit", s.with(s.auditExport))
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ViewStatus}); !ok {
		return
	}
	var d Dashboard
	if s.cfg.Status != nil {
		d = s.cfg.Status.Dashboard()
	}
	writeJSON(w, 200, d)
}

// apiLive answers whether and how the caller may watch a camera live; the stream itself comes with the
// live-view issue. Today it returns the camera's recording state.
func (s *Server) apiLive(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	cam := r.PathValue("camera")
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.Live, Camera: cam}); !ok {
		return
	}
	out := map[string]any{"camera": cam, "allowed": true}
	if s.cfg.Status != nil {
		for _, cs := range s.cfg.Status.Dashboard().Cameras {
			if cs.Name == cam {
				out["state"], out["recording"], out["last_write"] = cs.State, cs.Recording, cs.LastWrite
			}
		}
	}
	writeJSON(w, 200, out)
}

func (s *Server) apiRecordings(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	cam := r.PathValue("camera")
	from, to, err := parseRange(r.URL.Query(), s.cfg.Now())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.Playback, Camera: cam, From: from}); !ok {
		return
	}
	segs := []Segment{}
	if s.cfg.Recordings != nil {
		if segs, err = s.cfg.Recordings.Segments(cam, from, to); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "the index could not be read"})
			return
		}
	}
	writeJSON(w, 200, map[string]any{"camera": cam, "from": from, "to": to, "segments": segs})
}

// apiExport takes {"from": RFC3339, "to": RFC3339, "reason": "...", "passphrase": optional}. A role under dual authorization
// gets 202 with the approval id; the approval is given on the requester's screen in the browser.
func (s *Server) apiExport(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	cam := r.PathValue("camera")
	var in struct {
		From, To   time.Time
		Reason     string
		Passphrase string
	}
	body, err := readBody(r, 4096)
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil || !in.To.After(in.From) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want JSON {from, to, reason} with to after from"})
		return
	}
	req := authz.Request{Action: authz.Export, Camera: cam, From: in.From}
	d, ok := s.decide(w, r, c, req)
	if !ok {
		return
	}
	if d.NeedApproval {
		req.Subject, req.Source = c.sub, source(r)
		a, err := s.az.RequestApproval(req, in.To, in.Reason)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "approval could not be requested"})
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"approval": a.ID, "status": "waiting for a second person"})
		return
	}
	pass, err := exportPassphrase(in.Passphrase)
	in.Passphrase = ""
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	s.export(w, r, c, ExportRequest{Camera: cam, From: in.From, To: in.To, Reason: in.Reason, Passphrase: pass})
}

func readBody(r *http.Request, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("body larger than %d bytes", max)
	}
	return b, nil
}
