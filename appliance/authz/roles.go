package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Action is what a subject asks to do. Camera actions name a camera as their object; system actions have
// none.
type Action string

// Camera actions.
const (
	Live     Action = "camera.live"
	Playback Action = "camera.playback"
	Export   Action = "camera.export"
	Delete   Action = "camera.delete" // deleting recordings or lifting a hold
)

// System actions.
const (
	ManageUsers   Action = "system.users"
	ManageCameras Action = "system.cameras"
	ManageNetwork Action = "system.network"
	ManageStorage Action = "system.storage"
	ManageUpdate  Action = "system.update"
	ReadAudit     Action = "system.audit"
	ViewConfig    Action = "system.config.view" // see (not change) the appliance configuration
	Approve       Action = "system.approve"     // act as the second person in dual authorization
	ViewStatus    Action = "system.status"      // the dashboard
	// UseBridge is the right to take video out to external systems over the RTSP bridge: to hold a bridge
	// credential (issued to the account itself, or by an administrator to a service account). It opens no
	// camera: every stream is still decided per camera with [Live] or [Playback]. A role that grants it
	// with [Playback] lets its holders copy recordings out without the approval [Role.DualExport] asks of
	// exports; the default roles grant it to the administrator only.
	UseBridge Action = "system.bridge"
)

// CameraActions and SystemActions list every action a role can be granted.
var (
	CameraActions = []Action{Live, Playback, Export, Delete}
	SystemActions = []Action{ManageUsers, ManageCameras, ManageNetwork, ManageStorage, ManageUpdate, ReadAudit, ViewConfig, Approve, ViewStatus, UseBridge}
)

// IsCamera reports whether a is a camera action.
func (a Action) IsCamera() bool { return slices.Contains(CameraActions, a) }

// Valid reports whether a is a known action.
func (a Action) Valid() bool { return a.IsCamera() || slices.Contains(SystemActions, a) }

// AllCameras as a key of [Role.Cameras] grants its rights on every camera, including cameras added later.
const AllCameras = "*"

// Role is a named set of rights with the conditions under which they hold.
type Role struct {
	Name string `json:"name"`
	// Cameras maps a camera name (or [AllCameras]) to the camera actions granted on it.
	Cameras map[string][]Action `json:"cameras"`
	// System lists the system actions granted.
	System []Action `json:"system"`
	// Schedule restricts when the role's rights hold; nil means at any time.
	Schedule *Schedule `json:"schedule,omitempty"`
	// MaxRecordingAge is the oldest recording the role may see or export; 0 means no limit.
	MaxRecordingAge time.Duration `json:"max_recording_age"`
	// DualExport and DualDelete ask for a second person's approval of exports and deletions.
	DualExport bool `json:"dual_export"`
	DualDelete bool `json:"dual_delete"`
}

// Validate checks the role's names and actions.
func (r *Role) Validate() error {
	if !validName(r.Name) {
		return fmt.Errorf("role name %q: use letters, digits, ., _ and - (at most 64)", r.Name)
	}
	for cam, acts := range r.Cameras {
		if cam != AllCameras && !validName(cam) {
			return fmt.Errorf("role %s: camera name %q is invalid", r.Name, cam)
		}
		for _, a := range acts {
			if !a.IsCamera() {
				return fmt.Errorf("role %s: %q is not a camera action", r.Name, a)
			}
		}
	}
	for _, a := range r.System {
		if !a.Valid() || a.IsCamera() {
			return fmt.Errorf("role %s: %q is not a system action", r.Name, a)
		}
	}
	if r.MaxRecordingAge < 0 {
		return fmt.Errorf("role %s: negative maximum recording age", r.Name)
	}
	if r.Schedule != nil {
		return r.Schedule.Validate()
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Schedule is a weekly time schedule in a time zone.
type Schedule struct {
	// Zone is an IANA time zone name ("Europe/Berlin"); empty means UTC.
	Zone    string   `json:"zone,omitempty"`
	Windows []Window `json:"windows"`
}

// Window is a span of one weekday, [From, To) in minutes after midnight.
type Window struct {
	Day  time.Weekday `json:"day"`
	From int          `json:"from"`
	To   int          `json:"to"`
}

// Validate checks the zone and the windows.
func (s *Schedule) Validate() error {
	if _, err := s.location(); err != nil {
		return err
	}
	for _, w := range s.Windows {
		if w.Day < time.Sunday || w.Day > time.Saturday || w.From < 0 || w.To > 24*60 || w.From >= w.To {
			return fmt.Errorf("schedule window %v %d-%d is invalid", w.Day, w.From, w.To)
		}
	}
	return nil
}

func (s *Schedule) location() (*time.Location, error) {
	if s.Zone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(s.Zone)
	if err != nil {
		return nil, fmt.Errorf("schedule zone %q: %w", s.Zone, err)
	}
	return loc, nil
}

// Allows reports whether t falls in one of the windows. A nil schedule allows any time.
func (s *Schedule) Allows(t time.Time) bool {
	if s == nil {
		return true
	}
	loc, err := s.location()
	if err != nil {
		return false
	}
	lt := t.In(loc)
	m := lt.Hour()*60 + lt.Minute()
	for _, w := range s.Windows {
		if w.Day == lt.Weekday() && m >= w.From && m < w.To {
			return true
		}
	}
	return false
}

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// ParseSchedule reads the text form used on the roles page: lines or ";"-separated items such as
// "Mon-Fri 08:00-18:00" or "Sat 09:00-13:00", optionally a first item "zone Europe/Berlin". An empty
// string is a nil schedule (any time).
func ParseSchedule(text string) (*Schedule, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil
	}
	if len(text) > 4096 {
		return nil, errors.New("schedule too long")
	}
	s := &Schedule{}
	for _, item := range strings.FieldsFunc(text, func(r rune) bool { return r == ';' || r == '\n' }) {
		f := strings.Fields(item)
		if len(f) == 0 {
			continue
		}
		if len(f) == 2 && strings.EqualFold(f[0], "zone") {
			s.Zone = f[1]
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("schedule item %q: want DAY[-DAY] HH:MM-HH:MM", item)
		}
		d0, d1, err := parseDays(f[0])
		if err != nil {
			return nil, err
		}
		from, to, err := parseSpan(f[1])
		if err != nil {
			return nil, err
		}
		for d := d0; ; d = (d + 1) % 7 {
			s.Windows = append(s.Windows, Window{Day: d, From: from, To: to})
			if d == d1 {
				break
			}
		}
	}
	return s, s.Validate()
}

func parseDays(s string) (time.Weekday, time.Weekday, error) {
	a, b, ok := strings.Cut(strings.ToLower(s), "-")
	d0, ok0 := dayNames[a]
	if !ok {
		if !ok0 {
			return 0, 0, fmt.Errorf("schedule day %q", s)
		}
		return d0, d0, nil
	}
	d1, ok1 := dayNames[b]
	if !ok0 || !ok1 {
		return 0, 0, fmt.Errorf("schedule days %q", s)
	}
	return d0, d1, nil
}

func parseSpan(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("schedule span %q", s)
	}
	from, err1 := parseClock(a)
	to, err2 := parseClock(b)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("schedule span %q", s)
	}
	return from, to, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok {
		return 0, errors.New("no colon")
	}
	hh, err := strconv.Atoi(h)
	if err != nil {
		return 0, err
	}
	mm, err := strconv.Atoi(m)
	if err != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, errors.New("bad clock")
	}
	return hh*60 + mm, nil
}

// String renders the schedule in the form ParseSchedule reads.
func (s *Schedule) String() string {
	if s == nil {
		return ""
	}
	var parts []string
	if s.Zone != "" {
		parts = append(parts, "zone "+s.Zone)
	}
	for _, w := range s.Windows {
		parts = append(parts, fmt.Sprintf("%s %02d:%02d-%02d:%02d", w.Day.String()[:3], w.From/60, w.From%60, w.To/60, w.To%60))
	}
	return strings.Join(parts, "; ")
}

// DefaultRoles are created with the first administrator. Only the administrator may take video out over
// the RTSP bridge ([UseBridge]): an operator's exports need a second person's approval, which the bridge's
// replay would bypass, and a viewer watches on the appliance's pages; an administrator grants the right to
// the roles (or service accounts' roles) that feed another system.
func DefaultRoles() []Role {
	return []Role{
		{Name: "administrator", Cameras: map[string][]Action{AllCameras: CameraActions}, System: SystemActions},
		{Name: "operator", Cameras: map[string][]Action{AllCameras: {Live, Playback, Export}}, System: []Action{ViewStatus}, DualExport: true},
		{Name: "viewer", Cameras: map[string][]Action{AllCameras: {Live}}, System: []Action{ViewStatus}},
		{Name: "auditor", System: []Action{ReadAudit, ViewConfig, ViewStatus}},
	}
}

// rightsVersion numbers the list of actions roles are stored against: it is written with every role, and
// a role read with an older number is brought up to date by [upgradeRole]. Version 1 added [UseBridge].
const rightsVersion = 1

// roleFields is Role without its JSON methods.
type roleFields Role

// MarshalJSON writes the role with the current rights version, so that a role saved now (the role editor
// included) is never upgraded again when read: an administrator's choice to leave a new right out stays.
func (r Role) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		roleFields
		RightsVersion int `json:"rights_version"`
	}{roleFields(r), rightsVersion})
}

// UnmarshalJSON reads a role and upgrades one stored before the current rights version ([upgradeRole]).
func (r *Role) UnmarshalJSON(b []byte) error {
	var v struct {
		roleFields
		RightsVersion int `json:"rights_version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Role(v.roleFields)
	upgradeRole(r, v.RightsVersion)
	return nil
}

// upgradeRole brings a role stored at rights version from up to date, so that an upgrade of the appliance
// changes nobody's rights: each new right is granted to the stored roles that could already do what it
// now guards, and to no other.
//
// Version 1 ([UseBridge]): before it, every account whose role could watch a camera live or play its
// recordings back could use the bridge (service accounts with credentials an administrator issued, people
// with their own), the per-camera decision being its only gate. Such roles keep it, so that an external
// system's feed does not stop at the update, except roles that put exports under dual authorization: the
// administrator asked for a second person's approval before recordings leave the appliance, which the
// bridge's replay bypasses; the explicit choice wins over the implicit capability. The administrator sees
// and changes the result in the role editor; the role is stored at the current version when next saved.
func upgradeRole(r *Role, from int) {
	if from < 1 && !slices.Contains(r.System, UseBridge) && !r.DualExport && r.watches() {
		r.System = append(slices.Clip(r.System), UseBridge)
	}
}

// watches reports whether the role grants live view or playback on some camera.
func (r *Role) watches() bool {
	for _, acts := range r.Cameras {
		if slices.Contains(acts, Live) || slices.Contains(acts, Playback) {
			return true
		}
	}
	return false
}
