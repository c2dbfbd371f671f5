package lcd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Bitfield is one colour channel's place in a pixel (struct fb_bitfield).
type Bitfield struct{ Offset, Length uint32 }

// PixelFormat is a framebuffer's packed-pixel layout.
type PixelFormat struct {
	BitsPerPixel     int
	Red, Green, Blue Bitfield
}

// Common pixel formats: RGB565 (small SPI panels driven by fbtft or DRM's fbdev emulation) and XRGB8888.
var (
	RGB565   = PixelFormat{16, Bitfield{11, 5}, Bitfield{5, 6}, Bitfield{0, 5}}
	XRGB8888 = PixelFormat{32, Bitfield{16, 8}, Bitfield{8, 8}, Bitfield{0, 8}}
)

// Geometry is a framebuffer's visible size and memory layout.
type Geometry struct {
	Width, Height int
	// Stride is the bytes from one row to the next (fb_fix_screeninfo.line_length).
	Stride int
	// YOffset is the first visible row in the buffer (panning).
	YOffset int
	Format  PixelFormat
}

// ErrGeometry is returned for a framebuffer layout the driver cannot draw on.
var ErrGeometry = errors.New("lcd: unsupported framebuffer geometry")

// Validate checks that the geometry is drawable and bounded (at most 4096×4096, 16/24/32 bits per pixel,
// 1 to 8 bits per channel inside the pixel).
func (g Geometry) Validate() error {
	if g.Width < 64 || g.Height < 32 || g.Width > 4096 || g.Height > 4096 {
		return fmt.Errorf("%w: %dx%d pixels", ErrGeometry, g.Width, g.Height)
	}
	bpp := g.Format.BitsPerPixel
	if bpp != 16 && bpp != 24 && bpp != 32 {
		return fmt.Errorf("%w: %d bits per pixel", ErrGeometry, bpp)
	}
	if g.Stride < g.Width*bpp/8 || g.Stride > 4*4096*2 {
		return fmt.Errorf("%w: stride %d for %d pixels", ErrGeometry, g.Stride, g.Width)
	}
	if g.YOffset < 0 || g.YOffset > 4096 {
		return fmt.Errorf("%w: y offset %d", ErrGeometry, g.YOffset)
	}
	for _, c := range []Bitfield{g.Format.Red, g.Format.Green, g.Format.Blue} {
		if c.Length < 1 || c.Length > 8 || c.Offset+c.Length > uint32(bpp) {
			return fmt.Errorf("%w: colour field %+v in %d bits", ErrGeometry, c, bpp)
		}
	}
	return nil
}

// Linux framebuffer ioctls (linux/fb.h).
const (
	fbiogetVScreenInfo = 0x4600
	fbiogetFScreenInfo = 0x4602
	fbVarInfoSize      = 160
)

// parseScreenInfo decodes struct fb_var_screeninfo and struct fb_fix_screeninfo as the kernel filled them
// (host byte order; word is the size of unsigned long).
func parseScreenInfo(v, f []byte, word int) (Geometry, error) {
	if len(v) < fbVarInfoSize {
		return Geometry{}, fmt.Errorf("%w: short fb_var_screeninfo", ErrGeometry)
	}
	u := func(i int) uint32 { return binary.NativeEndian.Uint32(v[4*i:]) }
	// xres, yres, xres_virtual, yres_virtual, xoffset, yoffset, bits_per_pixel, grayscale, red, green, blue
	g := Geometry{Width: int(u(0)), Height: int(u(1)), YOffset: int(u(5))}
	g.Format.BitsPerPixel = int(u(6))
	if u(7) != 0 {
		return Geometry{}, fmt.Errorf("%w: grayscale panel", ErrGeometry)
	}
	g.Format.Red = Bitfield{u(8), u(9)}
	g.Format.Green = Bitfield{u(11), u(12)}
	g.Format.Blue = Bitfield{u(14), u(15)}
	// fb_fix_screeninfo: id[16], smem_start (unsigned long), smem_len, type, type_aux, visual (u32),
	// xpanstep, ypanstep, ywrapstep (u16), line_length (u32, aligned).
	off := 16 + word + 4*4 + 3*2
	off = (off + 3) &^ 3
	if len(f) < off+4 {
		return Geometry{}, fmt.Errorf("%w: short fb_fix_screeninfo", ErrGeometry)
	}
	g.Stride = int(binary.NativeEndian.Uint32(f[off:]))
	if yv := int(u(3)); g.YOffset+g.Height > yv && yv != 0 {
		return Geometry{}, fmt.Errorf("%w: visible rows beyond the virtual height", ErrGeometry)
	}
	return g, g.Validate()
}

func queryGeometry(f *os.File) (Geometry, error) {
	v := make([]byte, fbVarInfoSize)
	fix := make([]byte, 128)
	rc, err := f.SyscallConn()
	if err != nil {
		return Geometry{}, err
	}
	var ierr error
	err = rc.Control(func(fd uintptr) {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, fbiogetVScreenInfo, uintptr(unsafe.Pointer(&v[0]))); e != 0 {
			ierr = fmt.Errorf("FBIOGET_VSCREENINFO: %w", e)
			return
		}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, fbiogetFScreenInfo, uintptr(unsafe.Pointer(&fix[0]))); e != 0 {
			ierr = fmt.Errorf("FBIOGET_FSCREENINFO: %w", e)
		}
	})
	if err != nil {
		return Geometry{}, err
	}
	if ierr != nil {
		return Geometry{}, ierr
	}
	return parseScreenInfo(v, fix, int(unsafe.Sizeof(uintptr(0))))
}

// FramebufferConfig configures a [Framebuffer].
type FramebufferConfig struct {
	// Device is /dev/fbN, or a regular file standing in for one (tests, screenshots).
	Device string
	// Geometry is required for a regular file and ignored for a device, which is asked.
	Geometry Geometry
	// Cols and Rows are the page size in characters (default 20×4).
	Cols, Rows int
}

// Framebuffer draws pages on a Linux framebuffer panel with [Renderer], writing whole frames with pwrite
// (no mmap, so a regular file works the same) and only when the picture changed.
type Framebuffer struct {
	f     *os.File
	geo   Geometry
	r     *Renderer
	img   *image.RGBA
	frame []byte
	last  []byte
}

// OpenFramebuffer opens the device (or file) and lays out the pages for its size.
func OpenFramebuffer(cfg FramebufferConfig) (*Framebuffer, error) {
	if cfg.Cols == 0 && cfg.Rows == 0 {
		cfg.Cols, cfg.Rows = 20, 4
	}
	f, err := os.OpenFile(cfg.Device, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("lcd: open framebuffer: %w", err)
	}
	fb, err := newFramebuffer(f, cfg)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return fb, nil
}

func newFramebuffer(f *os.File, cfg FramebufferConfig) (*Framebuffer, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("lcd: framebuffer: %w", err)
	}
	geo := cfg.Geometry
	if st.Mode()&os.ModeCharDevice != 0 {
		if geo, err = queryGeometry(f); err != nil {
			return nil, fmt.Errorf("lcd: framebuffer %s: %w", cfg.Device, err)
		}
	} else {
		if geo.Stride == 0 {
			geo.Stride = geo.Width * geo.Format.BitsPerPixel / 8
		}
		if err := geo.Validate(); err != nil {
			return nil, fmt.Errorf("lcd: framebuffer file %s: %w", cfg.Device, err)
		}
		size := int64((geo.YOffset + geo.Height) * geo.Stride)
		if st.Size() < size {
			if err := f.Truncate(size); err != nil {
				return nil, fmt.Errorf("lcd: framebuffer file %s: %w", cfg.Device, err)
			}
		}
	}
	r, err := NewRenderer(geo.Width, geo.Height, cfg.Cols, cfg.Rows)
	if err != nil {
		return nil, err
	}
	return &Framebuffer{f: f, geo: geo, r: r, frame: make([]byte, geo.Stride*geo.Height)}, nil
}

// Geometry returns the panel's layout.
func (fb *Framebuffer) Geometry() Geometry { return fb.geo }

// Renderer returns the renderer, for its layout.
func (fb *Framebuffer) Renderer() *Renderer { return fb.r }

// Show implements [Driver].
func (fb *Framebuffer) Show(p Page) error {
	fb.img = fb.r.Render(p, fb.img)
	pack(fb.frame, fb.img, fb.geo)
	if bytes.Equal(fb.frame, fb.last) {
		return nil
	}
	if _, err := fb.f.WriteAt(fb.frame, int64(fb.geo.YOffset*fb.geo.Stride)); err != nil {
		fb.last = nil
		return fmt.Errorf("lcd: write framebuffer: %w", err)
	}
	fb.last = append(fb.last[:0], fb.frame...)
	return nil
}

// Snapshot reads the visible picture back from the framebuffer, as an installer's support tool or a test
// sees it.
func (fb *Framebuffer) Snapshot() (*image.RGBA, error) {
	buf := make([]byte, fb.geo.Stride*fb.geo.Height)
	if _, err := fb.f.ReadAt(buf, int64(fb.geo.YOffset*fb.geo.Stride)); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("lcd: read framebuffer: %w", err)
	}
	return Unpack(buf, fb.geo), nil
}

// Close closes the device; the last page stays on the panel.
func (fb *Framebuffer) Close() error {
	if err := fb.f.Close(); err != nil {
		return fmt.Errorf("lcd: close framebuffer: %w", err)
	}
	return nil
}

func chanBits(v uint8, c Bitfield) uint32 { return uint32(v>>(8-c.Length)) << c.Offset }

func chanValue(px uint32, c Bitfield) uint8 {
	v := (px >> c.Offset) & (1<<c.Length - 1)
	// Scale to 8 bits, repeating the high bits into the low ones.
	out := v << (8 - c.Length)
	for s := c.Length; s < 8; s += c.Length {
		out |= v << (8 - c.Length) >> s
	}
	return uint8(out)
}

// pack converts img into the framebuffer's pixel format.
func pack(dst []byte, img *image.RGBA, g Geometry) {
	bpp := g.Format.BitsPerPixel / 8
	for y := 0; y < g.Height; y++ {
		row := dst[y*g.Stride:]
		src := img.Pix[y*img.Stride:]
		for x := 0; x < g.Width; x++ {
			s := src[4*x:]
			px := chanBits(s[0], g.Format.Red) | chanBits(s[1], g.Format.Green) | chanBits(s[2], g.Format.Blue)
			o := row[x*bpp:]
			switch bpp {
			case 2:
				binary.NativeEndian.PutUint16(o, uint16(px))
			case 3:
				o[0], o[1], o[2] = byte(px), byte(px>>8), byte(px>>16)
			default:
				binary.NativeEndian.PutUint32(o, px)
			}
		}
	}
}

// Unpack converts framebuffer memory (Stride×Height bytes) to an image.
func Unpack(buf []byte, g Geometry) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, g.Width, g.Height))
	bpp := g.Format.BitsPerPixel / 8
	for y := 0; y < g.Height && (y+1)*g.Stride <= len(buf); y++ {
		row := buf[y*g.Stride:]
		for x := 0; x < g.Width; x++ {
			o := row[x*bpp:]
			var px uint32
			switch bpp {
			case 2:
				px = uint32(binary.NativeEndian.Uint16(o))
			case 3:
				px = uint32(o[0]) | uint32(o[1])<<8 | uint32(o[2])<<16
			default:
				px = binary.NativeEndian.Uint32(o)
			}
			img.SetRGBA(x, y, color.RGBA{chanValue(px, g.Format.Red), chanValue(px, g.Format.Green), chanValue(px, g.Format.Blue), 0xff})
		}
	}
	return img
}
