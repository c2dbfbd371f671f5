package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/pion/rtp"
)

// session runs one RTSP session: connect, describe, set up the video media, play, and feed packets to a
// stream until the connection fails or ctx ends. It reports whether any unit was delivered.
func (c *Camera) session(ctx context.Context, n uint64, w *watch) (delivered bool, err error) {
	client := &gortsplib.Client{
		Scheme:      c.url.Scheme,
		Host:        c.url.Host,
		ReadTimeout: c.cfg.ReadTimeout,
		TLSConfig:   c.cfg.TLS,
		UserAgent:   "nvr",
	}
	switch c.cfg.Transport {
	case "tcp":
		p := gortsplib.ProtocolTCP
		client.Protocol = &p
	case "udp":
		p := gortsplib.ProtocolUDP
		client.Protocol = &p
	}
	u, err := base.ParseURL(c.url.String())
	if err != nil {
		return false, fmt.Errorf("parse URL: %w", err)
	}
	if c.cfg.Username != "" {
		u.User = url.UserPassword(c.cfg.Username, c.cfg.Password)
	}

	var mu sync.Mutex // guards bad-packet burst accounting, touched from the client's reader
	var burst int
	var burstStart time.Time
	lost := func(k int) {
		mu.Lock()
		defer mu.Unlock()
		if burst == 0 {
			burstStart = c.cfg.Clock()
		}
		burst += k
	}
	client.OnPacketsLost = func(k uint64) { lost(int(min(k, 1<<20))) }
	client.OnDecodeError = func(error) { lost(1) }

	if err := client.Start(); err != nil {
		return false, fmt.Errorf("start RTSP client: %w", c.redact(err))
	}
	defer client.Close()

	// Close the client when ctx ends so that every blocking call below returns.
	stop := context.AfterFunc(ctx, client.Close)
	defer stop()

	desc, _, err := client.Describe(u)
	if err != nil {
		return false, fmt.Errorf("describe: %w", c.redact(err))
	}
	var h264f *format.H264
	var h265f *format.H265
	var forma format.Format
	var codec Codec
	var initial *Params
	medi := desc.FindFormat(&h264f)
	if medi != nil {
		forma, codec = h264f, CodecH264
		sps, pps := h264f.SafeParams()
		initial = &Params{Codec: CodecH264, SPS: sps, PPS: pps}
	} else if medi = desc.FindFormat(&h265f); medi != nil {
		forma, codec = h265f, CodecH265
		vps, sps, pps := h265f.SafeParams()
		initial = &Params{Codec: CodecH265, VPS: vps, SPS: sps, PPS: pps}
	} else {
		return false, errors.New("describe: the camera offers neither H.264 nor H.265 video")
	}
	st, err := newStream(codec, forma.PayloadType(), n, initial, c.cfg.MaxUnitSize, c.cfg.MaxTimestampJump)
	if err != nil {
		return false, err
	}
	if _, err := client.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		return false, fmt.Errorf("setup: %w", c.redact(err))
	}

	fatal := make(chan error, 1)
	var deliveredFlag bool
	client.OnPacketRTP(medi, forma, func(pkt *rtp.Packet) {
		now := c.cfg.Clock()
		pts, ok := client.PacketPTS(medi, pkt)
		if !ok {
			return // the client cannot place this packet in time yet
		}
		unit, err := st.packet(pkt, pts, now)
		switch {
		case errors.Is(err, errTimeline):
			select {
			case fatal <- err:
			default:
			}
			return
		case err != nil:
			lost(1)
			mu.Lock()
			first := burst == 1
			mu.Unlock()
			if first {
				c.log.Warn("dropping bad RTP from camera", "err", err)
			}
			return
		case unit == nil:
			return
		}
		mu.Lock()
		deliveredFlag = true
		mu.Unlock()
		c.count(func(s *Stats) {
			s.Units++
			for _, n := range unit.NALUs {
				s.Bytes += uint64(len(n))
			}
		})
		w.unit(unit)
	})

	if _, err := client.Play(nil); err != nil {
		return false, fmt.Errorf("play: %w", c.redact(err))
	}
	c.count(func(s *Stats) { s.Sessions++ })
	c.log.Info("camera session playing", "codec", codec.String(), "transport", transportName(client))
	w.event(Event{Kind: EventConnected})

	// Report bad packets once per burst: a burst ends after a second without new ones.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	waitErr := make(chan error, 1)
	go func() { waitErr <- client.Wait() }()
	defer func() {
		client.Close()
		<-waitErr
	}()
	reported := 0
	for {
		select {
		case err := <-waitErr:
			waitErr <- err // for the deferred drain
			mu.Lock()
			d := deliveredFlag
			mu.Unlock()
			return d, fmt.Errorf("session: %w", c.redact(err))
		case err := <-fatal:
			mu.Lock()
			d := deliveredFlag
			mu.Unlock()
			return d, err
		case <-tick.C:
			mu.Lock()
			b, since := burst, burstStart
			if b > 0 && b == reported {
				burst, reported = 0, 0 // the burst is over
			}
			mu.Unlock()
			if b > reported {
				c.count(func(s *Stats) { s.BadPackets += uint64(b - reported) })
				c.log.Warn("bad or lost RTP packets", "count", b-reported, "since", since.Format(time.RFC3339))
				w.event(Event{Kind: EventBadPackets, Count: b - reported})
				reported = b
			}
		}
	}
}

func transportName(c *gortsplib.Client) string {
	t := c.Transport()
	if t == nil || t.Session == nil {
		return "unknown"
	}
	if t.Session.Protocol == gortsplib.ProtocolTCP {
		return "tcp"
	}
	return "udp"
}
