package camera

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/beevik/etree"
	"github.com/use-go/onvif/gosoap"
)

// Limits on what a camera may send back.
const (
	maxSOAPResponse = 1 << 20 // one SOAP response
	maxXMLDepth     = 48      // element nesting
	maxXMLTokens    = 200_000 // tokens in one document
)

// namespaces are declared on every request envelope (the prefixes the
// use-go/onvif request types use).
var namespaces = map[string]string{
	"onvif": "http://www.onvif.org/ver10/schema",
	"tt":    "http://www.onvif.org/ver10/schema",
	"tds":   "http://www.onvif.org/ver10/device/wsdl",
	"trt":   "http://www.onvif.org/ver10/media/wsdl",
	"tev":   "http://www.onvif.org/ver10/events/wsdl",
	"wsnt":  "http://docs.oasis-open.org/wsn/b-2",
	"wsa":   "http://www.w3.org/2005/08/addressing",
	"xmime": "http://www.w3.org/2005/05/xmlmime",
}

// checkXML walks a document once and refuses what a camera has no business
// sending: DTDs (entity expansion, external entities), processing
// instructions, nesting deeper than maxXMLDepth and more than maxXMLTokens
// tokens. encoding/xml expands no external entity anyway; this makes the
// refusal explicit and bounds the work before any struct decoding.
func checkXML(b []byte) error {
	dec := xml.NewDecoder(bytes.NewReader(b))
	depth, tokens := 0, 0
	for {
		tok, err := dec.RawToken()
		if errors.Is(err, io.EOF) {
			if depth != 0 {
				return fmt.Errorf("%w: unexpected end of document", ErrMalformed)
			}
			if tokens == 0 {
				return fmt.Errorf("%w: empty document", ErrMalformed)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		tokens++
		if tokens > maxXMLTokens {
			return fmt.Errorf("%w: more than %d XML tokens", ErrMalformed, maxXMLTokens)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return fmt.Errorf("%w: DTD or entity declaration", ErrMalformed)
		case xml.ProcInst:
			if t.Target != "xml" {
				return fmt.Errorf("%w: processing instruction", ErrMalformed)
			}
		case xml.StartElement:
			depth++
			if depth > maxXMLDepth {
				return fmt.Errorf("%w: nesting deeper than %d", ErrMalformed, maxXMLDepth)
			}
		case xml.EndElement:
			depth--
		}
	}
}

// soapFault is the part of a SOAP 1.2 fault the client reads.
type soapFault struct {
	Code     string `xml:"Code>Value"`
	Subcode  string `xml:"Code>Subcode>Value"`
	Subcode2 string `xml:"Code>Subcode>Subcode>Value"`
	Reason   string `xml:"Reason>Text"`
}

// decodeSOAP checks a response body and decodes its Body into out, whose
// fields use paths below Body (e.g. `xml:"GetDeviceInformationResponse>Model"`).
// A SOAP fault becomes a *FaultError.
func decodeSOAP(status int, b []byte, out any) error {
	if err := checkXML(b); err != nil {
		if status != http.StatusOK {
			return &FaultError{Status: status, Reason: "non-SOAP error response"}
		}
		return err
	}
	var env struct {
		XMLName xml.Name `xml:"Envelope"`
		Body    struct {
			Fault *soapFault `xml:"Fault"`
			Inner []byte     `xml:",innerxml"`
		} `xml:"Body"`
	}
	if err := xml.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.Body.Fault != nil || status != http.StatusOK {
		f := &FaultError{Status: status}
		if env.Body.Fault != nil {
			f.Code, f.Subcode = trimPrefix(env.Body.Fault.Code), trimPrefix(env.Body.Fault.Subcode)
			f.Detail = clip(trimPrefix(env.Body.Fault.Subcode2), 64)
			f.Reason = clip(strings.TrimSpace(env.Body.Fault.Reason), 200)
		}
		return f
	}
	if out == nil {
		return nil
	}
	body := append(append([]byte("<Body>"), env.Body.Inner...), "</Body>"...)
	if err := xml.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	return nil
}

func trimPrefix(s string) string {
	s = strings.TrimSpace(s)
	if _, local, ok := strings.Cut(s, ":"); ok {
		return local
	}
	return s
}

// clip bounds a camera-provided string before it goes into an error or log.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// credentials are one camera account. They never reach a log or an error.
type credentials struct {
	Username string `json:"u"`
	Password string `json:"p"`
}

// String hides the password from any accidental formatting.
func (c credentials) String() string { return "credentials{" + c.Username + ", ***}" }

// endpoint is how the appliance reaches one camera: every request of a
// session goes to the same scheme and host, whatever addresses the camera
// hands out (a camera cannot redirect the appliance elsewhere), and over
// HTTPS the certificate must hash to the pin.
type endpoint struct {
	scheme string // "http" or "https"
	host   string // host:port
	pin    string // hex SHA-256 of the leaf certificate (DER); empty: capture it
	client *http.Client
	seen   *string // the certificate hash seen, filled when pin was empty
}

// newEndpoint builds an endpoint using dial for connections.
func newEndpoint(scheme, host, pin string, dial DialFunc, timeout time.Duration) *endpoint {
	e := &endpoint{scheme: scheme, host: host, pin: pin, seen: new(string)}
	tr := &http.Transport{
		DialContext:           dial,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		DisableCompression:    true,
	}
	if scheme == "https" {
		tr.TLSClientConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			// Cameras present self-signed certificates: trust is the pin
			// taken at adoption, checked on every handshake.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return ErrCertChanged
				}
				sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
				got := hex.EncodeToString(sum[:])
				if e.pin == "" {
					*e.seen = got
					return nil
				}
				if got != e.pin {
					return fmt.Errorf("%w: certificate sha256 %s, pinned %s", ErrCertChanged, got, e.pin)
				}
				return nil
			},
		}
	}
	e.client = &http.Client{
		Transport: tr,
		// A camera's redirect is never followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return e
}

func (e *endpoint) close() {
	e.client.CloseIdleConnections()
}

// url rewrites a camera-provided address onto the session's scheme and host,
// keeping only its path.
func (e *endpoint) url(addr string) string {
	path := "/onvif/device_service"
	if addr != "" {
		if u, err := url.Parse(addr); err == nil && u.Path != "" {
			path = u.EscapedPath()
		} else if strings.HasPrefix(addr, "/") {
			path = addr
		}
	}
	return e.scheme + "://" + e.host + path
}

// post sends body to addr (rewritten) and returns status and at most limit
// bytes of the response.
func (e *endpoint) post(ctx context.Context, addr, contentType string, body io.Reader, limit int64) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url(addr), body)
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	res, err := e.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrCertChanged) {
			return 0, nil, ErrCertChanged
		}
		return 0, nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, e.host, redactURLError(err))
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: read response from %s: %v", ErrUnreachable, e.host, err)
	}
	if int64(len(b)) > limit {
		return 0, nil, fmt.Errorf("%w: response from %s over %d bytes", ErrTooLarge, e.host, limit)
	}
	return res.StatusCode, b, nil
}

// redactURLError drops the URL from a *url.Error (the path may hold an
// upload token).
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// call sends one ONVIF operation (a use-go/onvif request type, or any value
// that marshals to the operation element) with a WS-UsernameToken digest and
// decodes the response into out.
func (e *endpoint) call(ctx context.Context, addr string, cred credentials, op, out any) error {
	status, resp, err := e.exchange(ctx, addr, cred, op)
	if err != nil {
		return err
	}
	return authErr(decodeSOAP(status, resp, out))
}

// authErr turns an authentication fault into ErrUnauthorized.
func authErr(err error) error {
	var f *FaultError
	if errors.As(err, &f) && f.unauthorized() {
		return fmt.Errorf("%w: %s", ErrUnauthorized, f)
	}
	return err
}

// exchange sends one operation and returns the raw answer.
func (e *endpoint) exchange(ctx context.Context, addr string, cred credentials, op any) (int, []byte, error) {
	b, err := xml.Marshal(op)
	if err != nil {
		return 0, nil, fmt.Errorf("marshal %T: %w", op, err)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(b); err != nil {
		return 0, nil, fmt.Errorf("build %T: %w", op, err)
	}
	msg := gosoap.NewEmptySOAP()
	msg.AddBodyContent(doc.Root())
	msg.AddRootNamespaces(namespaces)
	if cred.Username != "" {
		msg.AddWSSecurity(cred.Username, cred.Password)
	}
	return e.post(ctx, addr, "application/soap+xml; charset=utf-8", strings.NewReader(msg.String()), maxSOAPResponse)
}

// DialFunc opens connections to cameras. The default dials from the host;
// the appliance may pass one bound to the camera network.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)
