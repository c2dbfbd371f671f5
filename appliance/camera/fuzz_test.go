package camera

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/use-go/onvif/device"
)

// hostile holds the shapes a malicious camera sends; the fuzz corpora in
// testdata/fuzz start from the same cases.
var hostile = map[string][]byte{
	"billion-laughs": []byte(`<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><Envelope><Body>&c;</Body></Envelope>`),
	"xxe":            []byte(`<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/shadow">]><Envelope><Body><GetDeviceInformationResponse><SerialNumber>&x;</SerialNumber></GetDeviceInformationResponse></Body></Envelope>`),
	"deep":           []byte(`<Envelope><Body>` + strings.Repeat("<a>", 10000) + strings.Repeat("</a>", 10000) + `</Body></Envelope>`),
	"wide":           []byte(`<Envelope><Body>` + strings.Repeat("<a/>", 250000) + `</Body></Envelope>`),
	"truncated":      []byte(`<Envelope><Body><GetDeviceInformationResponse><SerialNumber>x`),
	"proc-inst":      []byte(`<?xml-stylesheet href="x"?><Envelope><Body/></Envelope>`),
}

func TestHostileXMLRefused(t *testing.T) {
	for name, b := range hostile {
		var out deviceInfo
		err := decodeSOAP(200, b, &out)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: decodeSOAP err %v, want ErrMalformed", name, err)
		}
		if _, err := parseProbeMatches(b, ""); err == nil {
			t.Errorf("%s: parseProbeMatches accepted it", name)
		}
		if _, err := parseNotifications(200, b); err == nil {
			t.Errorf("%s: parseNotifications accepted it", name)
		}
	}
}

// TestOversizedResponse: a camera answering with more than the limit is cut
// off with ErrTooLarge, over a real HTTP connection, without reading it all.
func TestOversizedResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/soap+xml")
		chunk := bytes.Repeat([]byte("<a>xxxxxxxxxxxxxxxx</a>"), 4096)
		for i := 0; i < 10000; i++ { // ~1 GB if read to the end
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	e := newEndpoint("http", strings.TrimPrefix(srv.URL, "http://"), "", nil, 5*time.Second)
	defer e.close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := e.call(ctx, "", credentials{Username: "u", Password: "p"}, device.GetDeviceInformation{}, &deviceInfo{})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
}

func FuzzDecodeSOAP(f *testing.F) {
	f.Add([]byte(`<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><tds:GetDeviceInformationResponse xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><tds:Manufacturer>M</tds:Manufacturer><tds:Model>X</tds:Model><tds:FirmwareVersion>1</tds:FirmwareVersion><tds:SerialNumber>S1</tds:SerialNumber><tds:HardwareId>h</tds:HardwareId></tds:GetDeviceInformationResponse></env:Body></env:Envelope>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var out deviceInfo
		err := decodeSOAP(200, b, &out)
		if err == nil && bytes.Contains(b, []byte("<!")) && bytes.Contains(b, []byte("ENTITY")) {
			t.Fatal("accepted a document with an entity declaration")
		}
		var caps capabilities
		_ = decodeSOAP(200, b, &caps)
	})
}

func FuzzParseProbeMatches(f *testing.F) {
	f.Add([]byte(`<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><env:Header><wsa:RelatesTo>uuid:1</wsa:RelatesTo></env:Header><env:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference><wsa:Address>urn:uuid:1</wsa:Address></wsa:EndpointReference><d:Types>dn:NetworkVideoTransmitter</d:Types><d:XAddrs>http://127.0.0.1:80/onvif/device_service https://127.0.0.1:443/onvif/device_service</d:XAddrs></d:ProbeMatch></d:ProbeMatches></env:Body></env:Envelope>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := parseProbeMatches(b, "")
		if err != nil {
			return
		}
		if len(ds) > maxDiscovered {
			t.Fatalf("%d devices from one datagram", len(ds))
		}
		for _, d := range ds {
			if len(d.XAddrs) == 0 || len(d.XAddrs) > maxXAddrs || d.Endpoint == "" {
				t.Fatalf("bad device %+v", d)
			}
		}
	})
}

func FuzzParseNotifications(f *testing.F) {
	f.Add([]byte(`<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tt="http://www.onvif.org/ver10/schema"><env:Body><tev:PullMessagesResponse><wsnt:NotificationMessage><wsnt:Topic>tns1:VideoSource/GlobalSceneChange/ImagingService</wsnt:Topic><wsnt:Message><tt:Message UtcTime="2026-01-01T00:00:00Z"><tt:Data><tt:SimpleItem Name="State" Value="true"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage></tev:PullMessagesResponse></env:Body></env:Envelope>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ns, err := parseNotifications(200, b)
		if err != nil {
			return
		}
		if len(ns) > maxEventsPerPull {
			t.Fatalf("%d notifications", len(ns))
		}
		for _, n := range ns {
			if len(n.Topic) > 204 {
				t.Fatalf("topic of %d bytes", len(n.Topic))
			}
		}
	})
}
