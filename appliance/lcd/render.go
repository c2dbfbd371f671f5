package lcd

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"sync"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/gomonobold"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// Colours of the graphical pages.
var (
	ColorBackground = color.RGBA{0x0b, 0x0f, 0x14, 0xff}
	ColorText       = color.RGBA{0xff, 0xff, 0xff, 0xff}
	ColorBody       = color.RGBA{0xe8, 0xea, 0xed, 0xff}
	// LevelColors are the header bar's colours by [Level].
	LevelColors = [...]color.RGBA{
		LevelOK:    {0x1b, 0x7f, 0x3b, 0xff},
		LevelInfo:  {0x1f, 0x5f, 0xa8, 0xff},
		LevelWarn:  {0xb8, 0x6e, 0x00, 0xff},
		LevelAlarm: {0xb3, 0x26, 0x1e, 0xff},
	}
)

var (
	fontsOnce          sync.Once
	fontMono, fontBold *opentype.Font
	fontsErr           error
)

func fonts() (*opentype.Font, *opentype.Font, error) {
	fontsOnce.Do(func() {
		if fontMono, fontsErr = opentype.Parse(gomono.TTF); fontsErr != nil {
			return
		}
		fontBold, fontsErr = opentype.Parse(gomonobold.TTF)
	})
	return fontMono, fontBold, fontsErr
}

// Layout is where a [Renderer] puts things, in pixels.
type Layout struct {
	Width, Height int
	// Header is the title bar; Icon the page icon inside it.
	Header, Icon image.Rectangle
	// TitleDot is the title's baseline origin; BadgeRight the x where the badge ends.
	TitleDot   image.Point
	BadgeRight int
	// TitleSize and BodySize are the font sizes in pixels (Go Mono Bold and Go Mono).
	TitleSize, BodySize float64
	// Lines are the body lines' boxes and LineDots their baseline origins.
	Lines    []image.Rectangle
	LineDots []image.Point
}

// Renderer draws pages as images with the Go fonts: a coloured header bar with an icon, the title and the
// badge, then the body lines in a monospaced face sized so that Cols characters fit the width.
type Renderer struct {
	lay         Layout
	title, body font.Face
	cols, rows  int
}

// NewRenderer lays out pages of cols×rows characters on a w×h panel.
func NewRenderer(w, h, cols, rows int) (*Renderer, error) {
	if w < 64 || h < 32 || w > 4096 || h > 4096 || cols < 8 || rows < 2 {
		return nil, fmt.Errorf("%w: %dx%d panel for %dx%d characters", ErrConfig, w, h, cols, rows)
	}
	mono, bold, err := fonts()
	if err != nil {
		return nil, fmt.Errorf("lcd: parse Go fonts: %w", err)
	}
	hh := max(h/5, 16)
	pad := max(hh/8, 2)
	lay := Layout{Width: w, Height: h, Header: image.Rect(0, 0, w, hh)}
	lay.Icon = image.Rect(pad, pad, hh-pad, hh-pad)
	lay.TitleSize = math.Floor(float64(hh) * 0.5)
	// Go Mono's advance is 1229/2048 em.
	const adv = 1229.0 / 2048
	lh := (h - hh) / (rows - 1)
	lay.BodySize = math.Floor(min(float64(lh)*0.72, float64(w-2*pad)/(float64(cols)*adv)))
	title, err := opentype.NewFace(bold, &opentype.FaceOptions{Size: lay.TitleSize, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil, fmt.Errorf("lcd: title face: %w", err)
	}
	body, err := opentype.NewFace(mono, &opentype.FaceOptions{Size: lay.BodySize, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil, fmt.Errorf("lcd: body face: %w", err)
	}
	tm := title.Metrics()
	lay.TitleDot = image.Pt(hh+pad, (hh+tm.Ascent.Ceil()-tm.Descent.Ceil())/2)
	lay.BadgeRight = w - 2*pad
	bm := body.Metrics()
	left := (w - int(math.Ceil(float64(cols)*adv*lay.BodySize))) / 2
	for i := 0; i < rows-1; i++ {
		top := hh + i*lh
		r := image.Rect(0, top, w, top+lh)
		lay.Lines = append(lay.Lines, r)
		lay.LineDots = append(lay.LineDots, image.Pt(left, top+(lh+bm.Ascent.Ceil()-bm.Descent.Ceil())/2))
	}
	return &Renderer{lay: lay, title: title, body: body, cols: cols, rows: rows}, nil
}

// Layout returns the renderer's geometry.
func (r *Renderer) Layout() Layout {
	l := r.lay
	l.Lines = append([]image.Rectangle(nil), r.lay.Lines...)
	l.LineDots = append([]image.Point(nil), r.lay.LineDots...)
	return l
}

// TitleFace and BodyFace are the faces the renderer draws with.
func (r *Renderer) TitleFace() font.Face { return r.title }

// BodyFace is the face of the body lines.
func (r *Renderer) BodyFace() font.Face { return r.body }

// Render draws a page into dst (which must be Width×Height), or a new image when dst is nil.
func (r *Renderer) Render(p Page, dst *image.RGBA) *image.RGBA {
	l := r.lay
	if dst == nil || dst.Bounds() != image.Rect(0, 0, l.Width, l.Height) {
		dst = image.NewRGBA(image.Rect(0, 0, l.Width, l.Height))
	}
	draw.Draw(dst, dst.Bounds(), image.NewUniform(ColorBackground), image.Point{}, draw.Src)
	lvl := p.Level
	if lvl < 0 || int(lvl) >= len(LevelColors) {
		lvl = LevelAlarm
	}
	draw.Draw(dst, l.Header, image.NewUniform(LevelColors[lvl]), image.Point{}, draw.Src)
	drawIcon(dst, l.Icon, iconOf(p), ColorText)

	// The badge yields to the title; Go Mono's advance is the same for every character.
	adv := max(font.MeasureString(r.title, "M").Ceil(), 1)
	room := (l.BadgeRight - l.TitleDot.X) / adv
	title := fit(p.Title, room)
	badge := fit(p.Badge, max(room-len(title)-1, 0))
	bw := font.MeasureString(r.title, badge).Ceil()
	text(dst, r.title, ColorText, l.TitleDot, title)
	text(dst, r.title, ColorText, image.Pt(l.BadgeRight-bw, l.TitleDot.Y), badge)
	for i, line := range p.Lines {
		if i >= len(l.Lines) {
			break
		}
		text(dst, r.body, ColorBody, l.LineDots[i], fit(line, r.cols))
	}
	return dst
}

func text(dst draw.Image, face font.Face, c color.Color, dot image.Point, s string) {
	d := font.Drawer{Dst: dst, Src: image.NewUniform(c), Face: face, Dot: fixed.P(dot.X, dot.Y)}
	d.DrawString(s)
}

// Icon is a page's pictogram.
type Icon int

// Icons.
const (
	IconNetwork Icon = iota
	IconKey
	IconRecord
	IconDisk
	IconBell
	IconStop
)

func iconOf(p Page) Icon {
	return Icon(pageGlyph(p)) // the glyph numbers follow the icon order
}

// drawIcon paints a simple pictogram into box, defined on the unit square.
func drawIcon(dst *image.RGBA, box image.Rectangle, ic Icon, c color.RGBA) {
	w, h := float64(box.Dx()), float64(box.Dy())
	for y := box.Min.Y; y < box.Max.Y; y++ {
		for x := box.Min.X; x < box.Max.X; x++ {
			u, v := (float64(x-box.Min.X)+0.5)/w, (float64(y-box.Min.Y)+0.5)/h
			if iconInk(ic, u, v) {
				dst.SetRGBA(x, y, c)
			}
		}
	}
}

func iconInk(ic Icon, u, v float64) bool {
	dist := func(cx, cy float64) float64 { return math.Hypot(u-cx, v-cy) }
	switch ic {
	case IconNetwork: // a dot and two arcs opening upwards
		d := dist(0.5, 0.85)
		up := v <= 0.85 && math.Abs(u-0.5) <= (0.85-v)*1.1
		return d < 0.1 || (up && ((d > 0.3 && d < 0.42) || (d > 0.58 && d < 0.7)))
	case IconKey: // a ring and a shaft with two teeth
		d := dist(0.3, 0.5)
		shaft := u >= 0.45 && u <= 0.95 && v >= 0.45 && v <= 0.57
		teeth := (u >= 0.7 && u <= 0.78 || u >= 0.86 && u <= 0.95) && v > 0.57 && v <= 0.75
		return (d > 0.12 && d < 0.24) || shaft || teeth
	case IconRecord:
		return dist(0.5, 0.5) < 0.38
	case IconDisk: // a cylinder seen from the side
		body := u >= 0.15 && u <= 0.85 && v >= 0.25 && v <= 0.8
		top := math.Pow((u-0.5)/0.35, 2)+math.Pow((v-0.25)/0.12, 2) <= 1
		inner := u >= 0.22 && u <= 0.78 && v >= 0.42 && v <= 0.72
		return (body || top) && !inner
	case IconBell:
		dome := dist(0.5, 0.45) < 0.3 && v <= 0.45
		skirt := v > 0.45 && v <= 0.75 && math.Abs(u-0.5) <= 0.3+(v-0.45)*0.5
		clapper := dist(0.5, 0.85) < 0.09
		return dome || skirt || clapper
	}
	return u >= 0.2 && u <= 0.8 && v >= 0.2 && v <= 0.8
}
