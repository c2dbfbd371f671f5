package lcd

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkHD44780Update is one page change on the character display: the diff and the bus bytes.
func BenchmarkHD44780Update(b *testing.B) {
	bus := &busLog{}
	h, err := NewHD44780(HD44780Config{Bus: bus, Sleep: func(time.Duration) {}})
	if err != nil {
		b.Fatal(err)
	}
	pages := []Page{Build(PageRecording, testState(), SetupView{}, testNow, 20, 4), Build(PageStorage, testState(), SetupView{}, testNow, 20, 4)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := h.Show(pages[i%2]); err != nil {
			b.Fatal(err)
		}
		if i%64 == 0 {
			bus.take()
			bus.rec.Ops = nil
		}
	}
}

// BenchmarkFramebufferShow is one page change on a 320×240 RGB565 panel: render, pack and write.
func BenchmarkFramebufferShow(b *testing.B) {
	path := filepath.Join(b.TempDir(), "fb0")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	fb, err := OpenFramebuffer(FramebufferConfig{Device: path, Geometry: fbCases[0].geo})
	if err != nil {
		b.Fatal(err)
	}
	defer fb.Close()
	pages := []Page{Build(PageRecording, testState(), SetupView{}, testNow, 20, 4), Build(PageStorage, testState(), SetupView{}, testNow, 20, 4)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := fb.Show(pages[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}
