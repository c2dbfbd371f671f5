package lcd

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgenvr/nvr/board"
	"github.com/google/go-cmp/cmp"
)

func TestPagesText(t *testing.T) {
	st := testState()
	for kind := PageKind(0); kind < numPages; kind++ {
		p := Build(kind, st, pendingView(), testNow, 20, 4)
		if diff := cmp.Diff(wantPages[kind], p.Text(20)); diff != "" {
			t.Errorf("%s page (-want +got):\n%s", kind, diff)
		}
	}
	if diff := cmp.Diff(wantNetworkAfterSetup, Build(PageNetwork, st, SetupView{}, testNow, 20, 4).Text(20)); diff != "" {
		t.Errorf("network page after setup (-want +got):\n%s", diff)
	}
}

func TestPageLevels(t *testing.T) {
	st := testState()
	want := map[PageKind]Level{PageNetwork: LevelInfo, PageRecording: LevelWarn, PageStorage: LevelOK, PageAlarms: LevelAlarm}
	for k, lvl := range want {
		if got := Build(k, st, pendingView(), testNow, 20, 4).Level; got != lvl {
			t.Errorf("%s: level %d, want %d", k, got, lvl)
		}
	}
	st.Cameras = []Camera{{Name: "a", State: CameraError}}
	st.Storage.Problem = "disk write errors"
	if p := Build(PageRecording, st, SetupView{}, testNow, 20, 4); p.Level != LevelAlarm {
		t.Errorf("no camera recording: level %d", p.Level)
	}
	if p := Build(PageStorage, st, SetupView{}, testNow, 20, 4); p.Level != LevelAlarm || p.Lines[2] != "disk write errors" {
		t.Errorf("storage problem: %+v", p)
	}
}

// After setup no page shows a code, even when a faulty source still hands one over.
func TestNoCodeAfterSetup(t *testing.T) {
	st := testState()
	leaky := SetupView{Pending: false, Code: testCode, Expires: testNow.Add(time.Hour), CanReveal: true}
	for kind := PageKind(0); kind < numPages; kind++ {
		for _, rows := range []int{2, 4, 8} {
			p := Build(kind, st, leaky, testNow, 20, rows)
			noCode(t, kind.String(), strings.Join(p.Text(20), "\n")+p.Title+p.Badge)
		}
	}
	// The navigation never reveals after setup, whatever the buttons do.
	s := screen{canReveal: true, idleReturn: time.Minute, revealFor: time.Hour}
	for i := 0; i < 10; i++ {
		s.input(ButtonEvent{Role: board.ButtonNext, Long: i%2 == 0}, testNow, false)
		if _, v := s.update(testNow, st, false, testCode, testNow.Add(time.Hour), true); v.Code != "" || v.Pending {
			t.Fatalf("view after setup: %+v", v)
		}
	}
}

func TestPageEdgeCases(t *testing.T) {
	st := State{Hostname: "a-very-long-hostname-indeed", WebPort: 8443,
		Addresses: []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::1234")}}
	p := Build(PageNetwork, st, SetupView{}, testNow, 20, 4)
	// The title wins over a long hostname; an address that does not fit with its scheme is shown bare.
	want := []string{"NETWORK a-very-long-", "10.1.2.3:8443       ", "[fd00::1234]:8443   ", "                    "}
	if diff := cmp.Diff(want, p.Text(20)); diff != "" {
		t.Errorf("network page (-want +got):\n%s", diff)
	}
	// Without buttons the code is announced on the console; with them, a long press reveals it.
	p = Build(PageNetwork, State{}, SetupView{Pending: true}, testNow, 20, 4)
	if p.Lines[1] != "Setup code: see the" || p.Level != LevelInfo {
		t.Errorf("hidden code without buttons: %q", p.Lines)
	}
	p = Build(PageNetwork, State{}, SetupView{Pending: true, CanReveal: true}, testNow, 20, 4)
	if p.Lines[1] != "Hold button to show" {
		t.Errorf("hidden code with buttons: %q", p.Lines)
	}
	// Many cameras: trouble first, the rest summed up.
	st = State{}
	for _, n := range []string{"c1", "c2", "c3", "c4", "c5"} {
		st.Cameras = append(st.Cameras, Camera{Name: n, State: CameraRecording})
	}
	st.Cameras[3].State = CameraConnecting
	p = Build(PageRecording, st, SetupView{}, testNow, 20, 4)
	if diff := cmp.Diff([]string{"c4              CONN", "c1               REC", "+3 more, all REC"}, p.Lines); diff != "" {
		t.Errorf("many cameras (-want +got):\n%s", diff)
	}
	// Hostile text from a camera never reaches the panel raw.
	st.Alarms = []Alarm{{ID: "x", Time: testNow.Add(-48 * time.Hour), Camera: "cam\x1b[2J", Text: "tamper\n\u00e9\u202e"}}
	p = Build(PageAlarms, st, SetupView{}, testNow, 20, 4)
	if p.Lines[0] != "12Mar cam [2J tamper" {
		t.Errorf("alarm line %q", p.Lines[0])
	}
	for _, l := range p.Lines {
		for i := 0; i < len(l); i++ {
			if l[i] < 0x20 || l[i] > 0x7e {
				t.Fatalf("unprintable byte %#x in %q", l[i], l)
			}
		}
	}
	if got := humanBytes(999); got != "999B" {
		t.Errorf("humanBytes(999) = %q", got)
	}
	if got := humanBytes(15_300_000_000_000_000); got != "15P" {
		t.Errorf("humanBytes = %q", got)
	}
}

func TestScreenNavigation(t *testing.T) {
	st := testState()
	st.Alarms = nil
	s := screen{canReveal: true, idleReturn: 2 * time.Minute, revealFor: 10 * time.Minute}
	now := testNow
	exp := now.Add(30 * time.Minute)

	// First boot: the first code comes up at once.
	k, v := s.update(now, st, true, testCode, exp, true)
	if k != PageNetwork || v.Code != testCode {
		t.Fatalf("first code: page %s view %+v", k, v)
	}
	// Paging forward and back.
	s.input(ButtonEvent{Role: board.ButtonNext}, now, true)
	if k, _ = s.update(now, st, true, testCode, exp, true); k != PageRecording {
		t.Fatalf("next: %s", k)
	}
	s.input(ButtonEvent{Role: board.ButtonPrev}, now, true)
	s.input(ButtonEvent{Role: board.ButtonPrev}, now, true)
	if k, _ = s.update(now, st, true, testCode, exp, true); k != PageAlarms {
		t.Fatalf("prev wraps: %s", k)
	}
	// After RevealFor the code hides; a long press shows it again.
	now = now.Add(11 * time.Minute)
	k, v = s.update(now, st, true, testCode, exp, true)
	if k != PageNetwork || v.Code != "" || !v.Pending {
		t.Fatalf("after reveal time: page %s view %+v", k, v)
	}
	s.input(ButtonEvent{Role: board.ButtonNext, Long: true}, now, true)
	if k, v = s.update(now, st, true, testCode, exp, true); k != PageNetwork || v.Code != testCode {
		t.Fatalf("long press: page %s view %+v", k, v)
	}
	// A new code (the old one expired) is not revealed by itself on a board with buttons.
	now = now.Add(11 * time.Minute)
	if _, v = s.update(now, st, true, "WXYZ-WXYZ-WXYZ", now.Add(30*time.Minute), true); v.Code != "" {
		t.Fatalf("second code revealed without a press: %+v", v)
	}
	// Setup done: home becomes the recording page and a long press shows nothing.
	if k, v = s.update(now, st, false, "", time.Time{}, false); k != PageRecording || v.Pending || v.Code != "" {
		t.Fatalf("after setup: page %s view %+v", k, v)
	}
	s.input(ButtonEvent{Role: board.ButtonSelect, Long: true}, now, false)
	if k, v = s.update(now, st, false, "", time.Time{}, false); k != PageRecording || v.Code != "" {
		t.Fatalf("long press after setup: page %s view %+v", k, v)
	}
	// A new alarm comes to the front and stays there while the user reads it.
	s.input(ButtonEvent{Role: board.ButtonNext}, now, false) // storage
	st.Alarms = []Alarm{{ID: "n1", Time: now, Text: "tamper"}}
	if k, _ = s.update(now, st, false, "", time.Time{}, false); k != PageAlarms {
		t.Fatalf("new alarm: %s", k)
	}
	now = now.Add(time.Minute)
	if k, _ = s.update(now, st, false, "", time.Time{}, false); k != PageAlarms {
		t.Fatalf("alarm page left early: %s", k)
	}
	s.input(ButtonEvent{Role: board.ButtonNext}, now, false)
	if k, _ = s.update(now, st, false, "", time.Time{}, false); k != PageNetwork {
		t.Fatalf("next after alarms: %s", k)
	}
	// Idle: home (alarms while any are active).
	now = now.Add(3 * time.Minute)
	if k, _ = s.update(now, st, false, "", time.Time{}, false); k != PageAlarms {
		t.Fatalf("idle with alarm: %s", k)
	}
}

// Without buttons the code is shown for as long as it is valid and setup is pending.
func TestScreenWithoutButtons(t *testing.T) {
	s := screen{idleReturn: 2 * time.Minute, revealFor: 10 * time.Minute}
	exp := testNow.Add(30 * time.Minute)
	for _, d := range []time.Duration{0, 20 * time.Minute, 29 * time.Minute} {
		if k, v := s.update(testNow.Add(d), State{}, true, testCode, exp, true); k != PageNetwork || v.Code != testCode || v.CanReveal {
			t.Fatalf("+%v: page %s view %+v", d, k, v)
		}
	}
}

func TestSetupCodes(t *testing.T) {
	now := testNow
	pending := true
	c := NewSetupCodes(func() bool { return pending }, func() time.Time { return now })
	if _, _, ok := c.SetupCode(); ok {
		t.Fatal("code before one was offered")
	}
	c.Offer(testCode, now.Add(time.Minute))
	if code, _, ok := c.SetupCode(); !ok || code != testCode || !c.SetupPending() {
		t.Fatalf("offered code: %q %v", code, ok)
	}
	for _, s := range []string{c.String(), c.LogValue().String()} {
		noCode(t, "String/LogValue", s)
	}
	now = now.Add(time.Minute)
	if _, _, ok := c.SetupCode(); ok {
		t.Fatal("expired code still shown")
	}
	c.Offer(testCode, now.Add(time.Minute))
	pending = false
	if _, _, ok := c.SetupCode(); ok || c.SetupPending() {
		t.Fatal("code shown after setup")
	}
	pending = true // even if a bug brought the state back, the old code is gone
	if _, _, ok := c.SetupCode(); ok {
		t.Fatal("code remembered across setup")
	}
}
