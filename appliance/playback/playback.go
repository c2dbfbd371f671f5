package playback

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/edgenvr/nvr/appliance/record"
	"github.com/edgenvr/nvr/appliance/store"
	"github.com/edgenvr/nvr/appliance/vault"
)

// Index is what playback needs of the index: a camera's segments overlapping a range, by start.
type Index interface {
	Segments(camera string, from, to time.Time) ([]store.Segment, error)
}

// Config configures a [Source].
type Config struct {
	// DataDir holds the segment files (the paths in the index are relative to it).
	DataDir string
	// Index is the segment index; required.
	Index Index
	// Keys unwraps segment keys: the TPM; required.
	Keys vault.Unwrapper
	// KeyTTL is how long an unwrapped segment key stays in memory (default 60 s); MaxKeys bounds how many
	// (default 512).
	KeyTTL  time.Duration
	MaxKeys int
	// MaxSpan is the longest stretch of recording one [Source.Stream] call serves (default 5 minutes):
	// a viewer continues with a new request, which is decided and audited again.
	MaxSpan time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Source reads recordings back. It is safe for concurrent use.
type Source struct {
	cfg   Config
	log   *slog.Logger
	cache *vault.KeyCache
}

// Errors a caller branches on.
var (
	// ErrNothingRecorded: no recording of the camera at or after the requested instant (within the span).
	ErrNothingRecorded = errors.New("nothing recorded from that instant on")
	// ErrForeignFile: a segment file's header names another segment or camera than its index record.
	ErrForeignFile = errors.New("the segment file belongs to another segment or camera")
)

// maxLookback bounds how many fragments before the requested instant are held back waiting for the one
// that contains it (a long group of pictures cut into several fragments).
const maxLookback = 32

// New checks the configuration.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if cfg.Index == nil || cfg.Keys == nil {
		return nil, errors.New("playback: Index and Keys are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.KeyTTL <= 0 {
		cfg.KeyTTL = time.Minute
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 512
	}
	if cfg.MaxSpan <= 0 {
		cfg.MaxSpan = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Source{cfg: cfg, log: log, cache: vault.NewKeyCache(cfg.KeyTTL, cfg.MaxKeys, cfg.Now)}, nil
}

// Run drops expired keys from memory every few seconds, and every key when ctx ends.
func (s *Source) Run(ctx context.Context) error {
	t := time.NewTicker(min(s.cfg.KeyTTL/2, 5*time.Second))
	defer t.Stop()
	defer s.cache.Purge()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.cache.Sweep()
		}
	}
}

// CachedKeys returns how many segment keys are in memory now.
func (s *Source) CachedKeys() int { return s.cache.Len() }

// Span is a stretch of time.
type Span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Timeline is what was recorded of a camera in a range: the recorded spans (adjacent segments merged) and
// the gaps between them and the range's ends.
type Timeline struct {
	Camera   string    `json:"camera"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Recorded []Span    `json:"recorded"`
	Gaps     []Span    `json:"gaps"`
	// Open is set when the camera is recording now (the last span grows).
	Open bool `json:"open"`
}

// gapTolerance is how far apart two segments may lie and still count as one recorded span.
const gapTolerance = 1500 * time.Millisecond

// Timeline lists what was recorded of camera over [from, to).
func (s *Source) Timeline(camera string, from, to time.Time) (Timeline, error) {
	tl := Timeline{Camera: camera, From: from, To: to, Recorded: []Span{}, Gaps: []Span{}}
	segs, err := s.cfg.Index.Segments(camera, from, to)
	if err != nil {
		return tl, fmt.Errorf("playback: timeline %s: %w", camera, err)
	}
	now := s.cfg.Now()
	for _, sg := range segs {
		end := sg.End
		if sg.State == store.StateOpen {
			end = later(end, earlier(now, to))
			tl.Open = true
		}
		sp := Span{Start: later(sg.Start, from), End: earlier(end, to)}
		if !sp.End.After(sp.Start) {
			continue
		}
		if n := len(tl.Recorded); n > 0 && !sp.Start.After(tl.Recorded[n-1].End.Add(gapTolerance)) {
			tl.Recorded[n-1].End = later(tl.Recorded[n-1].End, sp.End)
			continue
		}
		tl.Recorded = append(tl.Recorded, sp)
	}
	cur := from
	for _, sp := range tl.Recorded {
		if sp.Start.After(cur) {
			tl.Gaps = append(tl.Gaps, Span{Start: cur, End: sp.Start})
		}
		cur = sp.End
	}
	if end := earlier(to, now); end.After(cur) {
		tl.Gaps = append(tl.Gaps, Span{Start: cur, End: end})
	}
	return tl, nil
}

// Kind says what a [Fragment] carries.
type Kind uint8

// Kinds of fragments.
const (
	// KindInit is an fMP4 init segment (ftyp+moov): the viewer (re)initialises its decoder.
	KindInit Kind = 1
	// KindMedia is one recorded fragment (moof+mdat).
	KindMedia Kind = 2
	// KindEnd closes a stream; Start is where a viewer continues (0: nowhere), Data a short reason.
	KindEnd Kind = 3
)

// Fragment is one unit of a stream to a viewer.
type Fragment struct {
	Kind Kind
	// Data is the init segment, the fragment, or the reason of an end.
	Data []byte
	// Start and End place a media fragment on the recording timeline (90 kHz since the Unix epoch).
	Start, End int64
	// Key reports that a media fragment starts with a key frame.
	Key bool
}

// Request is a playback request the caller's access control allowed.
type Request struct {
	Camera string
	// At is the instant to start from: the stream begins with the key fragment at or before it.
	At time.Time
	// Until ends the stream (exclusive); zero means At plus the configured maximum span.
	Until time.Time
}

// Result says how a stream ended.
type Result struct {
	Fragments int
	Bytes     int64
	// Next is where the recording continues after the last fragment sent (zero when nothing follows yet).
	Next time.Time
}

// Stream calls fn with the init segment and then each recorded fragment of the camera from the key
// fragment at or before req.At on, in time order, decrypted and authenticated, until req.Until, the
// configured maximum span or the end of what is recorded. A new init segment is sent whenever the
// camera's parameters change. Segments still being recorded are read up to their last complete chunk.
// fn's error stops the stream and is returned.
func (s *Source) Stream(ctx context.Context, req Request, fn func(Fragment) error) (Result, error) {
	var res Result
	until := req.Until
	if limit := req.At.Add(s.cfg.MaxSpan); until.IsZero() || until.After(limit) {
		until = limit
	}
	if !until.After(req.At) {
		return res, fmt.Errorf("playback: %s: the range ends before it starts", req.Camera)
	}
	segs, err := s.cfg.Index.Segments(req.Camera, req.At, until)
	if err != nil {
		return res, fmt.Errorf("playback: %s: %w", req.Camera, err)
	}
	st := streamState{at: ticks(req.At), until: ticks(until), fn: fn, res: &res}
	for _, sg := range segs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		done, err := s.streamSegment(ctx, sg, &st)
		if err != nil {
			return res, err
		}
		if done {
			break
		}
	}
	if err := st.flushPending(); err != nil {
		return res, err
	}
	if res.Fragments == 0 {
		return res, fmt.Errorf("playback: %s at %s: %w", req.Camera, req.At.UTC().Format(time.RFC3339), ErrNothingRecorded)
	}
	if st.lastEnd > 0 {
		res.Next = record.TimeOf(st.lastEnd)
	}
	return res, nil
}

// streamState carries a stream across segments.
type streamState struct {
	at, until int64
	fn        func(Fragment) error
	res       *Result
	sentInit  []byte
	segInit   []byte
	pending   []Fragment // fragments from the last key fragment before at, waiting for the one containing at
	started   bool
	lastEnd   int64
}

func (st *streamState) send(f Fragment) error {
	if !bytes.Equal(st.sentInit, st.segInit) {
		if err := st.fn(Fragment{Kind: KindInit, Data: st.segInit}); err != nil {
			return err
		}
		st.sentInit = st.segInit
	}
	if err := st.fn(f); err != nil {
		return err
	}
	st.res.Fragments++
	st.res.Bytes += int64(len(f.Data))
	st.lastEnd = f.End
	return nil
}

// flushPending sends the held-back fragments when the instant asked for lies after the last of them (a gap
// or the end of the recording): the viewer then starts at the closest recorded picture before it.
func (st *streamState) flushPending() error {
	if st.started || len(st.pending) == 0 {
		return nil
	}
	st.started = true
	p := st.pending
	st.pending = nil
	for _, f := range p {
		if err := st.send(f); err != nil {
			return err
		}
	}
	return nil
}

// streamSegment streams one segment's fragments; done reports that the stream reached its end.
func (s *Source) streamSegment(ctx context.Context, sg store.Segment, st *streamState) (done bool, err error) {
	id := hex.EncodeToString(sg.ID[:])
	r, err := vault.OpenCached(filepath.Join(s.cfg.DataDir, sg.Path), s.cfg.Keys, s.cache)
	if err != nil {
		return false, fmt.Errorf("playback: segment %s: %w", id, err)
	}
	defer func() { err = errors.Join(err, r.Close()) }()
	if h := r.Header(); h.SegmentID != sg.ID || h.Camera != sg.Camera {
		return false, fmt.Errorf("playback: segment %s: %w", id, ErrForeignFile)
	}
	st.segInit = nil
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		plain, info, err := r.Next()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			if sg.State == store.StateOpen && errors.Is(err, vault.ErrTruncated) {
				return false, nil // still being written: what is complete so far
			}
			return false, fmt.Errorf("playback: %w", err) // a *vault.ChunkError names segment and chunk
		}
		if info.Index == 0 {
			st.segInit = bytes.Clone(plain)
			continue
		}
		if st.segInit == nil {
			return false, fmt.Errorf("playback: segment %s: no init segment before chunk %d", id, info.Index)
		}
		span, key, err := parseFragment(plain)
		if err != nil {
			return false, fmt.Errorf("playback: segment %s chunk %d: %w", id, info.Index, err)
		}
		if span.Start >= st.until {
			return true, nil
		}
		f := Fragment{Kind: KindMedia, Data: plain, Start: span.Start, End: span.End, Key: key}
		if !st.started {
			if span.End <= st.at {
				// Before the instant: hold it back from the last key fragment on.
				if key {
					st.pending = st.pending[:0]
				}
				if key || len(st.pending) > 0 && len(st.pending) < maxLookback {
					st.pending = append(st.pending, f)
				}
				continue
			}
			if !key && len(st.pending) == 0 {
				continue // no key fragment yet: the viewer could not decode this one
			}
			// f contains the instant (or is the first after it): start with what was held back.
			p := st.pending
			st.pending, st.started = nil, true
			if key {
				p = nil
			}
			for _, pf := range p {
				if err := st.send(pf); err != nil {
					return false, err
				}
			}
		}
		if err := st.send(f); err != nil {
			return false, err
		}
	}
}

// parseFragment reads a fragment's span on the timeline and whether it starts with a key frame. It runs on
// authenticated plaintext only, and mediacommon bounds what it reads.
func parseFragment(b []byte) (record.FragmentSpan, bool, error) {
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil {
		return record.FragmentSpan{}, false, fmt.Errorf("parse fragment: %w", err)
	}
	if len(parts) != 1 || len(parts[0].Tracks) != 1 || len(parts[0].Tracks[0].Samples) == 0 {
		return record.FragmentSpan{}, false, errors.New("parse fragment: want one part with one track of samples")
	}
	tr := parts[0].Tracks[0]
	span := record.FragmentSpan{Start: int64(tr.BaseTime), Samples: len(tr.Samples), Sequence: parts[0].SequenceNumber}
	if span.Start < 0 {
		return record.FragmentSpan{}, false, errors.New("parse fragment: decode time out of range")
	}
	span.End = span.Start
	for _, smp := range tr.Samples {
		span.End += int64(smp.Duration)
	}
	return span, !tr.Samples[0].IsNonSyncSample, nil
}

// ticks converts a time into the recording timeline (90 kHz since the Unix epoch).
func ticks(t time.Time) int64 {
	return t.Unix()*record.TimeScale + int64(t.Nanosecond())*record.TimeScale/int64(time.Second)
}

// Ticks converts a time into the recording timeline (90 kHz since the Unix epoch).
func Ticks(t time.Time) int64 { return ticks(t) }

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
