package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procCPU returns the user+system CPU time a process has used, from /proc/PID/stat.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which is in parentheses and may hold spaces).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// procRSS returns a process's resident set size in bytes.
func procRSS(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// BenchmarkRecording measures nvrd alone while it records N camsim cameras (1080p H.264 at about 4 Mbit/s,
// RTSP over TCP on loopback) with full encryption and an fdatasync per fragment: CPU seconds per recorded
// GB, CPU % of one core per camera, and resident memory (the mean and the peak of samples every 0.5 s over
// the window). Run it with
//
//	go test -run '^$' -bench Recording -benchtime 1x ./e2e/
//
// NVR_BENCH_WINDOW sets the measured window (default 20s); NVR_BENCH_PROFILE=DIR writes nvrd's CPU profile
// for each camera count there.
func BenchmarkRecording(b *testing.B) {
	window := 20 * time.Second
	if v := os.Getenv("NVR_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		window = d
	}
	for _, n := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("cameras=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchRecording(b, n, window)
			}
		})
	}
}

func benchRecording(b *testing.B, n int, window time.Duration) {
	cs := startCamsim(b, n)
	cams := map[string]string{}
	for i := 1; i <= n; i++ {
		cams[fmt.Sprintf("cam%d", i)] = fmt.Sprintf("rtsp://%s/cam%d", cs.RTSP, i)
	}
	extra := []string{"-transport", "tcp", "-log-level", "warn"}
	if dir := os.Getenv("NVR_BENCH_PROFILE"); dir != "" {
		extra = append(extra, "-cpuprofile", filepath.Join(dir, fmt.Sprintf("nvrd-%d.pprof", n)),
			"-memprofile", filepath.Join(dir, fmt.Sprintf("nvrd-%d.heap", n)))
	}
	a := newAppliance(b, "", cams, cs.Password, extra...)
	a.args = append(a.args, "-log-level", "info")
	nvrd := a.start()
	pid := nvrd.cmd.Process.Pid
	// Warm up: every camera connected and writing.
	waitFor(b, 60*time.Second, "recording under way", func() bool { return segmentBytes(b, a.data) > int64(n)*1<<20 })
	time.Sleep(3 * time.Second)

	cpu0, bytes0, t0 := procCPU(b, pid), segmentBytes(b, a.data), time.Now()
	b.ResetTimer()
	// The measured window: the recorder runs at the cameras' pace. RSS is sampled every half second, since
	// it swings with the fragments being built (the cameras' key frames come at about the same time).
	var rssSum, rssMax int64
	var samples int
	for deadline := t0.Add(window); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		r := procRSS(b, pid)
		rssSum += r
		rssMax = max(rssMax, r)
		samples++
	}
	b.StopTimer()
	cpu1, bytes1, t1 := procCPU(b, pid), segmentBytes(b, a.data), time.Now()
	rss := rssSum / int64(samples)
	nvrd.stop(b, 60*time.Second)

	cpu := (cpu1 - cpu0).Seconds()
	gb := float64(bytes1-bytes0) / 1e9
	wall := t1.Sub(t0).Seconds()
	b.ReportMetric(cpu/gb, "cpu-s/GB")
	b.ReportMetric(100*cpu/wall/float64(n), "cpu%/camera")
	b.ReportMetric(float64(bytes1-bytes0)*8/wall/1e6/float64(n), "Mbit/s/camera")
	b.ReportMetric(float64(rss)/(1<<20), "RSS-MiB")
	b.ReportMetric(float64(rssMax)/(1<<20), "RSS-max-MiB")
	b.ReportMetric(float64(rss)/(1<<20)/float64(n), "RSS-MiB/camera")
}
