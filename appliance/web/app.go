package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgenvr/nvr/appliance/authz"
)

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ViewStatus}); !ok {
		return
	}
	var d Dashboard
	if s.cfg.Status != nil {
		d = s.cfg.Status.Dashboard()
	}
	s.render(w, r, c, 200, "dashboard.html", page{Title: "Dashboard", Data: d})
}

// parseRange reads from/to (RFC 3339 or datetime-local) with a default of the last hour.
func parseRange(q url.Values, now time.Time) (time.Time, time.Time, error) {
	from, to := now.Add(-time.Hour), now
	for _, p := range []struct {
		key string
		t   *time.Time
	}{{"from", &from}, {"to", &to}} {
		v := q.Get(p.key)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t, err = time.ParseInLocation("2006-01-02T15:04:05", v, time.UTC)
		}
		if err != nil {
			t, err = time.ParseInLocation("2006-01-02T15:04", v, time.UTC)
		}
		if err != nil {
			return from, to, fmt.Errorf("%s: use RFC 3339 time", p.key)
		}
		*p.t = t
	}
	if !to.After(from) || to.Sub(from) > 31*24*time.Hour {
		return from, to, fmt.Errorf("the range must be positive and at most 31 days")
	}
	return from, to, nil
}

type cameraData struct {
	Camera         string
	From, To       time.Time
	Segments       []Segment
	FromVal        string
	ToVal          string
	FromISO, ToISO string
	// Live and Playback say which parts of the page the caller may use (each decided and audited).
	Live, Playback bool
}

// cameraPage shows a camera: live view if the role grants it, and playback with its timeline, export and
// deletion if it grants playback of the range asked for.
func (s *Server) cameraPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	cam := r.PathValue("camera")
	from, to, err := parseRange(r.URL.Query(), s.cfg.Now())
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	live := s.az.Decide(authz.Request{Subject: c.sub, Source: source(r), Action: authz.Live, Camera: cam})
	play := s.az.Decide(authz.Request{Subject: c.sub, Source: source(r), Action: authz.Playback, Camera: cam, From: from})
	if !live.Allow && !play.Allow {
		s.fail(w, r, c, http.StatusForbidden, "denied: "+play.Reason)
		return
	}
	d := cameraData{Camera: cam, From: from, To: to, Live: live.Allow, Playback: play.Allow,
		FromVal: from.UTC().Format("2006-01-02T15:04:05"), ToVal: to.UTC().Format("2006-01-02T15:04:05"),
		FromISO: from.UTC().Format(time.RFC3339Nano), ToISO: to.UTC().Format(time.RFC3339Nano)}
	msg := ""
	if !play.Allow {
		msg = "playback denied: " + play.Reason
	}
	if play.Allow && s.cfg.Recordings != nil {
		segs, err := s.cfg.Recordings.Segments(cam, from, to)
		if err != nil {
			s.log.Error("web: segments", "camera", cam, "err", err)
			s.fail(w, r, c, http.StatusInternalServerError, "the index could not be read")
			return
		}
		d.Segments = segs
	}
	s.render(w, r, c, 200, "camera.html", page{Title: "Camera " + cam, Error: msg, Data: d})
}

func (s *Server) exportPost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	cam := r.PathValue("camera")
	from, to, err := parseRange(f, s.cfg.Now())
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	req := authz.Request{Action: authz.Export, Camera: cam, From: from}
	d, ok := s.decide(w, r, c, req)
	if !ok {
		return
	}
	reason := strings.TrimSpace(f.Get("reason"))
	if d.NeedApproval {
		req.Subject, req.Source = c.sub, source(r)
		a, err := s.az.RequestApproval(req, to, reason)
		if err != nil {
			s.fail(w, r, c, http.StatusInternalServerError, "approval could not be requested")
			return
		}
		http.Redirect(w, r, "/approvals/"+url.PathEscape(a.ID), http.StatusSeeOther)
		return
	}
	pass, err := exportPassphrase(f.Get("passphrase"))
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	s.export(w, r, c, ExportRequest{Camera: cam, From: from, To: to, Reason: reason, Passphrase: pass})
}

// exportPassphrase checks an optional export passphrase: empty, or 12 to 1024 bytes.
func exportPassphrase(p string) ([]byte, error) {
	switch {
	case p == "":
		return nil, nil
	case len(p) < 12:
		return nil, fmt.Errorf("the passphrase must have at least 12 characters")
	case len(p) > 1024:
		return nil, fmt.Errorf("the passphrase is longer than 1024 bytes")
	}
	return []byte(p), nil
}

// exportEstimate is about how many bytes an export of the range will have, from the index's segment sizes
// in proportion to the part of each segment inside the range: the page shows progress against it.
func (s *Server) exportEstimate(cam string, from, to time.Time) int64 {
	if s.cfg.Recordings == nil {
		return 0
	}
	segs, err := s.cfg.Recordings.Segments(cam, from, to)
	if err != nil {
		return 0
	}
	var n float64
	for _, sg := range segs {
		d := sg.End.Sub(sg.Start)
		if d <= 0 {
			continue
		}
		end, start := sg.End, sg.Start
		if to.Before(end) {
			end = to
		}
		if from.After(start) {
			start = from
		}
		in := end.Sub(start)
		if in > 0 {
			n += float64(sg.Bytes) * float64(in) / float64(d)
		}
	}
	return int64(n)
}

func (s *Server) export(w http.ResponseWriter, r *http.Request, c *caller, req ExportRequest) {
	req.User = c.sub.User
	cams, from, to := req.cameras(), req.From, req.To
	if s.cfg.Exporter == nil {
		s.fail(w, r, c, http.StatusServiceUnavailable, "exports are not available on this appliance")
		return
	}
	defer clear(req.Passphrase)
	// An export may take longer than the usual write and read limits.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Minute))
	_ = rc.SetReadDeadline(time.Time{})
	var estimate int64
	for _, cam := range cams {
		estimate += s.exportEstimate(cam, from, to)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, exportFileName(req)))
	w.Header().Set("X-Export-Estimate", fmt.Sprint(estimate))
	how := ""
	if len(req.Passphrase) > 0 {
		how = ", passphrase-encrypted"
	}
	if len(cams) > 1 {
		how += fmt.Sprintf(", one export of %d cameras (%s)", len(cams), strings.Join(cams, ", "))
	}
	// Each camera gets its own audit entry, so a search by camera finds the export.
	if err := s.cfg.Exporter.Export(r.Context(), req, w); err != nil {
		s.stats.exportFailures.Add(1)
		s.log.Error("web: export failed", "cameras", strings.Join(cams, ","), "err", err)
		for _, cam := range cams {
			s.az.Event(c.sub, "export", "camera/"+cam, "fail", "export failed"+how, source(r))
		}
		return
	}
	s.stats.exports.Add(1)
	for _, cam := range cams {
		s.az.Event(c.sub, "export", "camera/"+cam, "ok", fmt.Sprintf("%s to %s%s, reason: %s", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), how, req.Reason), source(r))
	}
}

type approvalData struct {
	A    authz.Approval
	Mine bool
}

func (s *Server) approvalPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	a, err := s.az.PendingApproval(r.PathValue("id"))
	if err != nil || a.Requester != c.sub.User {
		s.fail(w, r, c, http.StatusNotFound, "no such approval")
		return
	}
	s.render(w, r, c, 200, "approval.html", page{Title: "Approval", Data: approvalData{A: a, Mine: true}})
}

func (s *Server) approvalPost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	id := r.PathValue("id")
	a, err := s.az.PendingApproval(id)
	if err != nil || a.Requester != c.sub.User {
		s.fail(w, r, c, http.StatusNotFound, "no such approval")
		return
	}
	if err := s.az.Approve(r.Context(), id, f.Get("approver"), f.Get("approver_password"), f.Get("approver_code"), source(r)); err != nil {
		code, msg := errorFor(err)
		retry(w, err)
		s.render(w, r, c, code, "approval.html", page{Title: "Approval", Error: msg, Data: approvalData{A: a, Mine: true}})
		return
	}
	a, _ = s.az.PendingApproval(id)
	s.render(w, r, c, 200, "approval.html", page{Title: "Approval", Message: "approved by " + a.ApprovedBy, Data: approvalData{A: a, Mine: true}})
}

// approvalRun carries out an approved request, once: the export download or the deletion.
func (s *Server) approvalRun(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	pass, err := exportPassphrase(f.Get("passphrase"))
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	id := r.PathValue("id")
	// The download carries out exactly what was approved: authz's record names the cameras, and
	// UseApproval checks the set and decides every camera again (each decision audited).
	p, err := s.az.PendingApproval(id)
	if err != nil || p.Requester != c.sub.User {
		s.fail(w, r, c, http.StatusForbidden, "the approval is missing, used or expired")
		return
	}
	a, err := s.az.UseApproval(id, c.sub, p.Cameras, source(r))
	if refused := (*authz.RefusedError)(nil); errors.As(err, &refused) {
		s.fail(w, r, c, http.StatusForbidden, refused.Error()+". Nothing was exported or deleted: the approval is spent; ask again for the cameras you may still use")
		return
	}
	if err != nil {
		s.fail(w, r, c, http.StatusForbidden, "the approval is missing, used or expired")
		return
	}
	switch a.Request.Action {
	case authz.Export:
		req := ExportRequest{Camera: a.Request.Camera, From: a.Request.From, To: a.To, Reason: a.Note, ApprovedBy: a.ApprovedBy, Passphrase: pass}
		if len(a.Cameras) > 1 {
			req.Camera, req.Cameras = "", a.Cameras
		}
		s.export(w, r, c, req)
	case authz.Delete:
		s.delete(w, r, c, DeleteRequest{Camera: a.Request.Camera, From: a.Request.From, To: a.To, Reason: a.Note, ApprovedBy: a.ApprovedBy})
	default:
		s.fail(w, r, c, http.StatusBadRequest, "nothing to carry out")
	}
}

// deletePost deletes a camera's recordings in a range, or asks for approval where the role's policy does.
func (s *Server) deletePost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	cam := r.PathValue("camera")
	from, to, err := parseRange(f, s.cfg.Now())
	if err != nil {
		s.fail(w, r, c, http.StatusBadRequest, err.Error())
		return
	}
	req := authz.Request{Action: authz.Delete, Camera: cam, From: from}
	d, ok := s.decide(w, r, c, req)
	if !ok {
		return
	}
	reason := strings.TrimSpace(f.Get("reason"))
	if d.NeedApproval {
		req.Subject, req.Source = c.sub, source(r)
		a, err := s.az.RequestApproval(req, to, reason)
		if err != nil {
			s.fail(w, r, c, http.StatusInternalServerError, "approval could not be requested")
			return
		}
		http.Redirect(w, r, "/approvals/"+url.PathEscape(a.ID), http.StatusSeeOther)
		return
	}
	s.delete(w, r, c, DeleteRequest{Camera: cam, From: from, To: to, Reason: reason})
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, c *caller, req DeleteRequest) {
	if s.cfg.Deleter == nil {
		s.fail(w, r, c, http.StatusServiceUnavailable, "deletion is not available on this appliance")
		return
	}
	req.User = c.sub.User
	n, err := s.cfg.Deleter.Delete(r.Context(), req)
	obj := "camera/" + req.Camera
	if err != nil {
		s.log.Error("web: delete failed", "camera", req.Camera, "err", err)
		s.az.Event(c.sub, "delete", obj, "fail", "deletion failed", source(r))
		s.fail(w, r, c, http.StatusInternalServerError, "the deletion failed")
		return
	}
	s.az.Event(c.sub, "delete", obj, "ok", fmt.Sprintf("%d segments from %s to %s", n, req.From.UTC().Format(time.RFC3339), req.To.UTC().Format(time.RFC3339)), source(r))
	s.render(w, r, c, 200, "error.html", page{Title: "Deleted", Message: fmt.Sprintf("%d segments of %s deleted", n, req.Camera)})
}

func (s *Server) configPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ViewConfig}); !ok {
		return
	}
	var items []ConfigItem
	if s.cfg.Settings != nil {
		items = s.cfg.Settings.Config()
	}
	s.render(w, r, c, 200, "config.html", page{Title: "Configuration", Data: items})
}

type usersData struct {
	Users         []authz.User
	Roles         []authz.Role
	RoleNames     []string
	Sessions      []authz.Session
	Tokens        []authz.TokenInfo
	NewToken      string
	CameraActions []authz.Action
	SystemActions []authz.Action
}

func (s *Server) usersData() (usersData, error) {
	var d usersData
	var err error
	if d.Users, err = s.az.Users(); err != nil {
		return d, err
	}
	if d.Roles, err = s.az.Roles(); err != nil {
		return d, err
	}
	for _, r := range d.Roles {
		d.RoleNames = append(d.RoleNames, r.Name)
	}
	d.Sessions = s.az.Sessions()
	if d.Tokens, err = s.az.Tokens(); err != nil {
		return d, err
	}
	d.CameraActions, d.SystemActions = authz.CameraActions, authz.SystemActions
	return d, nil
}

func (s *Server) usersPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ManageUsers}); !ok {
		return
	}
	s.showUsers(w, r, c, 200, "", "", "")
}

func (s *Server) showUsers(w http.ResponseWriter, r *http.Request, c *caller, code int, errMsg, msg, newToken string) {
	d, err := s.usersData()
	if err != nil {
		s.fail(w, r, c, http.StatusInternalServerError, "accounts could not be read")
		return
	}
	d.NewToken = newToken
	s.render(w, r, c, code, "users.html", page{Title: "Users and roles", Error: errMsg, Message: msg, Data: d})
}

func splitList(v string) []string {
	var out []string
	for _, x := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		if x != "" && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// usersPost handles every change on the users page; "op" says which.
func (s *Server) usersPost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ManageUsers}); !ok {
		return
	}
	src := source(r)
	var err error
	msg, tok := "", ""
	switch f.Get("op") {
	case "create":
		err = s.az.CreateUser(c.sub, authz.NewUser{Name: f.Get("name"), Password: f.Get("password"),
			Roles: f["roles"], DualAuth: f.Get("dual") == "on", Service: f.Get("service") == "on"}, src)
		msg = "account " + f.Get("name") + " created"
	case "update":
		err = s.az.UpdateUser(c.sub, f.Get("name"), f["roles"], f.Get("dual") == "on", f.Get("disabled") == "on", src)
		msg = "account " + f.Get("name") + " updated"
	case "delete":
		err = s.az.DeleteUser(c.sub, f.Get("name"), src)
		msg = "account " + f.Get("name") + " deleted"
	case "revoke-session":
		n := s.az.RevokeSession(c.sub, f.Get("id"), f.Get("name"), src)
		msg = fmt.Sprintf("%d sessions ended", n)
	case "issue-token":
		tok, err = s.az.IssueToken(c.sub, f.Get("name"), f.Get("label"), src)
		msg = "token issued: copy it now, it is shown only once"
	case "revoke-token":
		err = s.az.RevokeToken(c.sub, f.Get("id"), src)
		msg = "token revoked"
	default:
		err = fmt.Errorf("unknown operation")
	}
	if err != nil {
		code, m := errorFor(err)
		if code == http.StatusBadRequest && m == "request refused" {
			m = err.Error()
		}
		s.showUsers(w, r, c, code, m, "", "")
		return
	}
	switch {
	case f.Get("op") == "delete":
		s.bridgeAccountGone(r, c, f.Get("name"), "account deleted")
	case f.Get("op") == "update" && f.Get("disabled") == "on":
		s.bridgeAccountGone(r, c, f.Get("name"), "account disabled")
	}
	s.showUsers(w, r, c, 200, "", msg, tok)
}

func (s *Server) rolesPost(w http.ResponseWriter, r *http.Request, c *caller, f url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ManageUsers}); !ok {
		return
	}
	var err error
	msg := ""
	switch f.Get("op") {
	case "put":
		var role authz.Role
		role, err = roleFromForm(f)
		if err == nil {
			err = s.az.PutRole(c.sub, role, source(r))
		}
		msg = "role " + f.Get("name") + " saved"
	case "delete":
		err = s.az.DeleteRole(c.sub, f.Get("name"), source(r))
		msg = "role " + f.Get("name") + " deleted"
	default:
		err = fmt.Errorf("unknown operation")
	}
	if err != nil {
		s.showUsers(w, r, c, http.StatusBadRequest, err.Error(), "", "")
		return
	}
	s.showUsers(w, r, c, 200, "", msg, "")
}

// roleFromForm reads a role: cameras as "cam1 cam2" (or *) with checkboxes per camera action, system
// checkboxes, a schedule text and a maximum age in hours.
func roleFromForm(f url.Values) (authz.Role, error) {
	r := authz.Role{Name: f.Get("name"), Cameras: map[string][]authz.Action{}}
	var camActs []authz.Action
	for _, a := range authz.CameraActions {
		if f.Get("cam_"+string(a)) == "on" {
			camActs = append(camActs, a)
		}
	}
	for _, cam := range splitList(f.Get("cameras")) {
		r.Cameras[cam] = camActs
	}
	for _, a := range authz.SystemActions {
		if f.Get("sys_"+string(a)) == "on" {
			r.System = append(r.System, a)
		}
	}
	sched, err := authz.ParseSchedule(f.Get("schedule"))
	if err != nil {
		return r, err
	}
	r.Schedule = sched
	if h := strings.TrimSpace(f.Get("max_age_hours")); h != "" && h != "0" {
		n, err := strconv.ParseFloat(h, 64)
		if err != nil || n < 0 || n > 24*3650 {
			return r, fmt.Errorf("maximum age: hours, 0 for no limit")
		}
		r.MaxRecordingAge = time.Duration(n * float64(time.Hour))
	}
	r.DualExport, r.DualDelete = f.Get("dual_export") == "on", f.Get("dual_delete") == "on"
	return r, r.Validate()
}

type auditData struct {
	Entries                 []authz.Entry
	Subject, Action, Result string
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ReadAudit}); !ok {
		return
	}
	q := r.URL.Query()
	f := authz.AuditFilter{Subject: q.Get("subject"), Action: q.Get("action"), Result: q.Get("result"), Limit: 500}
	es, err := s.az.AuditEntries(f)
	if err != nil {
		s.fail(w, r, c, http.StatusInternalServerError, "the audit log could not be read")
		return
	}
	s.render(w, r, c, 200, "audit.html", page{Title: "Audit log", Data: auditData{Entries: es, Subject: f.Subject, Action: f.Action, Result: f.Result}})
}

func (s *Server) auditExport(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ReadAudit}); !ok {
		return
	}
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("Content-Disposition", `attachment; filename="audit.jsonl"`)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(10 * time.Minute))
	if _, err := s.az.ExportAudit(w); err != nil {
		s.log.Error("web: audit export", "err", err)
	}
}

type accountData struct {
	User     authz.User
	WebAuthn bool
}

func (s *Server) accountPage(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	u, err := s.az.User(c.sub.User)
	if err != nil {
		s.fail(w, r, c, http.StatusNotFound, "no such account")
		return
	}
	s.render(w, r, c, 200, "account.html", page{Title: "My account", Data: accountData{User: u}})
}

func (s *Server) webauthnRegisterBegin(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	opts, err := s.az.WebAuthnRegisterBegin(*c.session)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "security keys are not available"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(opts)
}

func (s *Server) webauthnRegisterFinish(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	body, err := readBody(r, authz.MaxWebAuthnBody)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unreadable body"})
		return
	}
	if err := s.az.WebAuthnRegisterFinish(*c.session, body, source(r)); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the security key was not accepted"})
		return
	}
	writeJSON(w, 200, map[string]string{"next": "/account"})
}
