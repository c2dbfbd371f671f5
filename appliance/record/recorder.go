// Package record turns a camera's access units into encrypted fMP4 segments and indexes them: it drives
// ingest → vault → store for each camera, and it owns what ties them together at rest (crash recovery, the
// consistency check and the export of recorded fragments).
//
// Fragments are cut on key frames (about one per second) and sealed into 60 s segments; a change of the
// camera's parameter sets or a new RTSP session starts a new segment. Every fragment's decode time is wall
// time on one 90 kHz timeline, so the recorded bytes play as they are. The recording path never transcodes,
// never waits on the TPM (it seals to the vault's public key) and never drops an error silently: a failed
// write closes the segment, is logged and counted, and recording resumes at the next key frame.
package record

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/edgenvr/nvr/appliance/ingest"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
)

// Index is what a recorder needs of the index.
type Index interface {
	BeginSegment(store.Segment) error
	CloseSegment(store.Segment) error
	DeleteSegment(id [16]byte) error
}

// Config describes the recording of one camera.
type Config struct {
	Camera  string
	DataDir string
	// SegmentDuration is the length after which a segment is closed at the next key frame. Default 60 s.
	SegmentDuration time.Duration
	// FragmentDuration is the length after which a fragment is cut at the next key frame. Default 1 s.
	FragmentDuration time.Duration
	// MaxFragmentDuration cuts a fragment even without a key frame, bounding what a crash can lose with
	// cameras whose key frames are far apart. Default 2 s.
	MaxFragmentDuration time.Duration
	// VaultKey is the public key segment keys are wrapped to.
	VaultKey *ecdh.PublicKey
	Index    Index
	// Rand is the source of segment keys and ids; nil means crypto/rand.
	Rand io.Reader
	// NeedSpace is called (without blocking) when a write failed for lack of space.
	NeedSpace func()
	// OnSegment, if set, is called after each segment is closed (for metrics, evidence and tests).
	OnSegment func(store.Segment)
}

// cameraName restricts camera names to what is safe in a path, a log line and a URL.
var cameraName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidCameraName reports whether name may name a camera.
func ValidCameraName(name string) bool { return cameraName.MatchString(name) }

// Status is a snapshot of a recorder's progress.
type Status struct {
	Recording  bool
	Segments   uint64 // closed since start
	Fragments  uint64 // written since start
	Bytes      int64  // written since start, on disk
	Dropped    uint64 // pictures dropped (waiting for a key frame, or lost with a failed write)
	WriteErrs  uint64
	LastWrite  time.Time
	LastEvent  ingest.Event
	VideoLost  bool
	Segment    string // id of the open segment
	SegmentAge time.Duration
}

// Recorder writes one camera's units into segments. It implements ingest.Handler; its methods must be called
// from one goroutine (ingest guarantees it).
type Recorder struct {
	cfg Config
	log *slog.Logger

	params  *ingest.Params
	session uint64
	base    int64 // timeline position of DTS 0 of the current session
	lastEnd int64 // end of the last written sample: the timeline never goes back
	seq     uint32
	waitKey bool

	seg     *segment
	pending []*sample
	pics    *pictureArena // where pending pictures are kept, off the Go heap
	picsErr bool          // a picture arena failure was logged
	frag    fragmenter
	errLog  bool // a write error was logged and not yet followed by a success

	mu     sync.Mutex
	status Status

	live liveHub
}

type segment struct {
	w     *vault.Writer
	rec   store.Segment
	start int64 // timeline position of the first sample
	end   int64
}

// New returns a recorder for one camera.
func New(cfg Config, log *slog.Logger) (*Recorder, error) {
	if !ValidCameraName(cfg.Camera) {
		return nil, fmt.Errorf("record: camera name %q: use letters, digits, _ and - (at most 64)", cfg.Camera)
	}
	if cfg.VaultKey == nil || cfg.Index == nil || cfg.DataDir == "" {
		return nil, errors.New("record: vault key, index and data dir are required")
	}
	if cfg.SegmentDuration <= 0 {
		cfg.SegmentDuration = 60 * time.Second
	}
	if cfg.FragmentDuration <= 0 {
		cfg.FragmentDuration = time.Second
	}
	if cfg.MaxFragmentDuration < cfg.FragmentDuration {
		cfg.MaxFragmentDuration = max(2*time.Second, cfg.FragmentDuration)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &Recorder{cfg: cfg, log: log.With("camera", cfg.Camera), waitKey: true, pics: newPictureArena(pictureArenaSize)}, nil
}

// Status returns a snapshot of the recorder's progress.
func (r *Recorder) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *Recorder) update(f func(*Status)) {
	r.mu.Lock()
	f(&r.status)
	r.mu.Unlock()
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

func dur(d time.Duration) int64 { return int64(d) * TimeScale / int64(time.Second) }

// Unit records one access unit.
func (r *Recorder) Unit(u *ingest.Unit) {
	if u.Session != r.session {
		// A new RTSP session: its timestamps start again. Close what the last one left open, and place the new
		// session on the timeline by the wall clock, never before what is already recorded.
		r.finish("new session")
		r.session = u.Session
		r.base = max(ticks(u.Wall)-u.DTS, r.lastEnd-u.DTS)
		r.waitKey = true
	}
	dts := r.base + u.DTS
	if !u.Params.Equal(r.params) && r.params != nil {
		r.finish("parameter sets changed")
		r.waitKey = true
	}
	if n := len(r.pending); n > 0 {
		last := r.pending[n-1]
		if dts <= last.dts {
			r.update(func(s *Status) { s.Dropped++ })
			return // two pictures at one instant: the camera's stream is broken here
		}
		last.dur = uint32(min(dts-last.dts, 1<<31))
		first := r.pending[0].dts
		if (u.RandomAccess && dts-first >= dur(r.cfg.FragmentDuration)) || dts-first >= dur(r.cfg.MaxFragmentDuration) {
			r.flush()
			if u.RandomAccess && r.seg != nil && dts-r.seg.start >= dur(r.cfg.SegmentDuration) {
				r.closeSegment(store.StateClosed)
			}
		}
	}
	if r.waitKey || r.seg == nil {
		if !u.RandomAccess {
			r.update(func(s *Status) { s.Dropped++ })
			return
		}
		r.waitKey = false
		r.params = u.Params
	}
	if r.seg == nil {
		if err := r.openSegment(dts); err != nil {
			r.writeFailed(err)
			r.waitKey = true
			return
		}
	}
	payload := u.AVCC
	if cp, ok, err := r.pics.add(payload); err != nil {
		r.picturesFailed(err)
	} else if ok {
		payload = cp
	}
	r.pending = append(r.pending, &sample{
		dts:     dts,
		ptsOff:  int32(max(min(u.PTS-u.DTS, 1<<30), -(1 << 30))),
		random:  u.RandomAccess,
		payload: payload,
	})
}

// Event notes a change in the camera stream's state. A session that ended closes its segment so that the
// gap is visible in the index.
func (r *Recorder) Event(e ingest.Event) {
	r.update(func(s *Status) {
		s.LastEvent = e
		switch e.Kind {
		case ingest.EventVideoLoss:
			s.VideoLost = true
		case ingest.EventVideoRestored, ingest.EventConnected:
			s.VideoLost = false
		}
	})
	if e.Kind == ingest.EventDisconnected || e.Kind == ingest.EventVideoLoss {
		r.finish(e.Kind.String())
		r.waitKey = true
	}
}

// Close writes what is pending and closes the open segment. The recorder can be used again afterwards.
func (r *Recorder) Close() error {
	r.finish("shutdown")
	if err := r.pics.free(); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// picturesFailed logs, once, that the picture arena failed; pictures then stay on the Go heap, which costs
// memory, not video.
func (r *Recorder) picturesFailed(err error) {
	if !r.picsErr {
		r.picsErr = true
		r.log.Warn("keeping pictures on the Go heap", "err", err)
	}
}

// finish writes the pending fragment (its last picture lasting as long as the one before) and closes the
// segment.
func (r *Recorder) finish(why string) {
	if n := len(r.pending); n > 0 {
		last := r.pending[n-1]
		if last.dur == 0 {
			last.dur = 3600 // 1/25 s when nothing better is known
			if n > 1 {
				last.dur = r.pending[n-2].dur
			}
		}
		r.flush()
	}
	if r.seg != nil {
		r.log.Debug("closing segment", "why", why)
		r.closeSegment(store.StateClosed)
	}
}

func (r *Recorder) segmentPath(id [16]byte, start time.Time) string {
	return filepath.Join("rec", r.cfg.Camera, start.UTC().Format("2006-01-02"), hex.EncodeToString(id[:])+".seg")
}

// openSegment puts a new segment in the index, then creates its file and writes the init segment.
func (r *Recorder) openSegment(start int64) error {
	init, err := initSegment(r.params)
	if err != nil {
		return err
	}
	var id [16]byte
	if _, err := io.ReadFull(r.cfg.Rand, id[:]); err != nil {
		return fmt.Errorf("segment id: %w", err)
	}
	t := TimeOf(start)
	rec := store.Segment{
		ID:     id,
		Camera: r.cfg.Camera,
		Path:   r.segmentPath(id, t),
		Codec:  r.params.Codec.String(),
		Start:  t,
		End:    t,
		State:  store.StateOpen,
	}
	rec.InitHash = sha256Sum(init)
	if err := r.cfg.Index.BeginSegment(rec); err != nil {
		return fmt.Errorf("index segment: %w", err)
	}
	w, err := vault.Create(filepath.Join(r.cfg.DataDir, rec.Path), vault.Header{
		SegmentID: id,
		Camera:    r.cfg.Camera,
		Start:     t,
		Codec:     rec.Codec,
		InitHash:  rec.InitHash,
	}, r.cfg.VaultKey, r.cfg.Rand)
	if err != nil {
		// Create leaves no file behind, so the record must go too: a final record without its file is
		// exactly what fsck and playback call a lost segment. If the index cannot delete it now (a full
		// disk fails index writes as well), the record stays open and recovery at the next start removes it.
		if derr := r.cfg.Index.DeleteSegment(id); derr != nil {
			r.log.Error("removing the record of a segment that could not be created", "err", derr)
		}
		return fmt.Errorf("create segment: %w", err)
	}
	if _, err := w.Append(init); err != nil {
		_ = w.Abandon() // the append error says what went wrong; recovery handles the file
		return fmt.Errorf("write init segment: %w", err)
	}
	if h := w.Header(); len(h.Keys) > 0 {
		rec.WrappedKey = h.Keys[0].Data
	}
	r.seg = &segment{w: w, rec: rec, start: start, end: start}
	r.live.publishInit(init)
	r.update(func(s *Status) {
		s.Recording = true
		s.Segment = hex.EncodeToString(id[:])
	})
	return nil
}

// flush writes the pending samples as one fragment.
func (r *Recorder) flush() {
	samples := r.pending
	r.pending = nil
	// The samples' pictures live in the arena until the fragment is built (or dropped).
	defer func() {
		if err := r.pics.reset(); err != nil {
			r.picturesFailed(err)
		}
	}()
	if r.seg == nil || len(samples) == 0 {
		return
	}
	r.seq++
	var info vault.ChunkInfo
	var werr error
	last := samples[len(samples)-1]
	end := last.dts + int64(last.dur)
	err := r.frag.fragment(r.seq, samples, func(b []byte) error {
		info, werr = r.seg.w.Write(b)
		if werr == nil {
			r.live.publish(b, samples[0].dts, end, samples[0].random)
		}
		return werr
	})
	if err == nil {
		// The fragment's buffers are back in their pools: wait for the disk without holding them.
		if werr = r.seg.w.Sync(); werr != nil {
			err = werr
		}
	}
	if err != nil {
		r.update(func(s *Status) { s.Dropped += uint64(len(samples)) })
		if werr == nil {
			r.writeFailed(err)
			return
		}
		r.writeFailed(fmt.Errorf("write fragment: %w", err))
		r.closeSegment(store.StateClosed)
		r.waitKey = true
		return
	}
	r.seg.end = end
	r.lastEnd = max(r.lastEnd, end)
	if r.errLog {
		r.errLog = false
		r.log.Info("writing again after an error")
	}
	r.update(func(s *Status) {
		s.Fragments++
		s.Bytes += info.Size
		s.LastWrite = time.Now()
		s.SegmentAge = time.Duration((end - r.seg.start) * int64(time.Second) / TimeScale)
	})
}

// closeSegment seals the segment with its trailer and closes its record. If the trailer cannot be written,
// the record stays open and the next start repairs it.
func (r *Recorder) closeSegment(state store.State) {
	seg := r.seg
	r.seg = nil
	if seg == nil {
		return
	}
	r.update(func(s *Status) { s.Recording = false; s.Segment = "" })
	rec := seg.rec
	rec.Chunks = seg.w.Chunks()
	rec.Chain = seg.w.Chain()
	if err := seg.w.Close(); err != nil {
		r.writeFailed(fmt.Errorf("close segment: %w", err))
		if aerr := seg.w.Abandon(); aerr != nil {
			r.log.Error("abandoning segment", "err", aerr)
		}
		return
	}
	rec.Bytes = seg.w.Size()
	rec.End = TimeOf(seg.end)
	rec.State = state
	if err := r.cfg.Index.CloseSegment(rec); err != nil {
		r.writeFailed(fmt.Errorf("index segment close: %w", err))
		return
	}
	r.update(func(s *Status) { s.Segments++ })
	if r.cfg.OnSegment != nil {
		r.cfg.OnSegment(rec)
	}
}

// writeFailed logs a failure on the recording path (once per run of failures), counts it and asks for
// space.
func (r *Recorder) writeFailed(err error) {
	r.update(func(s *Status) { s.WriteErrs++ })
	// Most write failures on a recorder are a full disk, whatever layer reports it (the segment file, the
	// index): ask retention to run now. A pass that finds nothing to do costs little.
	if r.cfg.NeedSpace != nil {
		r.cfg.NeedSpace()
	}
	if !r.errLog {
		r.errLog = true
		r.log.Error("recording write failed; resuming at the next key frame", "err", err)
	}
}
