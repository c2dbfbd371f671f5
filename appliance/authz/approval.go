package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// MaxApprovalCameras bounds the cameras one approval covers (the bound of one evidence export).
const MaxApprovalCameras = 64

// Approval is a request for a second person to approve an export or a deletion. Approvals live in memory
// only, for [approvalTTL]: none is stored, so none survives a restart.
type Approval struct {
	ID        string
	Requester string
	// Request is the decision the approval stands for. For an approval of several cameras its Camera is
	// the first of Cameras; the approval covers all of them.
	Request Request
	// Cameras are every camera the approval covers, sorted, each once: the single camera of Request for a
	// one-camera approval, none for an action on no camera. Use is refused for any other set.
	Cameras    []string
	To         time.Time // end of the range, for exports and deletions
	Note       string    // the requester's reason
	Created    time.Time
	ApprovedBy string
	used       bool
}

// RefusedError is the refusal of an approved action decided again at use: a right lost between the
// approval and its use. It names every camera refused, with its reason, and wraps [ErrDenied].
type RefusedError struct {
	Refused []string // "camera NAME: reason"
}

func (e *RefusedError) Error() string {
	return "denied: " + strings.Join(e.Refused, "; ")
}

// Unwrap lets errors.Is(err, ErrDenied) hold.
func (e *RefusedError) Unwrap() error { return ErrDenied }

// Object renders what the approval covers for the audit log: like [Request.Object] for one camera,
// "cameras/a,b,c@FROM" for several.
func (a Approval) Object() string {
	cams := a.cameras()
	if len(cams) < 2 {
		return a.Request.Object()
	}
	o := "cameras/" + strings.Join(cams, ",")
	if !a.Request.From.IsZero() {
		o += "@" + a.Request.From.UTC().Format(time.RFC3339)
	}
	return o
}

// cameras returns the cameras the approval covers; an approval built without Cameras covers its
// request's camera.
func (a Approval) cameras() []string {
	if len(a.Cameras) > 0 {
		return a.Cameras
	}
	if a.Request.Camera != "" {
		return []string{a.Request.Camera}
	}
	return nil
}

// approvalCameras checks and normalizes the cameras of an approval: valid names, at most
// [MaxApprovalCameras], sorted, each once.
func approvalCameras(in []string) ([]string, error) {
	if len(in) > 4*MaxApprovalCameras {
		return nil, fmt.Errorf("%d cameras: at most %d in one approval", len(in), MaxApprovalCameras)
	}
	out := make([]string, 0, len(in))
	for _, c := range in {
		if !validName(c) {
			return nil, fmt.Errorf("camera name %.80q: letters, digits, _, - and . (at most 64)", c)
		}
		out = append(out, c)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxApprovalCameras {
		return nil, fmt.Errorf("%d cameras: at most %d in one approval", len(out), MaxApprovalCameras)
	}
	return out, nil
}

// RequestApproval records that req (already allowed by [Service.Decide] with NeedApproval) waits for a
// second person. The returned id is not secret: the approval needs the approver's own credentials.
func (s *Service) RequestApproval(req Request, to time.Time, note string) (Approval, error) {
	var cams []string
	if req.Camera != "" {
		cams = []string{req.Camera}
	}
	return s.RequestApprovalCameras(req, cams, to, note)
}

// RequestApprovalCameras is [Service.RequestApproval] for one action over several cameras (an export of
// several cameras in one file): every camera must have been allowed by [Service.Decide] with
// NeedApproval, and one approval covers the set. cameras are sorted and deduplicated; req.Camera, if
// set, must be one of them. The audit entry names every camera.
func (s *Service) RequestApprovalCameras(req Request, cameras []string, to time.Time, note string) (Approval, error) {
	cams, err := approvalCameras(cameras)
	if err != nil {
		return Approval{}, fmt.Errorf("approval: %w", err)
	}
	switch {
	case req.Action.IsCamera() && len(cams) == 0:
		return Approval{}, errors.New("approval: a camera action needs at least one camera")
	case !req.Action.IsCamera() && len(cams) > 0:
		return Approval{}, errors.New("approval: cameras given for an action on no camera")
	case req.Camera != "" && !slices.Contains(cams, req.Camera):
		return Approval{}, fmt.Errorf("approval: camera %s is not among the cameras", req.Camera)
	}
	if len(cams) > 0 {
		req.Camera = cams[0]
	}
	id, err := s.token(12)
	if err != nil {
		return Approval{}, err
	}
	a := &Approval{ID: id, Requester: req.Subject.User, Request: req, Cameras: cams, To: to, Note: note, Created: s.cfg.Now()}
	s.mu.Lock()
	s.approvals[id] = a
	s.mu.Unlock()
	s.Event(req.Subject, "approval.request", a.Object(), "pending",
		fmt.Sprintf("%s%s to %s, approval %s: %s", req.Action, camerasNote(cams), to.UTC().Format(time.RFC3339), id, note), req.Source)
	return a.clone(), nil
}

// camerasNote says how many cameras an approval covers, for an audit reason.
func camerasNote(cams []string) string {
	if len(cams) < 2 {
		return ""
	}
	return fmt.Sprintf(" of %d cameras in one export", len(cams))
}

func (a *Approval) clone() Approval {
	out := *a
	out.Cameras = slices.Clone(a.Cameras)
	return out
}

// PendingApproval returns an approval by id.
func (s *Service) PendingApproval(id string) (Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.approvals[id]
	if a == nil || a.used || s.cfg.Now().Sub(a.Created) > approvalTTL {
		return Approval{}, ErrExpired
	}
	return a.clone(), nil
}

// Approve lets approver (another user holding [Approve]) confirm an approval with their password and TOTP
// code, on the requester's screen. A refused attempt is audited on the approval's cameras too.
func (s *Service) Approve(ctx context.Context, id, approver, password, code, source string) error {
	a, err := s.PendingApproval(id)
	if err != nil {
		return err
	}
	sub := Subject{User: approver, Via: "approval"}
	if err := s.verifyApprover(ctx, a.Requester, approver, password, code, source); err != nil {
		s.Event(sub, "approve", a.Object(), "fail",
			fmt.Sprintf("dual authorization of %s%s requested by %s (approval %s) refused: %v", a.Request.Action, camerasNote(a.cameras()), a.Requester, a.ID, err), source)
		return err
	}
	s.mu.Lock()
	if p := s.approvals[id]; p != nil {
		p.ApprovedBy = approver
	}
	s.mu.Unlock()
	s.Event(sub, "approve", a.Object(), "ok",
		fmt.Sprintf("dual authorization of %s%s requested by %s (approval %s)", a.Request.Action, camerasNote(a.cameras()), a.Requester, a.ID), source)
	return nil
}

// UseApproval consumes an approved approval for its requester: it can be used once, and only for exactly
// the cameras it covers (in any order): the second person approved that set as one export, with the
// requester's reason for it, so a different set — even a smaller one — is a different export, which needs
// its own approval. Every camera is decided again through [Service.Decide], so a right lost meanwhile
// still denies, with a [*RefusedError] naming each camera refused. Use is audited on the whole set.
func (s *Service) UseApproval(id string, sub Subject, cameras []string, source string) (Approval, error) {
	cams, err := approvalCameras(cameras)
	if err != nil {
		return Approval{}, fmt.Errorf("approval: %w: %w", err, ErrDenied)
	}
	s.mu.Lock()
	a := s.approvals[id]
	if a == nil || a.used || a.ApprovedBy == "" || a.Requester != sub.User || s.cfg.Now().Sub(a.Created) > approvalTTL {
		s.mu.Unlock()
		return Approval{}, fmt.Errorf("approval missing, not approved, used or expired: %w", ErrDenied)
	}
	if !slices.Equal(cams, a.cameras()) {
		out := a.clone()
		s.mu.Unlock()
		s.Event(sub, "approval.use", out.Object(), "fail",
			fmt.Sprintf("approval %s covers %s, asked for %s", id, strings.Join(out.cameras(), ","), strings.Join(cams, ",")), source)
		return Approval{}, fmt.Errorf("approval covers cameras %s, not %s: %w", strings.Join(out.cameras(), ","), strings.Join(cams, ","), ErrDenied)
	}
	a.used = true
	out := a.clone()
	delete(s.approvals, id)
	s.mu.Unlock()
	var refused []string
	for _, cam := range out.cameras() {
		req := out.Request
		req.Subject, req.Source, req.Camera = sub, source, cam
		if d := s.Decide(req); !d.Allow {
			refused = append(refused, "camera "+cam+": "+d.Reason)
		}
	}
	if len(out.cameras()) == 0 {
		req := out.Request
		req.Subject, req.Source = sub, source
		if d := s.Decide(req); !d.Allow {
			refused = append(refused, d.Reason)
		}
	}
	if len(refused) > 0 {
		s.Event(sub, "approval.use", out.Object(), "fail", fmt.Sprintf("approval %s approved by %s: %s", id, out.ApprovedBy, strings.Join(refused, "; ")), source)
		return Approval{}, &RefusedError{Refused: refused}
	}
	s.Event(sub, "approval.use", out.Object(), "ok",
		fmt.Sprintf("%s%s, approval %s approved by %s", out.Request.Action, camerasNote(out.cameras()), id, out.ApprovedBy), source)
	return out, nil
}
