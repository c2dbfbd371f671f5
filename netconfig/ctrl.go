package netconfig

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// ctrlConn is a connection to a hostapd or wpa_supplicant control interface: a unix datagram socket under
// ctrl_interface, talked to from a socket of our own in the same directory.
type ctrlConn struct {
	c     *net.UnixConn
	local string
}

var ctrlSeq atomic.Uint64

// dialCtrl connects to the control socket at path. local sockets are created next to it.
func dialCtrl(path string) (*ctrlConn, error) {
	local := filepath.Join(filepath.Dir(path), fmt.Sprintf(".nvr-%d-%d", os.Getpid(), ctrlSeq.Add(1)))
	_ = os.Remove(local)
	c, err := net.DialUnix("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"}, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("control interface %s: %w", path, err)
	}
	return &ctrlConn{c: c, local: local}, nil
}

func (c *ctrlConn) Close() error {
	err := c.c.Close()
	_ = os.Remove(c.local)
	return err
}

// request sends cmd and returns the reply, skipping unsolicited events ("<N>...").
func (c *ctrlConn) request(cmd string, timeout time.Duration) (string, error) {
	if err := c.c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := c.c.Write([]byte(cmd)); err != nil {
		return "", fmt.Errorf("control %s: %w", cmd, err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.c.Read(buf)
		if err != nil {
			return "", fmt.Errorf("control %s: %w", cmd, err)
		}
		if n > 0 && buf[0] == '<' {
			continue
		}
		return string(buf[:n]), nil
	}
}

// attach subscribes the connection to events.
func (c *ctrlConn) attach() error {
	r, err := c.request("ATTACH", 2*time.Second)
	if err != nil {
		return err
	}
	if strings.TrimSpace(r) != "OK" {
		return fmt.Errorf("control ATTACH: %q", r)
	}
	return nil
}

// authorizedStations lists the stations hostapd has authorized already (STA-FIRST / STA-NEXT): events
// sent before a connection attached are lost, so a restarted hostapd's early successes are read here. It
// must be called on a connection that is not attached (an attached one would swallow events). At most
// maxStations are listed.
func (c *ctrlConn) authorizedStations() ([]net.HardwareAddr, error) {
	const maxStations = 1024
	var out []net.HardwareAddr
	r, err := c.request("STA-FIRST", 2*time.Second)
	for i := 0; err == nil && i < maxStations; i++ {
		lines := strings.Split(r, "\n")
		mac, perr := net.ParseMAC(strings.TrimSpace(lines[0]))
		if perr != nil || len(mac) != 6 {
			return out, nil // "FAIL" or nothing: the end of the list
		}
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "flags=") && strings.Contains(l, "[AUTHORIZED]") {
				out = append(out, mac)
			}
		}
		r, err = c.request("STA-NEXT "+mac.String(), 2*time.Second)
	}
	return out, err
}

// interrupt makes a blocked read return at once (events then notices its stop channel).
func (c *ctrlConn) interrupt() { _ = c.c.SetReadDeadline(time.Now()) }

// ctrlEvent is one event line from a control interface, without its "<level>" prefix.
type ctrlEvent struct {
	Name string   // e.g. AP-STA-CONNECTED
	Args []string // the rest, split on spaces
}

// maxEvent bounds an event's length; longer ones are cut.
const maxEvent = 2048

// parseEvent parses "<3>AP-STA-CONNECTED 02:00:00:00:00:01" style messages.
func parseEvent(b []byte) (ctrlEvent, bool) {
	if len(b) > maxEvent {
		b = b[:maxEvent]
	}
	s := string(b)
	if !strings.HasPrefix(s, "<") {
		return ctrlEvent{}, false
	}
	i := strings.IndexByte(s, '>')
	if i < 0 {
		return ctrlEvent{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) == 0 {
		return ctrlEvent{}, false
	}
	return ctrlEvent{Name: f[0], Args: f[1:]}, true
}

// events reads events until the connection fails or stop is closed. It returns why it stopped.
func (c *ctrlConn) events(stop <-chan struct{}, ping time.Duration, fn func(ctrlEvent)) error {
	buf := make([]byte, 4096)
	lastPong := time.Now()
	_ = c.c.SetWriteDeadline(time.Time{}) // attach set one; PINGs must not inherit it
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		_ = c.c.SetReadDeadline(time.Now().Add(ping))
		n, err := c.c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Since(lastPong) > 3*ping {
					return errors.New("control interface silent")
				}
				_, _ = c.c.Write([]byte("PING"))
				continue
			}
			return err
		}
		if strings.HasPrefix(string(buf[:n]), "PONG") {
			lastPong = time.Now()
			continue
		}
		lastPong = time.Now()
		if ev, ok := parseEvent(buf[:n]); ok {
			fn(ev)
		}
	}
}
