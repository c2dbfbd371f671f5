package lcd

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// testNow is the fixed clock of the page tests.
var testNow = time.Date(2026, 3, 14, 14, 5, 0, 0, time.UTC)

const testCode = "ABCD-EFGH-JKLM"

// testState is an appliance with three cameras (one without video), a disk 60 % full and one alarm.
func testState() State {
	return State{
		Hostname:  "nvr-lobby",
		Addresses: []netip.Addr{netip.MustParseAddr("192.168.10.20")},
		WebPort:   443,
		Cameras: []Camera{
			{Name: "gate", State: CameraRecording},
			{Name: "yard", State: CameraRecording},
			{Name: "lobby", State: CameraVideoLoss},
		},
		Storage: Storage{UsedBytes: 1_200_000_000_000, TotalBytes: 2_000_000_000_000,
			Oldest: testNow.Add(-12 * 24 * time.Hour), Retention: 30 * 24 * time.Hour},
		Alarms: []Alarm{{ID: "a1", Time: time.Date(2026, 3, 14, 14, 3, 0, 0, time.UTC), Camera: "lobby", Text: "video loss"}},
	}
}

func pendingView() SetupView {
	return SetupView{Pending: true, Code: testCode, Expires: testNow.Add(30 * time.Minute)}
}

// wantPages is each page's text on a 20×4 display, before and after setup.
var wantPages = map[PageKind][]string{
	PageNetwork: {
		"SETUP      nvr-lobby",
		"192.168.10.20       ",
		"Code ABCD-EFGH-JKLM ",
		"valid until 14:35   ",
	},
	PageRecording: {
		"RECORDING        2/3",
		"lobby           LOSS",
		"gate             REC",
		"yard             REC",
	},
	PageStorage: {
		"STORAGE          60%",
		"[##########........]",
		"Used 1.2T of 2.0T   ",
		"Oldest 12d max 30d  ",
	},
	PageAlarms: {
		"ALARMS             1",
		"14:03 lobby video lo",
		"                    ",
		"                    ",
	},
}

var wantNetworkAfterSetup = []string{
	"NETWORK    nvr-lobby",
	"192.168.10.20       ",
	"                    ",
	"                    ",
}

// noCode fails if the setup code, or any group of it, is in s.
func noCode(t *testing.T, where, s string) {
	t.Helper()
	for _, part := range strings.Split(testCode, "-") {
		if strings.Contains(strings.ToUpper(s), part) {
			t.Fatalf("%s shows (part of) the setup code:\n%s", where, s)
		}
	}
}
