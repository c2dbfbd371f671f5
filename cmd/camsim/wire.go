package main

import (
	"bytes"
	"net"
)

// gortsplib's ServerStream looks up the outgoing format by payload type, so a
// packet with a payload type absent from the SDP cannot be written through it.
// Instead the camera writes such a packet with the announced payload type and
// a marker (wrongPTCookie) at the start of its payload, and the socket
// wrappers below rewrite the payload type on the wire, for TCP-interleaved
// and UDP readers of the plain RTSP server. (RTSPS traffic is encrypted
// above the socket, so there the marked packet goes out unchanged.)

// wrongPT is the payload type the marked packets carry on the wire.
const wrongPT = 111

var wrongPTCookie = []byte{0xff, 'c', 'a', 'm', 's', 'i', 'm', 0xff}

const rtpHeaderLen = 12 // camsim never sends CSRCs or header extensions

// rewritePT returns b, or a copy of it with the RTP payload type replaced if
// the RTP packet starting at off carries the cookie.
func rewritePT(b []byte, off int) []byte {
	p := off + rtpHeaderLen
	if len(b) < p+len(wrongPTCookie) || !bytes.Equal(b[p:p+len(wrongPTCookie)], wrongPTCookie) {
		return b
	}
	c := bytes.Clone(b)
	c[off+1] = c[off+1]&0x80 | wrongPT
	return c
}

// ptListener wraps accepted RTSP connections in ptConn.
type ptListener struct{ net.Listener }

func (l ptListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return ptConn{c}, nil
}

// ptConn rewrites marked interleaved RTP frames. gortsplib writes each
// interleaved frame ("$", channel, 16-bit length, packet) with one Write.
type ptConn struct{ net.Conn }

func (c ptConn) Write(b []byte) (int, error) {
	if len(b) > 4 && b[0] == '$' {
		if _, err := c.Conn.Write(rewritePT(b, 4)); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// ptPacketConn rewrites marked RTP datagrams.
type ptPacketConn struct{ *net.UDPConn }

func (c ptPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	return c.UDPConn.WriteTo(rewritePT(b, 0), addr)
}
