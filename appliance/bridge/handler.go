package bridge

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/edgenvr/nvr/appliance/authz"
)

// handler answers one listener's requests. Every DESCRIBE, SETUP and PLAY is authenticated; every
// DESCRIBE and PLAY is decided (and audited) by authz.
type handler struct{ s *server }

// maxDropsBeforeClose: a reader whose write queue overflowed this many times is too slow and is dropped.
const maxDropsBeforeClose = 64

// authenticate checks the request's credentials. On failure it returns the response to send (a challenge,
// or a refusal that also closes the connection); an anonymous request is put to Decide too, so that it is
// audited like any other.
func (h *handler) authenticate(sc *gortsplib.ServerConn, req *base.Request, act authz.Action, camera string) (authz.Subject, *base.Response, error) {
	b := h.s.b
	src := sourceOf(sc)
	sub, err := b.auth.authenticate(req, h.s.secure, src)
	switch {
	case err == nil:
		markAuthenticated(sc.NetConn())
		return sub, nil, nil
	case errors.Is(err, ErrNoCredentials):
		if act != "" {
			b.cfg.Authz.Decide(authz.Request{Action: act, Camera: camera, Source: src})
		}
		return authz.Subject{}, &base.Response{StatusCode: base.StatusUnauthorized,
			Header: base.Header{"WWW-Authenticate": b.auth.challenge(h.s.secure, src, false)}}, nil
	case errors.Is(err, ErrStaleNonce):
		return authz.Subject{}, &base.Response{StatusCode: base.StatusUnauthorized,
			Header: base.Header{"WWW-Authenticate": b.auth.challenge(h.s.secure, src, true)}}, nil
	case errors.Is(err, ErrThrottled):
		return authz.Subject{}, &base.Response{StatusCode: base.StatusServiceUnavailable,
			Header: base.Header{"Retry-After": base.HeaderValue{"60"}}}, errRefused
	default:
		return authz.Subject{}, &base.Response{StatusCode: base.StatusUnauthorized,
			Header: base.Header{"WWW-Authenticate": b.auth.challenge(h.s.secure, src, false)}}, errRefused
	}
}

// decide puts a request to authz; from is the oldest recorded instant a replay touches.
//
// Two rights are decided, each audited: taking video out over the bridge at all (authz.UseBridge, so that a
// role whose right was withdrawn stops every credential its users already hold), then the camera's.
func (h *handler) decide(sc *gortsplib.ServerConn, sub authz.Subject, t target, from time.Time) authz.Decision {
	az, src := h.s.b.cfg.Authz, sourceOf(sc)
	if d := az.Decide(authz.Request{Subject: sub, Action: authz.UseBridge, Source: src}); !d.Allow {
		return d
	}
	return az.Decide(authz.Request{Subject: sub, Action: action(t), Camera: t.camera, From: from, Source: src})
}

func action(t target) authz.Action {
	if t.replay {
		return authz.Playback
	}
	return authz.Live
}

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen.
func (h *handler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	ctx.Conn.SetUserData(&connState{})
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose: a replay made at DESCRIBE and never set up
// is closed.
func (h *handler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	if cs, ok := ctx.Conn.UserData().(*connState); ok {
		cs.mu.Lock()
		p := cs.pending
		cs.pending = nil
		cs.mu.Unlock()
		if p != nil {
			p.close()
		}
	}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	t, ok := parsePath(ctx.Path)
	act, cam := authz.Action(""), ""
	if ok {
		act, cam = action(t), t.camera
	}
	sub, res, err := h.authenticate(ctx.Conn, ctx.Request, act, cam)
	if res != nil {
		return res, nil, err
	}
	if !ok {
		return status(base.StatusNotFound), nil, nil
	}
	var q playRange
	if t.replay {
		var qerr error
		if q, _, qerr = queryRange(ctx.Query); qerr != nil {
			return status(base.StatusBadRequest), nil, nil
		}
	} else if ctx.Query != "" {
		return status(base.StatusBadRequest), nil, nil
	}
	if d := h.decide(ctx.Conn, sub, t, q.Start); !d.Allow {
		return status(base.StatusForbidden), nil, nil
	}
	b := h.s.b
	if !t.replay {
		ls, err := b.live.get(h.s, t.camera)
		if err != nil {
			b.log.Info("live refused", "camera", t.camera, "err", err)
			return status(base.StatusNotFound), nil, nil
		}
		return status(base.StatusOK), ls.stream, nil
	}
	rp, err := b.newReplay(h.s, t.camera, q)
	if err != nil {
		b.log.Info("replay refused", "camera", t.camera, "err", err)
		if errors.Is(err, ErrNoRecording) {
			return status(base.StatusNotFound), nil, nil
		}
		return status(base.StatusInternalServerError), nil, nil
	}
	cs, _ := ctx.Conn.UserData().(*connState)
	if cs == nil {
		rp.close()
		return status(base.StatusInternalServerError), nil, nil
	}
	cs.mu.Lock()
	old := cs.pending
	cs.pending = rp
	cs.mu.Unlock()
	if old != nil {
		old.close()
	}
	return &base.Response{StatusCode: base.StatusOK, Header: base.Header{"Accept-Ranges": base.HeaderValue{"clock, npt"}}}, rp.stream, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	sub, res, err := h.authenticate(ctx.Conn, ctx.Request, "", "")
	if res != nil {
		return res, nil, err
	}
	t, ok := parsePath(ctx.Path)
	if !ok {
		return status(base.StatusNotFound), nil, nil
	}
	if ctx.Session.State() != gortsplib.ServerSessionStateInitial {
		// One video track per stream: a second SETUP is not needed.
		return status(base.StatusAggregateOperationNotAllowed), nil, nil
	}
	b := h.s.b
	if !b.takeSession() {
		return status(base.StatusServiceUnavailable), nil, nil
	}
	ss := &sessionState{sub: sub, target: t}
	if !t.replay {
		ls, err := b.live.get(h.s, t.camera)
		if err != nil || !ls.acquire() {
			b.nsess.Add(-1)
			return status(base.StatusNotFound), nil, nil
		}
		ss.live = ls
		ctx.Session.SetUserData(ss)
		return status(base.StatusOK), ls.stream, nil
	}
	cs, _ := ctx.Conn.UserData().(*connState)
	var rp *replay
	if cs != nil {
		cs.mu.Lock()
		if cs.pending != nil && cs.pending.camera == t.camera {
			rp, cs.pending = cs.pending, nil
		}
		cs.mu.Unlock()
	}
	if rp == nil {
		// SETUP without DESCRIBE on this connection: describe from the URL's start.
		q, _, qerr := queryRange(ctx.Query)
		if qerr != nil {
			b.nsess.Add(-1)
			return status(base.StatusBadRequest), nil, nil
		}
		if rp, err = b.newReplay(h.s, t.camera, q); err != nil {
			b.nsess.Add(-1)
			return status(base.StatusNotFound), nil, nil
		}
	}
	ss.replay = rp
	ctx.Session.SetUserData(ss)
	return status(base.StatusOK), rp.stream, nil
}

// takeSession counts a new session if fewer than MaxSessions are open.
func (b *Bridge) takeSession() bool {
	for {
		n := b.nsess.Load()
		if n >= int64(b.cfg.MaxSessions) {
			return false
		}
		if b.nsess.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (h *handler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	ss, _ := ctx.Session.UserData().(*sessionState)
	act, cam := authz.Action(""), ""
	if ss != nil {
		act, cam = action(ss.target), ss.target.camera
	}
	sub, res, err := h.authenticate(ctx.Conn, ctx.Request, act, cam)
	if res != nil {
		return res, err
	}
	if ss == nil {
		return status(base.StatusSessionNotFound), nil
	}
	if sub.User != ss.sub.User {
		// A session belongs to whoever set it up.
		h.decide(ctx.Conn, sub, ss.target, time.Time{})
		return status(base.StatusForbidden), nil
	}
	if tags := unsupportedRequire(ctx.Request.Header["Require"]); len(tags) > 0 {
		return &base.Response{StatusCode: base.StatusOptionNotSupported,
			Header: base.Header{"Unsupported": base.HeaderValue{strings.Join(tags, ", ")}}}, nil
	}
	if ss.live != nil {
		if d := h.decide(ctx.Conn, sub, ss.target, time.Time{}); !d.Allow {
			return status(base.StatusForbidden), nil
		}
		return &base.Response{StatusCode: base.StatusOK, Header: base.Header{"Range": base.HeaderValue{"npt=now-"}}}, nil
	}
	rp := ss.replay
	var rng playRange
	have := false
	if v := ctx.Request.Header["Range"]; len(v) > 0 {
		if len(v) > 1 {
			return status(base.StatusInvalidRange), nil
		}
		var rerr error
		if rng, have, rerr = parseRange(v[0]); rerr != nil || rng.Now {
			return status(base.StatusInvalidRange), nil
		}
	}
	scale, serr := parseScale(strings.Join(ctx.Request.Header["Scale"], ","))
	if serr != nil {
		return status(base.StatusInvalidRange), nil
	}
	start, _ := rp.resolve(rng, have)
	if start.IsZero() {
		return status(base.StatusInvalidRange), nil
	}
	if d := h.decide(ctx.Conn, sub, ss.target, start); !d.Allow {
		return status(base.StatusForbidden), nil
	}
	session := ctx.Session
	first, end, err := rp.play(rng, have, scale, func() { go session.Close() })
	switch {
	case errors.Is(err, ErrNoRecording), errors.Is(err, ErrNoStart):
		return status(base.StatusInvalidRange), nil
	case err != nil:
		h.s.b.log.Warn("replay failed", "camera", ss.target.camera, "err", err)
		return status(base.StatusInternalServerError), nil
	}
	rv := "clock=" + formatClock(first) + "-"
	if !end.IsZero() {
		rv += formatClock(end)
	}
	hdr := base.Header{"Range": base.HeaderValue{rv}}
	if scale != 1 {
		hdr["Scale"] = base.HeaderValue{strconv.FormatFloat(scale, 'f', -1, 64)}
	}
	return &base.Response{StatusCode: base.StatusOK, Header: hdr}, nil
}

// OnPause implements gortsplib.ServerHandlerOnPause: a replay stops where it is; a later PLAY without
// Range resumes there.
func (h *handler) OnPause(ctx *gortsplib.ServerHandlerOnPauseCtx) (*base.Response, error) {
	_, res, err := h.authenticate(ctx.Conn, ctx.Request, "", "")
	if res != nil {
		return res, err
	}
	if ss, _ := ctx.Session.UserData().(*sessionState); ss != nil && ss.replay != nil {
		ss.replay.stop()
	}
	return status(base.StatusOK), nil
}

// OnResponse implements gortsplib.ServerHandlerOnResponse: when the answer to a replay's PLAY goes out,
// the reader is counted by gortsplib and the pump may write.
func (h *handler) OnResponse(sc *gortsplib.ServerConn, res *base.Response) {
	if res.StatusCode != base.StatusOK {
		return
	}
	if s := sc.Session(); s != nil {
		if ss, _ := s.UserData().(*sessionState); ss != nil && ss.replay != nil {
			ss.replay.playing()
		}
	}
}

// OnGetParameter implements gortsplib.ServerHandlerOnGetParameter (keep-alives).
func (h *handler) OnGetParameter(ctx *gortsplib.ServerHandlerOnGetParameterCtx) (*base.Response, error) {
	return status(base.StatusOK), nil
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	ss, _ := ctx.Session.UserData().(*sessionState)
	if ss == nil {
		return
	}
	h.s.b.nsess.Add(-1)
	if ss.live != nil {
		ss.live.release()
	}
	if ss.replay != nil {
		ss.replay.close()
	}
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError: a reader whose queue keeps
// overflowing is too slow to follow and is disconnected, so it holds no memory for long.
func (h *handler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	ss, _ := ctx.Session.UserData().(*sessionState)
	if ss == nil {
		return
	}
	if ss.drops.Add(1) == maxDropsBeforeClose {
		h.s.b.log.Info("slow reader disconnected", "camera", ss.target.camera, "user", ss.sub.User)
		go ctx.Session.Close()
	}
}
