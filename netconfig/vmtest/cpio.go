package vmtest

import (
	"fmt"
	"io"
	"path"
	"strings"
)

// CPIO writes a cpio archive in the "newc" format the kernel unpacks as an initramfs. Parent directories are
// created on demand, so entries may be added in any order; every entry is owned by root.
type CPIO struct {
	w    io.Writer
	n    int64
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewCPIO starts an archive on w. Close writes the trailer.
func NewCPIO(w io.Writer) *CPIO {
	return &CPIO{w: w, ino: 1, dirs: map[string]bool{"": true, ".": true}}
}

// Mode bits of cpio entries (the file type part of st_mode).
const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

func clean(name string) (string, error) {
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" || len(p) > 4096 {
		return "", fmt.Errorf("cpio: bad entry name %q", name)
	}
	return p, nil
}

func (c *CPIO) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *CPIO) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *CPIO) header(name string, mode uint32, size int, rdevMajor, rdevMinor uint32) {
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
}

func (c *CPIO) parents(name string) {
	dir := path.Dir(name)
	if c.dirs[dir] {
		return
	}
	c.parents(dir)
	c.dirs[dir] = true
	c.header(dir, modeDir|0o755, 0, 0, 0)
}

// Dir adds a directory.
func (c *CPIO) Dir(name string, perm uint32) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if c.dirs[p] {
		return c.err
	}
	c.parents(p)
	c.dirs[p] = true
	c.header(p, modeDir|perm&0o7777, 0, 0, 0)
	return c.err
}

// File adds a regular file holding data.
func (c *CPIO) File(name string, perm uint32, data []byte) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	c.parents(p)
	c.header(p, modeFile|perm&0o7777, len(data), 0, 0)
	c.write(data)
	c.pad()
	return c.err
}

// Symlink adds a symbolic link to target.
func (c *CPIO) Symlink(name, target string) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	c.parents(p)
	c.header(p, modeLink|0o777, len(target), 0, 0)
	c.write([]byte(target))
	c.pad()
	return c.err
}

// CharDev adds a character device node (the kernel needs /dev/console before devtmpfs is mounted).
func (c *CPIO) CharDev(name string, perm, major, minor uint32) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	c.parents(p)
	c.header(p, modeChar|perm&0o7777, 0, major, minor)
	return c.err
}

// Close writes the trailer entry. It does not close the underlying writer.
func (c *CPIO) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
