package lcd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/gomonobold"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// fbCase is a panel the tests render on: a 2.8" 320×240 RGB565 TFT (fbtft) and a 480×320 XRGB8888 panel
// whose rows are padded.
var fbCases = []struct {
	name string
	geo  Geometry
}{
	{"rgb565-320x240", Geometry{Width: 320, Height: 240, Stride: 640, Format: RGB565}},
	{"xrgb8888-480x320", Geometry{Width: 480, Height: 320, Stride: 480*4 + 64, Format: XRGB8888}},
}

// readPanel decodes the framebuffer file the way a person's eye sees the panel, independently of the
// driver's code: RGB565 expanded to 8 bits, XRGB8888 taken as is.
func readPanel(t *testing.T, path string, g Geometry) *image.RGBA {
	t.Helper()
	buf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(buf) < g.Stride*g.Height {
		t.Fatalf("framebuffer file has %d bytes, want %d", len(buf), g.Stride*g.Height)
	}
	img := image.NewRGBA(image.Rect(0, 0, g.Width, g.Height))
	for y := 0; y < g.Height; y++ {
		for x := 0; x < g.Width; x++ {
			var c color.RGBA
			switch g.Format.BitsPerPixel {
			case 16:
				px := binary.LittleEndian.Uint16(buf[y*g.Stride+2*x:])
				r, g, b := uint8(px>>11), uint8(px>>5&0x3f), uint8(px&0x1f)
				c = color.RGBA{r<<3 | r>>2, g<<2 | g>>4, b<<3 | b>>2, 0xff}
			case 32:
				o := buf[y*g.Stride+4*x:]
				c = color.RGBA{o[2], o[1], o[0], 0xff}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// ink is a pixel bright enough to be text or icon (white on the dark body or a coloured header).
func ink(c color.RGBA) bool {
	return 299*int(c.R)+587*int(c.G)+114*int(c.B) > 170*1000
}

// refText draws s in fg on bg with a Go font face of the given size at dot onto a picture of the panel's
// size, as the test's own reference for what the text must look like.
func refText(t *testing.T, ttf []byte, size float64, w, h int, dot image.Point, s string, fg, bg color.Color) *image.RGBA {
	t.Helper()
	f, err := opentype.Parse(ttf)
	if err != nil {
		t.Fatal(err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(bg), image.Point{}, draw.Src)
	d := font.Drawer{Dst: img, Src: image.NewUniform(fg), Face: face, Dot: fixed.P(dot.X, dot.Y)}
	d.DrawString(s)
	return img
}

func titleFace(t *testing.T, size float64) font.Face {
	t.Helper()
	f, err := opentype.Parse(gomonobold.TTF)
	if err != nil {
		t.Fatal(err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	return face
}

// inkDiff counts the pixels of r where one picture has ink and the other has not, and the ink in want.
func inkDiff(got, want *image.RGBA, r image.Rectangle) (diff, inked int) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			g, w := ink(got.RGBAAt(x, y)), ink(want.RGBAAt(x, y))
			if w {
				inked++
			}
			if g != w {
				diff++
			}
		}
	}
	return diff, inked
}

// textMatches reports whether region r of got shows s as the reference draws it (at most 3 % of the
// reference's ink differs, which allows for colour quantisation of anti-aliased edges).
func textMatches(t *testing.T, got *image.RGBA, r image.Rectangle, ttf []byte, size float64, dot image.Point, s string, fg, bg color.Color) (bool, string) {
	ref := refText(t, ttf, size, got.Bounds().Dx(), got.Bounds().Dy(), dot, s, fg, bg)
	diff, inked := inkDiff(got, ref, r)
	if inked == 0 {
		return diff == 0, fmt.Sprintf("%d stray ink pixels where nothing is written", diff)
	}
	return diff*100 <= inked*3, fmt.Sprintf("%d of %d ink pixels differ", diff, inked)
}

func near(a, b color.RGBA) bool {
	d := func(x, y uint8) int { return max(int(x), int(y)) - min(int(x), int(y)) }
	return d(a.R, b.R) <= 8 && d(a.G, b.G) <= 4 && d(a.B, b.B) <= 8
}

func writePNG(t *testing.T, path string, img image.Image) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func newFileFB(t *testing.T, g Geometry) (*Framebuffer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fb0")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fb, err := OpenFramebuffer(FramebufferConfig{Device: path, Geometry: g})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fb.Close(); err != nil {
			t.Error(err)
		}
	})
	return fb, path
}

// TestFramebufferPages renders every page into a file-backed framebuffer, turns it into a PNG and checks
// the header colour, the icon and every text region against the test's own rendering of the expected text.
// With NVR_LCD_SCREENSHOTS set to a directory, the 320×240 pictures are saved there as lcd-<page>.png
// (docs/screenshots for the README).
func TestFramebufferPages(t *testing.T) {
	shots := os.Getenv("NVR_LCD_SCREENSHOTS")
	for _, fc := range fbCases {
		t.Run(fc.name, func(t *testing.T) {
			fb, path := newFileFB(t, fc.geo)
			lay := fb.Renderer().Layout()
			dir := t.TempDir()
			pages := map[string]Page{}
			for kind := PageKind(0); kind < numPages; kind++ {
				pages[kind.String()] = Build(kind, testState(), pendingView(), testNow, 20, 4)
			}
			pages["network-after-setup"] = Build(PageNetwork, testState(), SetupView{}, testNow, 20, 4)
			pages["stopped"] = Build(PageStopped, State{}, SetupView{}, testNow, 20, 4)
			for name, p := range pages {
				if err := fb.Show(p); err != nil {
					t.Fatal(err)
				}
				img := readPanel(t, path, fc.geo)
				writePNG(t, filepath.Join(dir, "lcd-"+name+".png"), img)
				if shots != "" && fc.geo.Format == RGB565 {
					writePNG(t, filepath.Join(shots, "lcd-"+name+".png"), img)
				}
				// The PNG decodes to the same picture.
				f, err := os.Open(filepath.Join(dir, "lcd-"+name+".png"))
				if err != nil {
					t.Fatal(err)
				}
				dec, err := png.Decode(f)
				f.Close()
				if err != nil || dec.Bounds().Dx() != fc.geo.Width {
					t.Fatalf("%s: PNG: %v", name, err)
				}
				checkPage(t, name, img, lay, p)
			}
		})
	}
}

func checkPage(t *testing.T, name string, img *image.RGBA, lay Layout, p Page) {
	t.Helper()
	// Header: the level's colour along the top edge, clear of text.
	if got := img.RGBAAt(lay.Width/2, 1); !near(got, LevelColors[p.Level]) {
		t.Errorf("%s: header colour %v, want %v", name, got, LevelColors[p.Level])
	}
	// Icon: a solid pictogram, a fair share of its box inked.
	inked := 0
	for y := lay.Icon.Min.Y; y < lay.Icon.Max.Y; y++ {
		for x := lay.Icon.Min.X; x < lay.Icon.Max.X; x++ {
			if ink(img.RGBAAt(x, y)) {
				inked++
			}
		}
	}
	if area := lay.Icon.Dx() * lay.Icon.Dy(); inked*10 < area || inked*10 > area*8 {
		t.Errorf("%s: icon has %d ink pixels of %d", name, inked, area)
	}
	// Title and badge: bold, the badge right-aligned; both fit the header in full here.
	adv := int(math.Ceil(lay.TitleSize * 1229 / 2048))
	titleBox := image.Rect(lay.TitleDot.X-2, 0, lay.TitleDot.X+adv*len(p.Title)+2, lay.Header.Max.Y)
	if ok, why := textMatches(t, img, titleBox, gomonobold.TTF, lay.TitleSize, lay.TitleDot, p.Title, ColorText, LevelColors[p.Level]); !ok {
		t.Errorf("%s: title %q not in the header: %s", name, p.Title, why)
	}
	if p.Badge != "" {
		bdot := image.Pt(lay.BadgeRight-font.MeasureString(titleFace(t, lay.TitleSize), p.Badge).Ceil(), lay.TitleDot.Y)
		badgeBox := image.Rect(bdot.X-2, 0, lay.BadgeRight+2, lay.Header.Max.Y)
		if ok, why := textMatches(t, img, badgeBox, gomonobold.TTF, lay.TitleSize, bdot, p.Badge, ColorText, LevelColors[p.Level]); !ok {
			t.Errorf("%s: badge %q not in the header: %s", name, p.Badge, why)
		}
	}
	// Body lines.
	for i, line := range p.Lines {
		if ok, why := textMatches(t, img, lay.Lines[i], gomono.TTF, lay.BodySize, lay.LineDots[i], line, ColorBody, ColorBackground); !ok {
			t.Errorf("%s: line %d %q not on the panel: %s", name, i, line, why)
		}
	}
}

// The pixel check tells one character from another, so it would catch a code left on the panel.
func TestFramebufferCheckDiscriminates(t *testing.T) {
	fb, path := newFileFB(t, fbCases[0].geo)
	lay := fb.Renderer().Layout()
	if err := fb.Show(Build(PageNetwork, testState(), pendingView(), testNow, 20, 4)); err != nil {
		t.Fatal(err)
	}
	img := readPanel(t, path, fbCases[0].geo)
	if ok, why := textMatches(t, img, lay.Lines[1], gomono.TTF, lay.BodySize, lay.LineDots[1], "Code ABCD-EFGH-JKLM", ColorBody, ColorBackground); !ok {
		t.Fatalf("setup code not on the panel before setup: %s", why)
	}
	if ok, _ := textMatches(t, img, lay.Lines[1], gomono.TTF, lay.BodySize, lay.LineDots[1], "Code ABCD-EFGH-JKLN", ColorBody, ColorBackground); ok {
		t.Fatal("a one-character difference passes the pixel check")
	}
	// After setup: no line of any page shows the code.
	for kind := PageKind(0); kind < numPages; kind++ {
		if err := fb.Show(Build(kind, testState(), SetupView{}, testNow, 20, 4)); err != nil {
			t.Fatal(err)
		}
		img := readPanel(t, path, fbCases[0].geo)
		for i := range lay.Lines {
			for _, s := range []string{"Code " + testCode, testCode} {
				if ok, _ := textMatches(t, img, lay.Lines[i], gomono.TTF, lay.BodySize, lay.LineDots[i], s, ColorBody, ColorBackground); ok {
					t.Fatalf("%s page line %d shows the setup code after setup", kind, i)
				}
			}
		}
	}
}

// Snapshot reads back what Show wrote; an unchanged page is not written again.
func TestFramebufferSnapshotAndSkip(t *testing.T) {
	for _, fc := range fbCases {
		fb, path := newFileFB(t, fc.geo)
		p := Build(PageStorage, testState(), SetupView{}, testNow, 20, 4)
		if err := fb.Show(p); err != nil {
			t.Fatal(err)
		}
		snap, err := fb.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		ref := readPanel(t, path, fc.geo)
		if d, _ := inkDiff(snap, ref, snap.Bounds()); d != 0 {
			t.Fatalf("%s: snapshot differs from the panel in %d pixels", fc.name, d)
		}
		// Scribble on the "panel"; an unchanged page must not be rewritten (no needless writes to SPI).
		if err := os.WriteFile(path, make([]byte, fc.geo.Stride*fc.geo.Height), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := fb.Show(p); err != nil {
			t.Fatal(err)
		}
		if snap, _ := fb.Snapshot(); snap.RGBAAt(1, 1) != (color.RGBA{0, 0, 0, 0xff}) {
			t.Fatalf("%s: unchanged page written again", fc.name)
		}
	}
}

func TestFramebufferGeometry(t *testing.T) {
	bad := []Geometry{
		{Width: 10, Height: 240, Stride: 20, Format: RGB565},
		{Width: 320, Height: 240, Stride: 100, Format: RGB565},
		{Width: 320, Height: 240, Stride: 640, Format: PixelFormat{BitsPerPixel: 8}},
		{Width: 320, Height: 240, Stride: 640, Format: PixelFormat{16, Bitfield{12, 5}, Bitfield{5, 6}, Bitfield{0, 5}}},
		{Width: 5000, Height: 240, Stride: 50000, Format: XRGB8888},
	}
	for _, g := range bad {
		if err := g.Validate(); !errors.Is(err, ErrGeometry) {
			t.Errorf("%+v: %v", g, err)
		}
	}
	// fb_var_screeninfo and fb_fix_screeninfo as a 64-bit kernel fills them for a 320×240 RGB565 panel.
	v, f := screenInfo(320, 240, 16, 640, RGB565, 8)
	g, err := parseScreenInfo(v, f, 8)
	if err != nil || g.Width != 320 || g.Height != 240 || g.Stride != 640 || g.Format != RGB565 {
		t.Fatalf("parse: %+v %v", g, err)
	}
	v, f = screenInfo(480, 320, 32, 1984, XRGB8888, 4)
	if g, err = parseScreenInfo(v, f, 4); err != nil || g.Stride != 1984 || g.Format != XRGB8888 {
		t.Fatalf("parse 32-bit: %+v %v", g, err)
	}
	if _, err := parseScreenInfo(v[:100], f, 4); !errors.Is(err, ErrGeometry) {
		t.Fatalf("short var info: %v", err)
	}
	// A character device that is not a framebuffer is refused with the ioctl's error.
	if _, err := OpenFramebuffer(FramebufferConfig{Device: "/dev/null"}); err == nil {
		t.Fatal("/dev/null accepted as a framebuffer")
	}
}

// screenInfo builds the two ioctl structures for a word size of 4 or 8 bytes.
func screenInfo(w, h, bpp, stride int, pf PixelFormat, word int) (v, f []byte) {
	v = make([]byte, fbVarInfoSize)
	put := func(i int, x uint32) { binary.NativeEndian.PutUint32(v[4*i:], x) }
	put(0, uint32(w))
	put(1, uint32(h))
	put(2, uint32(w))
	put(3, uint32(2*h))
	put(6, uint32(bpp))
	put(8, pf.Red.Offset)
	put(9, pf.Red.Length)
	put(11, pf.Green.Offset)
	put(12, pf.Green.Length)
	put(14, pf.Blue.Offset)
	put(15, pf.Blue.Length)
	f = make([]byte, 80)
	copy(f, "test fb")
	off := (16 + word + 16 + 6 + 3) &^ 3
	binary.NativeEndian.PutUint32(f[off:], uint32(stride))
	return v, f
}
