package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"time"

	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/evidence"
)

// Exports of several cameras over one range: the export page (/export), its form and the API
// (POST /api/v1/export). Every camera is decided on its own through authz, and audited; one camera the
// caller may not export refuses the whole export, naming it, rather than leaving it out. Under dual
// authorization one authz approval covers the whole set, and names it.

// exportCameras checks the cameras of an export request: at least one, at most 64, valid names, each
// once (in the order given).
func exportCameras(in []string) ([]string, error) {
	var out []string
	for _, c := range in {
		for _, name := range strings.Split(c, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if !evidence.ValidCameraName(name) {
				return nil, fmt.Errorf("camera name %.80q: letters, digits, _ and - (at most 64)", name)
			}
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	switch {
	case len(out) == 0:
		return nil, fmt.Errorf("choose at least one camera")
	case len(out) > evidence.MaxExportCameras:
		return nil, fmt.Errorf("%d cameras: at most %d in one export", len(out), evidence.MaxExportCameras)
	}
	return out, nil
}

// exportCamera is a camera offered on the export page.
type exportCamera struct {
	Name    string
	Checked bool
}

type exportPageData struct {
	Cameras  []exportCamera
	FromVal  string
	ToVal    string
	Refused  []string // cameras asked for in the link that the caller may not export, with the reason
	Multiple bool
}

// exportPage shows the export form for several cameras: the cameras the caller may export over the range
// (each decided, and audited), those named in the link ticked.
func (s *Server) exportPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	q := r.URL.Query()
	from, to, err := parseRange(q, s.cfg.Now())
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	asked, err := exportCameras(q["camera"])
	if err != nil && len(q["camera"]) > 0 {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	names := slices.Clone(asked)
	if s.cfg.Status != nil {
		for _, cs := range s.cfg.Status.Dashboard().Cameras {
			if evidence.ValidCameraName(cs.Name) && !slices.Contains(names, cs.Name) {
				names = append(names, cs.Name)
			}
		}
	}
	sort.Strings(names)
	d := exportPageData{FromVal: from.UTC().Format("2006-01-02T15:04:05"), ToVal: to.UTC().Format("2006-01-02T15:04:05")}
	for _, cam := range names {
		dec := s.az.Decide(authz.Request{Subject: c.sub, Source: source(r), Action: authz.Export, Camera: cam, From: from})
		switch {
		case dec.Allow:
			d.Cameras = append(d.Cameras, exportCamera{Name: cam, Checked: slices.Contains(asked, cam)})
		case slices.Contains(asked, cam):
			d.Refused = append(d.Refused, cam+": "+dec.Reason)
		}
	}
	d.Multiple = len(d.Cameras) > 1
	msg := ""
	if len(d.Cameras) == 0 {
		msg = "you may export no camera over this range"
	}
	s.render(w, r, c, 200, "export.html", page{Title: "Evidence export", Error: msg, Data: d})
}

// exportSetPost takes the export form: cameras (repeated camera fields), from, to, reason, passphrase.
func (s *Server) exportSetPost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	from, to, err := parseRange(f, s.cfg.Now())
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	s.exportSet(w, r, c, f["camera"], from, to, strings.TrimSpace(f.Get("reason")), f.Get("passphrase"))
}

// apiExportSet takes {"cameras": [...], "from": RFC3339, "to": RFC3339, "reason": "...", "passphrase":
// optional} and answers the export (a zip, or an age file), or 202 with the approval id where the role's
// policy asks for a second person, or 403 naming every camera the caller may not export.
func (s *Server) apiExportSet(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	var in struct {
		Cameras    []string
		From, To   time.Time
		Reason     string
		Passphrase string
	}
	body, err := readBody(r, 16<<10)
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil || !in.To.After(in.From) || in.To.Sub(in.From) > 31*24*time.Hour {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want JSON {cameras, from, to, reason} with to after from, at most 31 days"})
		return
	}
	s.exportSet(w, r, c, in.Cameras, in.From, in.To, strings.TrimSpace(in.Reason), in.Passphrase)
}

// exportSet decides every camera of an export, then exports them in one file, or asks for one approval
// covering them all.
func (s *Server) exportSet(w http.ResponseWriter, r *http.Request, c *caller, asked []string, from, to time.Time, reason, passphrase string) {
	cams, err := exportCameras(asked)
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	if reason == "" {
		s.fail(w, r, c, http.StatusBadRequest, "give the reason for the export")
		return
	}
	if len(reason) > 500 {
		s.fail(w, r, c, http.StatusBadRequest, "the reason is longer than 500 characters")
		return
	}
	pass, err := exportPassphrase(passphrase)
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	defer clear(pass)
	needApproval, err := s.decideCameras(c, r, cams, from)
	if err != nil {
		s.fail(w, r, c, http.StatusForbidden, err.Error())
		return
	}
	if needApproval {
		// One approval covers the set; authz records and audits every camera of it.
		req := authz.Request{Subject: c.sub, Source: source(r), Action: authz.Export, From: from}
		a, err := s.az.RequestApprovalCameras(req, cams, to, reason)
		if err != nil {
			s.fail(w, r, c, http.StatusInternalServerError, "approval could not be requested")
			return
		}
		if strings.HasPrefix(r.URL.Path, "/api/") {
			writeJSON(w, http.StatusAccepted, map[string]any{"approval": a.ID, "cameras": a.Cameras, "status": "waiting for a second person"})
			return
		}
		http.Redirect(w, r, "/approvals/"+url.PathEscape(a.ID), http.StatusSeeOther)
		return
	}
	req := ExportRequest{Cameras: cams, From: from, To: to, Reason: reason, Passphrase: slices.Clone(pass)}
	if len(cams) == 1 {
		req = ExportRequest{Camera: cams[0], From: from, To: to, Reason: reason, Passphrase: slices.Clone(pass)}
	}
	s.export(w, r, c, req)
}

// decideCameras decides the export of every camera (each decision audited) and returns an error naming
// every camera refused, or whether any camera's export needs a second person's approval (which then
// covers the whole set).
func (s *Server) decideCameras(c *caller, r *http.Request, cams []string, from time.Time) (bool, error) {
	var refused []string
	needApproval := false
	for _, cam := range cams {
		d := s.az.Decide(authz.Request{Subject: c.sub, Source: source(r), Action: authz.Export, Camera: cam, From: from})
		if !d.Allow {
			refused = append(refused, "camera "+cam+": "+d.Reason)
		}
		needApproval = needApproval || d.NeedApproval
	}
	if len(refused) == 0 {
		return needApproval, nil
	}
	return false, fmt.Errorf("denied: %s. Nothing was exported: every camera of an export must be one you may export; leave out the camera(s) named or ask for the right",
		strings.Join(refused, "; "))
}

// exportFileName names an export download.
func exportFileName(req ExportRequest) string {
	cams := req.cameras()
	name := fmt.Sprintf("%s-%s-evidence.zip", cams[0], req.From.UTC().Format("20060102T150405Z"))
	if len(cams) > 1 {
		name = fmt.Sprintf("%d-cameras-%s-evidence.zip", len(cams), req.From.UTC().Format("20060102T150405Z"))
	}
	if len(req.Passphrase) > 0 {
		name += ".age"
	}
	return name
}

// cameras returns the request's cameras in order, each once.
func (r ExportRequest) cameras() []string {
	var out []string
	for _, c := range append([]string{r.Camera}, r.Cameras...) {
		if c != "" && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}
