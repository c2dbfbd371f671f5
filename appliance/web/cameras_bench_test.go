package web

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"testing"
	"time"

	"github.com/edgenvr/nvr/appliance/camera"
)

// BenchmarkCameraPage renders the camera page of a 256-camera fleet with 100 alarms and a finished
// 256-camera rollout (the template alone: the fleet's data is made up, the access decision is not
// part of it).
func BenchmarkCameraPage(b *testing.B) {
	t, err := template.New("").Funcs(funcs).Funcs(template.FuncMap{"roleForm": roleForm, "hasRole": hasRole}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	d := camerasData{Available: true, MaxImageMB: 128, Models: []string{"CamSim-1080"}}
	job := rolloutJob{ID: "0123456789ab", By: "admin", Model: "CamSim-1080", Version: "2.0.0", State: "done", Started: now}
	for i := range 256 {
		c := camera.Camera{ID: fmt.Sprintf("cam-cs%012x", i), Name: fmt.Sprintf("Camera %d", i), HTTPS: "10.0.0.1:443",
			Manufacturer: "EdgeNVR Labs", Model: "CamSim-1080", Serial: fmt.Sprintf("CS%012X", i), MAC: "02:00:00:00:00:01",
			Firmware: "1.0.0", SupportsHTTPS: true, SupportsDot1X: true, AdoptedAt: now.Add(-time.Hour), PasswordRotated: now}
		d.Cameras = append(d.Cameras, cameraRow{Camera: c, FirmwareAge: "1 h 0 min", PasswordAge: "0 s", Latest: "2.0.0"})
		d.Stale = append(d.Stale, staleRow{StaleEntry: camera.StaleEntry{Camera: c.ID, Model: c.Model, Running: "1.0.0", Latest: "2.0.0"}, Since: "1 h 0 min"})
		job.Report.Cameras = append(job.Report.Cameras, camera.CameraStatus{Camera: c.ID, Stage: "bulk", From: "1.0.0", To: "2.0.0", State: "updated"})
	}
	for i := range maxAlarmsShown {
		d.Alarms = append(d.Alarms, camera.Alarm{Time: now, Camera: fmt.Sprintf("cam-%d", i), Kind: camera.AlarmTamper, Active: true, Detail: "scene change"})
	}
	d.Jobs = []rolloutJob{job}
	p := page{Title: "Cameras", User: "admin", CSRF: "tok", Nav: map[string]bool{"system.cameras": true}, Data: d}
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := t.ExecuteTemplate(&buf, "cameras.html", p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "page-bytes")
}

// BenchmarkFirmwareUpload reads a 32 MiB firmware image from a multipart form (hashing it on the way).
func BenchmarkFirmwareUpload(b *testing.B) {
	img := bytes.Repeat([]byte("firmware"), 4<<20)
	ct, body := multipartBody(b, [][2]string{{"csrf", "tok"}, {"model", "CamSim-1080"}, {"version", "2.0.0"}, {"camera", "cam-a"}}, img)
	raw := body.Bytes()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		up, err := readFirmwareUpload(ct, io.NopCloser(bytes.NewReader(raw)), 64<<20)
		if err != nil || len(up.Image) != len(img) {
			b.Fatal(err)
		}
	}
}
