package authz

import (
	"context"
	"fmt"
	"time"
)

// Approval is a request for a second person to approve an export or a deletion.
type Approval struct {
	ID         string
	Requester  string
	Request    Request
	To         time.Time // end of the range, for exports and deletions
	Note       string    // the requester's reason
	Created    time.Time
	ApprovedBy string
	used       bool
}

// RequestApproval records that req (already allowed by [Service.Decide] with NeedApproval) waits for a
// second person. The returned id is not secret: the approval needs the approver's own credentials.
func (s *Service) RequestApproval(req Request, to time.Time, note string) (Approval, error) {
	id, err := s.token(12)
	if err != nil {
		return Approval{}, err
	}
	a := &Approval{ID: id, Requester: req.Subject.User, Request: req, To: to, Note: note, Created: s.cfg.Now()}
	s.mu.Lock()
	s.approvals[id] = a
	s.mu.Unlock()
	s.Event(req.Subject, "approval.request", req.Object(), "pending", string(req.Action)+": "+note, req.Source)
	return *a, nil
}

// PendingApproval returns an approval by id.
func (s *Service) PendingApproval(id string) (Approval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.approvals[id]
	if a == nil || a.used || s.cfg.Now().Sub(a.Created) > approvalTTL {
		return Approval{}, ErrExpired
	}
	return *a, nil
}

// Approve lets approver (another user holding [Approve]) confirm an approval with their password and TOTP
// code, on the requester's screen.
func (s *Service) Approve(ctx context.Context, id, approver, password, code, source string) error {
	a, err := s.PendingApproval(id)
	if err != nil {
		return err
	}
	if err := s.verifyApprover(ctx, a.Requester, approver, password, code, source); err != nil {
		return err
	}
	s.mu.Lock()
	if p := s.approvals[id]; p != nil {
		p.ApprovedBy = approver
	}
	s.mu.Unlock()
	s.Event(Subject{User: approver, Via: "approval"}, "approve", a.Request.Object(), "ok",
		fmt.Sprintf("dual authorization of %s requested by %s", a.Request.Action, a.Requester), source)
	return nil
}

// UseApproval consumes an approved approval for its requester: it can be used once. The action is decided
// again, so a right lost meanwhile still denies.
func (s *Service) UseApproval(id string, sub Subject, source string) (Approval, error) {
	s.mu.Lock()
	a := s.approvals[id]
	if a == nil || a.used || a.ApprovedBy == "" || a.Requester != sub.User || s.cfg.Now().Sub(a.Created) > approvalTTL {
		s.mu.Unlock()
		return Approval{}, fmt.Errorf("approval: %w", ErrDenied)
	}
	a.used = true
	out := *a
	delete(s.approvals, id)
	s.mu.Unlock()
	req := out.Request
	req.Subject, req.Source = sub, source
	if d := s.Decide(req); !d.Allow {
		return Approval{}, fmt.Errorf("%s: %w", d.Reason, ErrDenied)
	}
	return out, nil
}
