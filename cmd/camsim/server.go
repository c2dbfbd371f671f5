package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/auth"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/liberrors"
	"golang.org/x/sync/errgroup"
)

// Config configures a Sim.
type Config struct {
	RTSPAddr    string      // plain RTSP listener, e.g. "127.0.0.1:8554"
	RTSPSAddr   string      // RTSPS listener; empty disables it
	TLS         *tls.Config // required with RTSPSAddr
	UDPRTPAddr  string      // UDP RTP listener; empty allocates a pair on 127.0.0.1
	UDPRTCPAddr string      // UDP RTCP listener; must be UDPRTPAddr's port + 1
	ControlAddr string      // HTTP control listener; must be loopback
	Cameras     int
	Codec       string // "h264" or "h265"
	ClipDir     string
	User        string // empty with NoAuth
	Password    string
	NoAuth      bool
	ReadyFile   string    // written with the bound addresses; empty skips it
	Announce    io.Writer // gets one line with the bound addresses; nil skips it
	Seed        uint64    // seeds malformed payloads and initial RTP numbers

	ONVIFAddr      string        // ONVIF HTTP listener template; empty disables ONVIF
	ONVIFSAddr     string        // ONVIF HTTPS listener template; empty: no HTTPS
	DiscoveryIface string        // interface for WS-Discovery; empty: none
	ONVIFStateFile string        // device state written here on every change; empty: none
	ONVIFReboot    time.Duration // length of a simulated reboot
	// Accounts are extra ONVIF accounts every device starts with, besides
	// User (its initial administrator).
	Accounts []Account
}

// Addrs are the bound addresses, as written to the ready file.
type Addrs struct {
	RTSP    string       `json:"rtsp"`
	RTSPS   string       `json:"rtsps,omitempty"`
	UDPRTP  string       `json:"udp_rtp"`
	UDPRTCP string       `json:"udp_rtcp"`
	Control string       `json:"control"`
	ONVIF   []onvifAddrs `json:"onvif,omitempty"`
}

// Sim is a set of simulated cameras behind one RTSP (and optionally one RTSPS)
// server.
type Sim struct {
	cfg  Config
	log  *slog.Logger
	cams map[string]*camera
	// ready is set once every camera has its streams; until then the
	// handlers answer 503.
	ready atomic.Bool
	onvif *onvifSet // nil without -onvif
}

// New loads the clips and prepares the cameras. Nothing listens until Run.
func New(cfg Config, log *slog.Logger) (*Sim, error) {
	if cfg.Cameras < 1 {
		return nil, fmt.Errorf("cameras must be at least 1, got %d", cfg.Cameras)
	}
	if cfg.Codec != "h264" && cfg.Codec != "h265" {
		return nil, fmt.Errorf("codec must be h264 or h265, got %q", cfg.Codec)
	}
	if !cfg.NoAuth && (cfg.User == "" || cfg.Password == "") {
		return nil, errors.New("authentication needs a user and a password")
	}
	if cfg.RTSPSAddr != "" && cfg.TLS == nil {
		return nil, errors.New("RTSPS needs a TLS configuration")
	}
	primary, err := loadClip(clipFile(cfg.ClipDir, cfg.Codec, "1080p"), cfg.Codec)
	if err != nil {
		return nil, err
	}
	clips := [2]*clip{primary, nil}
	alt, err := loadClip(clipFile(cfg.ClipDir, cfg.Codec, "720p"), cfg.Codec)
	switch {
	case err == nil:
		clips[1] = alt
	case errors.Is(err, errClipMissing):
		log.Warn("no alternate-resolution clip; the resolution fault is disabled", "err", err)
	default:
		return nil, err
	}
	log.Info("clips loaded", "codec", cfg.Codec, "frames", len(primary.frames),
		"size", fmt.Sprintf("%dx%d", primary.width, primary.height))

	s := &Sim{cfg: cfg, log: log, cams: make(map[string]*camera, cfg.Cameras)}
	for i := 1; i <= cfg.Cameras; i++ {
		name := "cam" + strconv.Itoa(i)
		s.cams[name] = newCamera(name, clips, log, cfg.Seed+uint64(i))
	}
	if cfg.ONVIFAddr != "" {
		if s.onvif, err = newOnvifSet(cfg.Cameras, cfg.User, cfg.Password, cfg.Accounts, cfg.ONVIFStateFile, cfg.ONVIFReboot, log.With("part", "onvif")); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run listens, writes the ready file and streams until ctx ends or a
// listener fails.
func (s *Sim) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	rtpConn, rtcpConn, err := listenUDPPair(s.cfg.UDPRTPAddr, s.cfg.UDPRTCPAddr)
	if err != nil {
		return err
	}
	plain := &gortsplib.Server{
		Handler:        &handler{sim: s, out: 0},
		RTSPAddress:    s.cfg.RTSPAddr,
		UDPRTPAddress:  rtpConn.LocalAddr().String(),
		UDPRTCPAddress: rtcpConn.LocalAddr().String(),
		AuthMethods:    []auth.VerifyMethod{auth.VerifyMethodDigestMD5},
		ListenPacket:   prebound(rtpConn, rtcpConn),
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			return ptListener{ln}, nil
		},
	}
	if err := plain.Start(); err != nil {
		rtpConn.Close()
		rtcpConn.Close()
		return fmt.Errorf("start RTSP server on %s: %w", s.cfg.RTSPAddr, err)
	}
	defer plain.Close()
	servers := []*gortsplib.Server{plain}

	if s.cfg.RTSPSAddr != "" {
		secure := &gortsplib.Server{
			Handler:     &handler{sim: s, out: 1},
			RTSPAddress: s.cfg.RTSPSAddr,
			TLSConfig:   s.cfg.TLS,
			AuthMethods: []auth.VerifyMethod{auth.VerifyMethodDigestMD5},
		}
		if err := secure.Start(); err != nil {
			return fmt.Errorf("start RTSPS server on %s: %w", s.cfg.RTSPSAddr, err)
		}
		defer secure.Close()
		servers = append(servers, secure)
	}

	for _, c := range s.cams {
		for _, srv := range servers {
			desc, f := newDescription(c.clips[0])
			st := &gortsplib.ServerStream{Server: srv, Desc: desc}
			if err := st.Initialize(); err != nil {
				return fmt.Errorf("%s: init stream: %w", c.name, err)
			}
			defer st.Close()
			c.outputs = append(c.outputs, output{stream: st, media: desc.Medias[0], format: f})
		}
	}

	s.ready.Store(true)

	ctl, err := listenLoopback(s.cfg.ControlAddr)
	if err != nil {
		return err
	}
	ctlHandler := controlHandler(s.cams, s.log)
	if s.onvif != nil {
		mux := http.NewServeMux()
		mux.Handle("/", ctlHandler)
		mux.Handle("/onvif/", s.onvif.control())
		ctlHandler = mux
	}
	hs := &http.Server{Handler: ctlHandler, ReadHeaderTimeout: 5 * time.Second}

	addrs := Addrs{
		RTSP:    plain.NetListener().Addr().String(),
		UDPRTP:  rtpConn.LocalAddr().String(),
		UDPRTCP: rtcpConn.LocalAddr().String(),
		Control: ctl.Addr().String(),
	}
	if len(servers) > 1 {
		addrs.RTSPS = servers[1].NetListener().Addr().String()
	}

	g, gctx := errgroup.WithContext(ctx)
	if s.onvif != nil {
		if err := s.startONVIF(gctx, g, &addrs); err != nil {
			ctl.Close()
			return err
		}
	}
	g.Go(func() error {
		if err := hs.Serve(ctl); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("control server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		return hs.Shutdown(sctx)
	})
	for _, srv := range servers {
		g.Go(func() error {
			errc := make(chan error, 1)
			go func() { errc <- srv.Wait() }()
			select {
			case <-gctx.Done():
				srv.Close()
				<-errc
				return nil
			case err := <-errc:
				return fmt.Errorf("RTSP server %s: %w", srv.RTSPAddress, err)
			}
		})
	}
	for _, c := range s.cams {
		g.Go(func() error { return c.run(gctx) })
	}

	s.log.Info("listening", "rtsp", addrs.RTSP, "rtsps", addrs.RTSPS, "udp_rtp", addrs.UDPRTP,
		"control", addrs.Control, "cameras", len(s.cams), "codec", s.cfg.Codec, "auth", !s.cfg.NoAuth)
	if s.cfg.Announce != nil {
		fmt.Fprintf(s.cfg.Announce, "camsim: rtsp=%s rtsps=%s control=%s udp=%s,%s\n",
			addrs.RTSP, addrs.RTSPS, addrs.Control, addrs.UDPRTP, addrs.UDPRTCP)
	}
	if s.cfg.ReadyFile != "" {
		if err := writeJSONFile(s.cfg.ReadyFile, addrs); err != nil {
			cancel()
			return errors.Join(fmt.Errorf("write ready file: %w", err), g.Wait())
		}
	}
	return g.Wait()
}

// handler answers RTSP requests for one output (0 plain, 1 RTSPS).
type handler struct {
	sim *Sim
	out int
}

func (h *handler) camera(path string) *camera {
	if !h.sim.ready.Load() {
		return nil
	}
	return h.sim.cams[strings.Trim(path, "/")]
}

func (h *handler) authorize(sc *gortsplib.ServerConn, req *base.Request) (*base.Response, error) {
	if h.sim.cfg.NoAuth {
		return nil, nil
	}
	if h.sim.onvif != nil { // the camera's own ONVIF users
		cam := strings.Trim(req.URL.Path, "/")
		if i := strings.IndexByte(cam, '/'); i >= 0 {
			cam = cam[:i]
		}
		if h.sim.onvif.checkRTSP(cam, func(u, p string) bool { return sc.VerifyCredentials(req, u, p) }) {
			return nil, nil
		}
	} else if sc.VerifyCredentials(req, h.sim.cfg.User, h.sim.cfg.Password) {
		return nil, nil
	}
	return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := h.authorize(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	c := h.camera(ctx.Path)
	if c == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.outputs[h.out].stream, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := h.authorize(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	c := h.camera(ctx.Path)
	if c == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	if ctx.Session.State() != gortsplib.ServerSessionStateInitial &&
		ctx.Session.State() != gortsplib.ServerSessionStatePrePlay {
		return &base.Response{StatusCode: base.StatusBadRequest}, nil, nil
	}
	ctx.Session.SetUserData(c)
	c.addSession(ctx.Session)
	return &base.Response{StatusCode: base.StatusOK}, c.outputs[h.out].stream, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (h *handler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	h.sim.log.Debug("play", "path", ctx.Path, "remote", ctx.Conn.NetConn().RemoteAddr().String(),
		"transport", ctx.Session.Transport())
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	if c, ok := ctx.Session.UserData().(*camera); ok {
		c.removeSession(ctx.Session)
		c.log.Debug("session closed", "err", ctx.Error)
	}
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError.
// It fires when a reader's write queue is full (a slow reader).
func (h *handler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	if c, ok := ctx.Session.UserData().(*camera); ok {
		if c.writeErrors.Add(1)%1000 == 1 {
			c.log.Warn("packets dropped for a slow reader", "err", ctx.Error, "total", c.writeErrors.Load())
		}
	}
}

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen.
func (h *handler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	h.sim.log.Debug("conn opened", "remote", ctx.Conn.NetConn().RemoteAddr().String())
}

// listenUDPPair binds the RTP/RTCP pair gortsplib needs (even port, then the
// next one). With empty addresses it lets the kernel choose on 127.0.0.1,
// retrying until it gets an even port whose successor is free.
func listenUDPPair(rtpAddr, rtcpAddr string) (net.PacketConn, net.PacketConn, error) {
	if rtpAddr != "" || rtcpAddr != "" {
		if rtpAddr == "" || rtcpAddr == "" {
			return nil, nil, errors.New("-udp-rtp and -udp-rtcp go together")
		}
		rtp, err := net.ListenPacket("udp", rtpAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen UDP RTP: %w", err)
		}
		rtcp, err := net.ListenPacket("udp", rtcpAddr)
		if err != nil {
			rtp.Close()
			return nil, nil, fmt.Errorf("listen UDP RTCP: %w", err)
		}
		return rtp, rtcp, nil
	}
	for range 200 {
		rtp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("listen UDP RTP: %w", err)
		}
		port := rtp.LocalAddr().(*net.UDPAddr).Port
		if port%2 == 0 {
			rtcp, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port+1))
			if err == nil {
				return rtp, rtcp, nil
			}
		}
		rtp.Close()
	}
	return nil, nil, errors.New("listen UDP: no free even/odd port pair found")
}

// prebound hands gortsplib the already-bound UDP sockets instead of binding
// again, so the kernel-chosen pair cannot be taken in between.
func prebound(conns ...net.PacketConn) func(network, address string) (net.PacketConn, error) {
	return func(network, address string) (net.PacketConn, error) {
		for _, c := range conns {
			if c.LocalAddr().String() == address {
				if u, ok := c.(*net.UDPConn); ok {
					return ptPacketConn{u}, nil
				}
				return c, nil
			}
		}
		return net.ListenPacket(network, address)
	}
}

// listenLoopback listens on addr and refuses anything but a loopback address.
func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("control address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("control address %q: must be a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen control: %w", err)
	}
	return ln, nil
}

// writeJSONFile writes v as JSON to path atomically, so a poller never reads
// a partial file.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}
