package record

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// pictureArenaSize is the address space reserved per recorder for the pictures of the fragment being built.
// Only the pages written to are backed by memory, and they are given back after every fragment, so the
// reservation costs address space, not RAM: 32 MiB holds 2 s (MaxFragmentDuration's default) of a
// 128 Mbit/s stream. A picture that does not fit stays on the Go heap.
const pictureArenaSize = 32 << 20

// pictureArena holds the pictures of the fragment being built outside the Go heap, in anonymous memory
// mapped for the recorder. A recorder keeps up to a fragment of video (about 0.5 MB at 4 Mbit/s and 1 s
// fragments) until it is sealed; on the Go heap those bytes are live at every collection and the collector
// lets the heap grow to about twice the live size before the next one, so they cost about twice their size
// in resident memory, per camera. Here they cost their size, and nothing once the fragment is written
// (madvise MADV_DONTNEED). The slices add returns are valid until reset.
type pictureArena struct {
	mem  []byte // nil until the first picture, and after free
	used int
	size int
	page int
	// failed is set once mapping failed: the recorder then keeps pictures on the Go heap.
	failed bool
}

func newPictureArena(size int) *pictureArena {
	return &pictureArena{size: size, page: os.Getpagesize()}
}

// add copies p into the arena and returns the copy; ok is false when it does not fit (or nothing could be
// mapped), and the caller keeps p itself.
func (a *pictureArena) add(p []byte) (cp []byte, ok bool, err error) {
	if a.failed {
		return nil, false, nil
	}
	if a.mem == nil {
		mem, err := unix.Mmap(-1, 0, a.size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			a.failed = true
			return nil, false, fmt.Errorf("picture arena: mmap %d bytes: %w", a.size, err)
		}
		a.mem = mem
	}
	if len(p) > a.size-a.used {
		return nil, false, nil
	}
	cp = a.mem[a.used : a.used+len(p) : a.used+len(p)]
	copy(cp, p)
	a.used += len(p)
	return cp, true, nil
}

// reset forgets every picture and gives their pages back to the kernel. Slices from add read zeros after it.
func (a *pictureArena) reset() error {
	if a.mem == nil || a.used == 0 {
		return nil
	}
	n := min((a.used+a.page-1)/a.page*a.page, len(a.mem))
	a.used = 0
	if err := unix.Madvise(a.mem[:n], unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("picture arena: madvise: %w", err)
	}
	return nil
}

// free unmaps the arena. No slice from add may be used afterwards; the next add maps it again.
func (a *pictureArena) free() error {
	if a.mem == nil {
		return nil
	}
	mem := a.mem
	a.mem, a.used = nil, 0
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("picture arena: munmap: %w", err)
	}
	return nil
}
