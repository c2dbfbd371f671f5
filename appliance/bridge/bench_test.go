package bridge

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/base"
)

// rawReader is a minimal RTSP reader (DESCRIBE, SETUP, PLAY over TCP, then it discards what arrives), so
// that the measured CPU is the bridge's, not a client library's.
func rawReader(tb testing.TB, e *testEnv, path string, play base.Header) (*rtspConn, string) {
	tb.Helper()
	rc := dialRTSP(tb, e.rtsp, false, "")
	res, ok := rc.do(base.Describe, path, nil)
	if !ok {
		tb.Fatal("DESCRIBE: connection closed")
	}
	auth := func(m base.Method, p string) base.HeaderValue {
		return base.HeaderValue{digest(tb, res, m, rc.url(p), "bench", e.benchCred)}
	}
	if res2, ok := rc.do(base.Describe, path, base.Header{"Authorization": auth(base.Describe, path)}); !ok || res2.StatusCode != base.StatusOK {
		tb.Fatalf("DESCRIBE %s: %+v", path, res2)
	}
	track := path + "/trackID=0"
	if i := strings.IndexByte(path, '?'); i >= 0 {
		track = path[:i] + "/trackID=0" + path[i:]
	}
	res2, ok := rc.do(base.Setup, track, base.Header{"Transport": base.HeaderValue{"RTP/AVP/TCP;unicast;interleaved=0-1"},
		"Authorization": auth(base.Setup, track)})
	if !ok || res2.StatusCode != base.StatusOK {
		tb.Fatalf("SETUP: %+v", res2)
	}
	sess, _, _ := strings.Cut(strings.Join(res2.Header["Session"], ""), ";")
	h := base.Header{"Session": base.HeaderValue{sess}, "Authorization": auth(base.Play, path)}
	for k, v := range play {
		h[k] = v
	}
	u, _ := base.ParseURL(rc.url(path))
	rc.cseq++
	h["CSeq"] = base.HeaderValue{fmt.Sprint(rc.cseq)}
	req := base.Request{Method: base.Play, URL: u, Header: h}
	b, _ := req.Marshal()
	if _, err := rc.c.Write(b); err != nil {
		tb.Fatal(err)
	}
	return rc, sess
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLiveStreams measures the CPU the bridge spends per live stream: 8 cameras at about 4 Mbit/s
// (25 frames of 20 kB a second, delivered as one-second fragments as the recorder does), 64 readers in
// all, each over TCP. It reports cpu-ms per stream-second and streams per core (1000 / that); the
// readers only discard bytes, and the fake recorder's cost is included (it is small).
func BenchmarkLiveStreams(b *testing.B) {
	const cameras, perCamera = 8, 8
	e := newEnv(b, func(c *Config) { c.MaxSessions = 256; c.MaxConnsPerSource = 256; c.MaxConns = 256 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.live.run(ctx, b, time.Second, 20000)
	var bytesIn atomic.Int64
	var wg sync.WaitGroup
	for c := range cameras {
		for range perCamera {
			rc, _ := rawReader(b, e, fmt.Sprintf("/cam%d", c+1), nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64<<10)
				for {
					n, err := rc.r.Read(buf)
					bytesIn.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}
	waitFor(b, 20*time.Second, "every reader playing", func() bool { return e.b.Stats().Sessions == cameras*perCamera })
	b.ResetTimer()
	cpu0, t0, in0 := cpuTime(), time.Now(), bytesIn.Load()
	for range b.N {
		deadline := time.Now().Add(time.Second)
		waitFor(b, 2*time.Second, "a second", func() bool { return time.Now().After(deadline) })
	}
	cpu, wall := cpuTime()-cpu0, time.Since(t0)
	b.StopTimer()
	streamSec := float64(cameras*perCamera) * wall.Seconds()
	perStream := float64(cpu.Milliseconds()) / streamSec
	b.ReportMetric(perStream, "cpu-ms/stream-s")
	b.ReportMetric(1000/perStream, "streams/core")
	b.ReportMetric(float64(bytesIn.Load()-in0)*8/1e6/streamSec, "Mbit/s/stream")
	if bytesIn.Load() == in0 {
		b.Fatal("the readers received nothing")
	}
	cancel()
}

// BenchmarkReplayStart measures playback start latency: from sending PLAY with a clock range to the first
// RTP packet, over in-memory recordings (the vault and TPM costs are measured by the e2e benchmark).
func BenchmarkReplayStart(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.MaxSessions = 256; c.MaxConnsPerSource = 256 })
	start := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	e.rec.addSegments(b, "cam1", start, 600, 60)
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		at := start.Add(time.Duration(i*37%590) * time.Second).Add(300 * time.Millisecond)
		t0 := time.Now()
		rc, _ := rawReader(b, e, "/cam1/replay", base.Header{"Range": base.HeaderValue{"clock=" + formatClock(at) + "-"}})
		var res base.Response
		if err := res.Unmarshal(rc.r); err != nil || res.StatusCode != base.StatusOK {
			b.Fatalf("PLAY: %v %d", err, res.StatusCode)
		}
		var f base.InterleavedFrame
		if err := f.Unmarshal(rc.r); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		rc.c.Close()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
