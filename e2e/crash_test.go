package e2e

import (
	"math/rand/v2"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// kill is one SIGKILL of nvrd and the restart after it.
type kill struct {
	at, restart time.Time
}

// TestKill9WhileRecording kills nvrd with SIGKILL at 20 random instants while it records two cameras. After
// each kill `nvr fsck` finds nothing wrong (segments left open are pending recovery, which the restart does),
// and the recording of each camera lost at most one fragment plus the time to restart and reconnect.
func TestKill9WhileRecording(t *testing.T) {
	const kills = 20
	cs := startCamsim(t, 2)
	a := newAppliance(t, "", map[string]string{
		"cam1": "rtsp://" + cs.RTSP + "/cam1",
		"cam2": "rtsp://" + cs.RTSP + "/cam2",
	}, cs.Password, "-segment", "4s", "-transport", "tcp")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var ks []kill
	nvrd := a.start()
	for i := 0; i < kills; i++ {
		// Wait until the pipelines write, then let a random part of a fragment or a segment pass.
		base := segmentBytes(t, a.data)
		waitFor(t, 30*time.Second, "this run writing", func() bool { return segmentBytes(t, a.data) > base })
		time.Sleep(time.Duration(500+rng.IntN(3500)) * time.Millisecond) // the random instant of the kill
		at := time.Now()
		nvrd.kill()
		if out, code := a.fsck(); code != 0 {
			t.Fatalf("kill %d: nvr fsck after SIGKILL: exit %d\n%s", i, code, out)
		}
		restart := time.Now()
		nvrd = a.start()
		ks = append(ks, kill{at: at, restart: restart})
		rec := a.events("recovery done")
		if len(rec) != i+2 {
			t.Fatalf("kill %d: %d recovery log lines for %d starts", i, len(rec), i+2)
		}
	}
	// Let the last run record past its reconnect, then stop cleanly.
	waitFor(t, 30*time.Second, "segments after the last restart", func() bool {
		for _, e := range a.events("segment closed") {
			if ts, err := time.Parse(time.RFC3339Nano, e["start"].(string)); err == nil && ts.After(ks[len(ks)-1].restart) {
				return true
			}
		}
		return false
	})
	nvrd.stop(t, 30*time.Second)
	out := a.mustFsckClean()
	t.Log(strings.TrimSpace(out))
	if strings.Contains(out, "pending:") {
		t.Errorf("fsck after a clean stop still has pending work:\n%s", out)
	}

	// Every gap in each camera's recording must be a kill's: it starts at most one fragment (the 2 s
	// fragment bound, plus slack for the clock) before a kill, and recording resumes after a restart — the
	// reconnect time, which the test measures and bounds.
	for _, cam := range []string{"cam1", "cam2"} {
		spans := recordedSpans(t, a, cam)
		var reconnects []time.Duration
		for i := 1; i < len(spans); i++ {
			from, to := spans[i-1].end, spans[i].start
			if to.Sub(from) < 100*time.Millisecond {
				continue
			}
			explained := false
			for ki, k := range ks {
				if from.Before(k.at.Add(-2500*time.Millisecond)) || from.After(k.at.Add(time.Second)) {
					continue
				}
				// Recording resumed after this kill's restart (or a later one, if a run was killed before it
				// reconnected), within 30 s of it.
				for _, k2 := range ks[ki:] {
					if !to.Before(k2.restart) && to.Before(k2.restart.Add(30*time.Second)) {
						explained = true
						reconnects = append(reconnects, to.Sub(k2.restart))
						break
					}
				}
				break
			}
			if !explained {
				t.Errorf("%s: recording gap %s – %s (%.1f s) is not explained by a kill and a reconnect", cam,
					from.Format("15:04:05.000"), to.Format("15:04:05.000"), to.Sub(from).Seconds())
			}
		}
		sort.Slice(reconnects, func(i, j int) bool { return reconnects[i] < reconnects[j] })
		if len(reconnects) > 0 {
			t.Logf("%s: %d gaps; restart-to-recording time median %v, max %v", cam, len(reconnects),
				reconnects[len(reconnects)/2].Round(time.Millisecond), reconnects[len(reconnects)-1].Round(time.Millisecond))
		}
		if len(spans) < kills/2 {
			t.Errorf("%s: only %d segments over %d restarts", cam, len(spans), kills)
		}
	}
	// Every recording is still exportable and authentic.
	for _, cam := range []string{"cam1", "cam2"} {
		path, text, code := a.export(cam, ks[0].at.Add(-time.Hour), time.Now().Add(time.Minute))
		if code != 0 {
			t.Fatalf("export %s after the kills: exit %d\n%s", cam, code, text)
		}
		ffprobe(t, path)
	}
}

type span struct{ start, end time.Time }

// recordedSpans lists a camera's segments from the index with `nvr segments`.
func recordedSpans(t *testing.T, a *appliance, cam string) []span {
	t.Helper()
	out, code := a.nvr("segments", "-data", a.data, "-camera", cam)
	if code != 0 {
		t.Fatalf("nvr segments: exit %d\n%s", code, out)
	}
	var spans []span
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] == "#" {
			continue
		}
		s, err1 := time.Parse(time.RFC3339Nano, f[1])
		e, err2 := time.Parse(time.RFC3339Nano, f[2])
		if err1 != nil || err2 != nil {
			t.Fatalf("nvr segments line %q", line)
		}
		spans = append(spans, span{s, e})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start.Before(spans[j].start) })
	return spans
}

// segmentBytes is the size of everything under the data dir's rec/ tree.
func segmentBytes(t testing.TB, data string) int64 {
	out, err := exec.Command("du", "-sb", data+"/rec").Output()
	if err != nil {
		return 0
	}
	var n int64
	for _, c := range strings.Fields(string(out))[0] {
		n = n*10 + int64(c-'0')
	}
	return n
}
