package authz

import (
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Subject is who asks: a user through a session or a service account through an API token.
type Subject struct {
	User string
	// Via is "session", "token" (an API token, or a service account's bridge credential), "bridge" (a
	// person's bridge credential) or "login" (during the login flow).
	Via string
	// Ref is a non-secret reference to the session or token (its public id), for the audit log.
	Ref string
}

func (s Subject) String() string {
	if s.User == "" {
		return "anonymous"
	}
	if s.Ref != "" {
		return s.User + " (" + s.Via + " " + s.Ref + ")"
	}
	return s.User
}

// Request is one access decision to take.
type Request struct {
	Subject Subject
	Action  Action
	// Camera is the object of camera actions.
	Camera string
	// From is the oldest recorded instant the action touches (playback, export, delete); zero for live and
	// system actions.
	From time.Time
	// Source is the client's address.
	Source string
}

// Object renders the request's object for the audit log.
func (r Request) Object() string {
	switch {
	case r.Camera != "" && !r.From.IsZero():
		return "camera/" + r.Camera + "@" + r.From.UTC().Format(time.RFC3339)
	case r.Camera != "":
		return "camera/" + r.Camera
	}
	return "system"
}

// Decision is the answer of [Service.Decide].
type Decision struct {
	Allow bool
	// Reason says why, in words fit for the user and the audit log.
	Reason string
	// NeedApproval is set on an allowed export or deletion that the role's policy puts under dual
	// authorization: the caller must obtain an approval ([Service.RequestApproval]) before acting.
	NeedApproval bool
}

// Decide is the only gate: it answers whether req is allowed now, denying by default, and writes the
// decision to the audit log whatever it is. An audit write failure denies.
func (s *Service) Decide(req Request) Decision {
	now := s.cfg.Now()
	d := s.decide(req, now)
	res := "deny"
	if d.Allow {
		res = "allow"
	}
	reason := d.Reason
	if d.NeedApproval {
		reason += " (needs approval)"
	}
	if err := s.audit.append(Entry{Kind: "decision", Subject: req.Subject.String(), Action: string(req.Action),
		Object: req.Object(), Result: res, Reason: reason, Source: req.Source}); err != nil {
		s.log.Error("audit append failed: denying", "err", err)
		return Decision{Reason: "audit log unavailable"}
	}
	return d
}

func (s *Service) decide(req Request, now time.Time) Decision {
	if !req.Action.Valid() {
		return Decision{Reason: "unknown action"}
	}
	if req.Subject.User == "" {
		return Decision{Reason: "not signed in"}
	}
	if req.Action.IsCamera() != (req.Camera != "") {
		return Decision{Reason: "action and object do not match"}
	}
	var u *User
	var roles []Role
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if u, err = s.getUser(tx, req.Subject.User); err != nil {
			return err
		}
		roles = s.rolesOf(tx, u.Roles)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return Decision{Reason: "no such account"}
	}
	if err != nil {
		return Decision{Reason: "account unreadable"}
	}
	if u.Disabled {
		return Decision{Reason: "account disabled"}
	}
	if u.Service != (req.Subject.Via == "token") {
		return Decision{Reason: "account used through the wrong door"}
	}
	reason := fmt.Sprintf("no role grants %s on %s", req.Action, req.Object())
	if req.Camera != "" {
		reason = fmt.Sprintf("no role grants %s on camera %s", req.Action, req.Camera)
	}
	allowed, needApproval := false, true
	for _, r := range roles {
		if !r.grants(req.Action, req.Camera) {
			continue
		}
		if !r.Schedule.Allows(now) {
			reason = fmt.Sprintf("outside the schedule of role %s", r.Name)
			continue
		}
		if !req.From.IsZero() && r.MaxRecordingAge > 0 && now.Sub(req.From) > r.MaxRecordingAge {
			reason = fmt.Sprintf("recording older than the %s limit of role %s", r.MaxRecordingAge, r.Name)
			continue
		}
		allowed = true
		switch {
		case req.Action == Export && r.DualExport, req.Action == Delete && r.DualDelete:
		default:
			needApproval = false
		}
	}
	if !allowed {
		return Decision{Reason: reason}
	}
	return Decision{Allow: true, Reason: "granted", NeedApproval: needApproval && (req.Action == Export || req.Action == Delete)}
}

func (r *Role) grants(a Action, camera string) bool {
	if !a.IsCamera() {
		return slices.Contains(r.System, a)
	}
	return slices.Contains(r.Cameras[camera], a) || slices.Contains(r.Cameras[AllCameras], a)
}

// Event writes a non-decision event (a login, a change of account) to the audit log.
func (s *Service) Event(subject Subject, action, object, result, reason, source string) {
	if err := s.audit.append(Entry{Kind: "event", Subject: subject.String(), Action: action, Object: object,
		Result: result, Reason: reason, Source: source}); err != nil {
		s.log.Error("audit append failed", "err", err, "action", action)
	}
}

// Visible reports, without auditing, whether subject would be allowed a system action now. It only hides
// navigation the user cannot use; it is never a gate: the page itself calls Decide.
func (s *Service) Visible(subject Subject, a Action) bool {
	return s.decide(Request{Subject: subject, Action: a}, s.cfg.Now()).Allow
}
