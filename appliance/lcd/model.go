package lcd

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// State is what the display shows about the appliance, filled by the wiring from the appliance's status.
type State struct {
	// Hostname is the appliance's name on the client network.
	Hostname string
	// Addresses are the appliance's addresses on the client network, where the web pages are served; the
	// first is the one shown most prominently. Never camera-network addresses.
	Addresses []netip.Addr
	// WebPort is the HTTPS port (0 or 443: not shown).
	WebPort int
	Cameras []Camera
	Storage Storage
	// Alarms are the active alarms, newest first.
	Alarms []Alarm
}

// CameraState is a camera's recording state in a word.
type CameraState int

// Camera states, in the order the recording page lists them (trouble first).
const (
	CameraError CameraState = iota
	CameraVideoLoss
	CameraConnecting
	CameraRecording
)

// Short is the camera state as four characters.
func (s CameraState) Short() string {
	switch s {
	case CameraRecording:
		return "REC"
	case CameraVideoLoss:
		return "LOSS"
	case CameraConnecting:
		return "CONN"
	default:
		return "ERR"
	}
}

// Camera is one camera as the display sees it.
type Camera struct {
	Name  string
	State CameraState
}

// Storage is the recording file system.
type Storage struct {
	UsedBytes, TotalBytes uint64
	// Oldest is the start of the oldest recording kept (zero: none).
	Oldest time.Time
	// Retention is the configured maximum age (zero: until the disk is full).
	Retention time.Duration
	// Problem, if not empty, is a short description of a storage fault ("disk full", "write errors").
	Problem string
}

// Alarm is an active alarm.
type Alarm struct {
	// ID identifies the alarm; a new ID brings the alarms page to the front.
	ID     string
	Time   time.Time
	Camera string
	Text   string
}

// PageKind is one of the display's pages, in paging order.
type PageKind int

// The pages.
const (
	PageNetwork PageKind = iota // network address and, while no administrator exists, setup
	PageRecording
	PageStorage
	PageAlarms
	numPages
	// PageStopped is shown when the daemon stops, so a stale page never claims the box is recording.
	PageStopped PageKind = 100
)

func (k PageKind) String() string {
	switch k {
	case PageNetwork:
		return "network"
	case PageRecording:
		return "recording"
	case PageStorage:
		return "storage"
	case PageAlarms:
		return "alarms"
	case PageStopped:
		return "stopped"
	}
	return "page" + strconv.Itoa(int(k))
}

// Level is how urgent a page looks.
type Level int

// Levels.
const (
	LevelOK Level = iota
	LevelInfo
	LevelWarn
	LevelAlarm
)

// Page is one screenful, as text: a title line and body lines of at most Cols characters each, printable
// ASCII only. Every driver shows the same text; a graphical driver adds an icon and colour by Kind and Level.
type Page struct {
	Kind  PageKind
	Level Level
	// Title is the left part of the first line; Badge its right part.
	Title, Badge string
	// Lines are the body lines (Rows-1 of them).
	Lines []string
}

// Text returns the page as Rows lines of exactly cols characters, as a character display shows it
// (without the icon).
func (p Page) Text(cols int) []string {
	out := make([]string, 0, 1+len(p.Lines))
	out = append(out, header(p.Title, p.Badge, cols))
	for _, l := range p.Lines {
		out = append(out, pad(l, cols))
	}
	return out
}

func (p Page) equal(q Page) bool {
	return p.Kind == q.Kind && p.Level == q.Level && p.Title == q.Title && p.Badge == q.Badge && slices.Equal(p.Lines, q.Lines)
}

// header puts title left and badge right on one line of cols characters; the badge yields.
func header(title, badge string, cols int) string {
	t := fit(title, cols)
	b := fit(badge, max(cols-len(t)-1, 0))
	return t + strings.Repeat(" ", cols-len(t)-len(b)) + b
}

func pad(s string, cols int) string {
	s = fit(s, cols)
	return s + strings.Repeat(" ", cols-len(s))
}

// fit makes untrusted text safe for any display: printable ASCII only (others become '?', control
// characters and newlines a space), at most n characters, runes never split.
func fit(s string, n int) string {
	if n <= 0 {
		return ""
	}
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= n {
			break
		}
		switch {
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// SetupView is what the pages need to know about first-boot setup.
type SetupView struct {
	// Pending: no administrator exists yet.
	Pending bool
	// Code is the setup code to show, or "" to hide it (not revealed, none outstanding, or setup done).
	Code string
	// Expires is when Code stops working.
	Expires time.Time
	// CanReveal: a button exists whose long press reveals the code.
	CanReveal bool
}

// Build makes one page from the appliance's state. It is a pure function: the same inputs give the same
// page. A setup code appears only on PageNetwork, and only while setup.Pending.
func Build(kind PageKind, st State, setup SetupView, now time.Time, cols, rows int) Page {
	body := max(rows-1, 1)
	var p Page
	switch kind {
	case PageNetwork:
		p = networkPage(st, setup, now, cols)
	case PageRecording:
		p = recordingPage(st, cols, body)
	case PageStorage:
		p = storagePage(st, now, cols)
	case PageAlarms:
		p = alarmsPage(st, now, cols, body)
	default:
		p = Page{Kind: PageStopped, Level: LevelAlarm, Title: "NVR STOPPED",
			Lines: []string{"Recording is off.", "", "Restarting..."}}
	}
	p.Kind = kind
	if kind >= numPages {
		p.Kind = PageStopped
	}
	for len(p.Lines) < body {
		p.Lines = append(p.Lines, "")
	}
	p.Lines = p.Lines[:body]
	for i, l := range p.Lines {
		p.Lines[i] = fit(l, cols)
	}
	p.Title, p.Badge = fit(p.Title, cols), fit(p.Badge, cols)
	return p
}

// webAddr is how a browser reaches addr: https://A or https://[v6]:port, or the bare address when that
// does not fit.
func webAddr(a netip.Addr, port, cols int) string {
	host := a.String()
	if a.Is6() && !a.Is4In6() {
		host = "[" + host + "]"
	}
	if port != 0 && port != 443 {
		host += ":" + strconv.Itoa(port)
	}
	if len("https://")+len(host) <= cols {
		return "https://" + host
	}
	return host
}

func networkPage(st State, setup SetupView, now time.Time, cols int) Page {
	p := Page{Title: "NETWORK", Badge: st.Hostname, Level: LevelOK}
	addr := "no address yet"
	var more string
	if len(st.Addresses) > 0 {
		addr = webAddr(st.Addresses[0], st.WebPort, cols)
		if len(st.Addresses) > 1 {
			more = webAddr(st.Addresses[1], st.WebPort, cols)
		}
	} else {
		p.Level = LevelWarn
	}
	if !setup.Pending {
		p.Lines = []string{addr, more, ""}
		if more == "" && st.WebPort != 0 && st.WebPort != 443 {
			p.Lines[1] = "web port " + strconv.Itoa(st.WebPort)
		}
		return p
	}
	p.Title, p.Level = "SETUP", LevelInfo
	switch {
	case setup.Code != "":
		line := "Code " + setup.Code
		if len(line) > cols {
			line = setup.Code
		}
		until := ""
		if !setup.Expires.IsZero() {
			until = "valid until " + setup.Expires.In(now.Location()).Format("15:04")
		}
		p.Lines = []string{addr, line, until}
	case setup.CanReveal:
		p.Lines = []string{addr, "Hold button to show", "the setup code"}
	default:
		p.Lines = []string{addr, "Setup code: see the", "local console"}
	}
	return p
}

func recordingPage(st State, cols, body int) Page {
	cams := slices.Clone(st.Cameras)
	slices.SortStableFunc(cams, func(a, b Camera) int {
		if a.State != b.State {
			return int(a.State) - int(b.State)
		}
		return strings.Compare(a.Name, b.Name)
	})
	rec := 0
	for _, c := range cams {
		if c.State == CameraRecording {
			rec++
		}
	}
	p := Page{Title: "RECORDING", Badge: fmt.Sprintf("%d/%d", rec, len(cams)), Level: LevelOK}
	switch {
	case len(cams) == 0:
		p.Level = LevelWarn
		p.Lines = []string{"No cameras", "Adopt cameras on the", "web pages"}
		return p
	case rec == 0:
		p.Level = LevelAlarm
	case rec < len(cams):
		p.Level = LevelWarn
	}
	show := cams
	if len(cams) > body {
		show = cams[:body-1]
	}
	for _, c := range show {
		p.Lines = append(p.Lines, header(c.Name, c.State.Short(), cols))
	}
	if len(cams) > body {
		restRec := 0
		for _, c := range cams[body-1:] {
			if c.State == CameraRecording {
				restRec++
			}
		}
		if restRec == len(cams)-(body-1) {
			p.Lines = append(p.Lines, fmt.Sprintf("+%d more, all REC", restRec))
		} else {
			p.Lines = append(p.Lines, fmt.Sprintf("+%d more, %d REC", len(cams)-(body-1), restRec))
		}
	}
	return p
}

// humanBytes is a size in at most 5 characters: 999M, 1.2G, 12T.
func humanBytes(n uint64) string {
	const unit = 1000
	if n < unit {
		return strconv.FormatUint(n, 10) + "B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	suffix := string("kMGTP"[exp])
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 1, 64) + suffix
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + suffix
}

func days(d time.Duration) string {
	switch {
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "min"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

func storagePage(st State, now time.Time, cols int) Page {
	s := st.Storage
	p := Page{Title: "STORAGE", Level: LevelOK}
	if s.TotalBytes == 0 {
		p.Level = LevelAlarm
		p.Lines = []string{"No recording disk", s.Problem, ""}
		return p
	}
	used := min(s.UsedBytes, s.TotalBytes)
	pct := int(used * 100 / s.TotalBytes)
	p.Badge = strconv.Itoa(pct) + "%"
	// A bar of cols-2 cells between brackets.
	cells := cols - 2
	full := int(used * uint64(cells) / s.TotalBytes)
	bar := "[" + strings.Repeat("#", full) + strings.Repeat(".", cells-full) + "]"
	usage := "Used " + humanBytes(used) + " of " + humanBytes(s.TotalBytes)
	kept := "Oldest: none"
	if !s.Oldest.IsZero() {
		kept = "Oldest " + days(max(now.Sub(s.Oldest), 0))
	}
	if s.Retention > 0 {
		kept += " max " + days(s.Retention)
	}
	if s.Problem != "" {
		p.Level = LevelAlarm
		kept = s.Problem
	} else if pct >= 95 {
		p.Level = LevelWarn
	}
	p.Lines = []string{bar, usage, kept}
	return p
}

func alarmsPage(st State, now time.Time, cols, body int) Page {
	p := Page{Title: "ALARMS", Badge: strconv.Itoa(len(st.Alarms)), Level: LevelOK}
	if len(st.Alarms) == 0 {
		p.Badge = ""
		p.Lines = []string{"No active alarms"}
		return p
	}
	p.Level = LevelAlarm
	show := st.Alarms
	if len(show) > body {
		show = show[:body-1]
	}
	for _, a := range show {
		when := a.Time.In(now.Location()).Format("15:04")
		if now.Sub(a.Time) >= 24*time.Hour {
			when = a.Time.In(now.Location()).Format("02Jan")
		}
		what := a.Text
		if a.Camera != "" {
			what = a.Camera + " " + a.Text
		}
		p.Lines = append(p.Lines, when+" "+fit(what, cols-len(when)-1))
	}
	if len(st.Alarms) > body {
		p.Lines = append(p.Lines, fmt.Sprintf("+%d more on web page", len(st.Alarms)-(body-1)))
	}
	return p
}
