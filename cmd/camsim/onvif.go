package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"golang.org/x/sync/errgroup"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The ONVIF side of camsim. Each simulated camera is one ONVIF device with
// its own HTTP (and optionally HTTPS) listener, identity (serial, MAC, TLS
// certificate, WS-Discovery endpoint UUID), user list, firmware version and
// event queue. Its RTSP stream is /camN on the shared RTSP server, and RTSP
// authentication accepts that device's ONVIF users.
//
// Requests are SOAP 1.2 with WS-UsernameToken digest authentication (plain
// text passwords are refused). Only the operations the NVR and common clients
// use are implemented; anything else is a SOAP fault, never a silent success.

// Limits on what a client may send.
const (
	maxSOAPRequest   = 1 << 20  // a SOAP request body
	maxFirmwareImage = 16 << 20 // a firmware image
	maxXMLDepth      = 32       // element nesting in a request
	maxUsers         = 32       // users per device
	maxSubscriptions = 16       // live pull-point subscriptions per device
	maxQueuedEvents  = 256      // events kept per subscription
	maxPullWait      = 10 * time.Second
	nonceCacheSize   = 4096
	createdSkew      = 5 * time.Minute
)

// ONVIF user levels.
const (
	levelAdmin    = "Administrator"
	levelOperator = "Operator"
	levelUser     = "User"
)

// Event topics camsim raises (ONVIF core specification topic names).
const (
	topicTamper     = "tns1:VideoSource/GlobalSceneChange/ImagingService"
	topicSignalLoss = "tns1:VideoSource/SignalLoss"
)

// Fault switches set through the control endpoint.
const (
	onvifFaultRejectSetUser  = "reject-setuser"
	onvifFaultRejectFirmware = "reject-firmware"
)

// onvifUser is one account on a simulated device.
type onvifUser struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Level    string `json:"level"`
	Fixed    bool   `json:"fixed,omitempty"`  // DeleteUsers refuses it (a built-in account)
	Locked   bool   `json:"locked,omitempty"` // SetUser refuses it too
}

// onvifState is a device's state as written to the -onvif-state file, which
// exists so tests can check what the NVR did to the camera (camsim is a test
// tool: a real camera never reveals its passwords).
type onvifState struct {
	UUID            string      `json:"uuid"`
	Serial          string      `json:"serial"`
	MAC             string      `json:"mac"`
	Model           string      `json:"model"`
	Firmware        string      `json:"firmware"`
	FirmwareUpdated time.Time   `json:"firmware_updated,omitzero"`
	CertSHA256      string      `json:"cert_sha256,omitempty"`
	Users           []onvifUser `json:"users"`
	Reboots         int         `json:"reboots"`
	Faults          []string    `json:"faults,omitempty"`
	HTTP            string      `json:"http"`
	HTTPS           string      `json:"https,omitempty"`
	RTSPPath        string      `json:"rtsp_path"`
}

// onvifAddrs is one device's entry in the ready file.
type onvifAddrs struct {
	Camera string `json:"camera"`
	UUID   string `json:"uuid"`
	HTTP   string `json:"http"`
	HTTPS  string `json:"https,omitempty"`
}

// onvifDevice is one simulated ONVIF camera.
type onvifDevice struct {
	name string
	idx  int
	sim  *onvifSet
	log  *slog.Logger

	mu              sync.Mutex
	uuid            string
	serial          string
	mac             string
	firmware        string
	firmwareUpdated time.Time
	cert            *tls.Certificate
	users           []onvifUser
	faults          map[string]bool
	reboots         int
	rebootUntil     time.Time
	nonces          map[string]time.Time
	nonceOrder      []string
	uploads         map[string]time.Time // firmware upload tokens and their expiry
	subs            map[string]*subscription
	httpAddr        string
	httpsAddr       string
}

// onvifSet holds every simulated ONVIF device and the shared configuration.
type onvifSet struct {
	log       *slog.Logger
	devices   []*onvifDevice
	byName    map[string]*onvifDevice
	stateFile string
	reboot    time.Duration
	rtspAddr  func() string
	rtspsAddr func() string
	now       func() time.Time

	fileMu sync.Mutex
}

// newOnvifSet creates n devices, all with the given initial administrator
// and the extra accounts.
func newOnvifSet(n int, user, password string, accounts []Account, stateFile string, reboot time.Duration, log *slog.Logger) (*onvifSet, error) {
	if 1+len(accounts) > maxUsers {
		return nil, fmt.Errorf("%d accounts per camera: at most %d", 1+len(accounts), maxUsers)
	}
	for i, a := range accounts {
		if a.Name == user || slices.ContainsFunc(accounts[:i], func(x Account) bool { return x.Name == a.Name }) {
			return nil, fmt.Errorf("account %q given twice", a.Name)
		}
	}
	s := &onvifSet{log: log, byName: map[string]*onvifDevice{}, stateFile: stateFile, reboot: reboot, now: time.Now}
	for i := 1; i <= n; i++ {
		d := &onvifDevice{
			name:     "cam" + strconv.Itoa(i),
			idx:      i,
			sim:      s,
			log:      log.With("cam", "cam"+strconv.Itoa(i)),
			firmware: "1.0.0",
			faults:   map[string]bool{},
			nonces:   map[string]time.Time{},
			uploads:  map[string]time.Time{},
			subs:     map[string]*subscription{},
			users:    []onvifUser{{Username: user, Password: password, Level: levelAdmin}},
		}
		for _, a := range accounts {
			d.users = append(d.users, onvifUser{Username: a.Name, Password: a.Password, Level: a.Level, Fixed: a.Fixed})
		}
		if err := d.newIdentity(); err != nil {
			return nil, err
		}
		s.devices = append(s.devices, d)
		s.byName[d.name] = d
	}
	return s, nil
}

// newIdentity gives the device a fresh serial, MAC, endpoint UUID and TLS
// certificate: what a camera swapped for another one looks like.
func (d *onvifDevice) newIdentity() error {
	var b [22]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	d.serial = "CS" + strings.ToUpper(hex.EncodeToString(b[:6]))
	mac := append([]byte{0x02}, b[6:11]...) // locally administered
	d.mac = net.HardwareAddr(mac).String()
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	d.uuid = fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	cert, err := selfSigned("camsim-"+d.name, d.serial)
	if err != nil {
		return err
	}
	d.cert = cert
	return nil
}

// selfSigned makes a P-256 self-signed server certificate for loopback.
func selfSigned(cn, serialText string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate device key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, SerialNumber: serialText, Organization: []string{"camsim"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create device certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// tlsConfig serves the device's current certificate, so a swap takes effect
// on the next handshake.
func (d *onvifDevice) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.cert, nil
		},
	}
}

// credentialsFor returns the passwords of the device's users for RTSP.
func (s *onvifSet) checkRTSP(cam string, verify func(user, pass string) bool) bool {
	d := s.byName[cam]
	if d == nil {
		return false
	}
	d.mu.Lock()
	users := append([]onvifUser(nil), d.users...)
	rebooting := s.now().Before(d.rebootUntil)
	d.mu.Unlock()
	if rebooting {
		return false
	}
	for _, u := range users {
		if verify(u.Username, u.Password) {
			return true
		}
	}
	return false
}

// snapshotLocked returns the device state. d.mu must be held.
func (d *onvifDevice) snapshotLocked() onvifState {
	st := onvifState{
		UUID: d.uuid, Serial: d.serial, MAC: d.mac, Model: "CamSim-1080", Firmware: d.firmware,
		FirmwareUpdated: d.firmwareUpdated, Users: append([]onvifUser(nil), d.users...), Reboots: d.reboots,
		HTTP: d.httpAddr, HTTPS: d.httpsAddr, RTSPPath: "/" + d.name,
	}
	if d.cert != nil {
		sum := sha256.Sum256(d.cert.Certificate[0])
		st.CertSHA256 = hex.EncodeToString(sum[:])
	}
	for f, on := range d.faults {
		if on {
			st.Faults = append(st.Faults, f)
		}
	}
	return st
}

// saveState writes every device's state to the state file, if there is one.
func (s *onvifSet) saveState() {
	if s.stateFile == "" {
		return
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	all := make(map[string]onvifState, len(s.devices))
	for _, d := range s.devices {
		d.mu.Lock()
		all[d.name] = d.snapshotLocked()
		d.mu.Unlock()
	}
	if err := writeJSONFile(s.stateFile, all); err != nil {
		s.log.Error("write ONVIF state file", "err", err)
	}
}

// soapFault is an error that becomes a SOAP fault response.
type soapFault struct {
	status   int
	code     string // env:Sender or env:Receiver
	subcode  string // e.g. ter:NotAuthorized
	subcode2 string // the specification's second level, e.g. ter:UsernameMissing; may be empty
	reason   string
}

func (f *soapFault) Error() string { return f.subcode + " " + f.subcode2 + ": " + f.reason }

func faultSender(sub, reason string) *soapFault {
	return &soapFault{status: http.StatusBadRequest, code: "env:Sender", subcode: sub, reason: reason}
}

var errNotAuthorized = &soapFault{status: http.StatusBadRequest, code: "env:Sender", subcode: "ter:NotAuthorized", reason: "Sender not authorized"}

// request is the parsed part of an incoming SOAP envelope.
type request struct {
	op     string // local name of the first Body child
	body   []byte // raw inner XML of the Body
	token  *usernameToken
	scheme string
	host   string
}

type usernameToken struct {
	Username string `xml:"Username"`
	Password struct {
		Type string `xml:"Type,attr"`
		Text string `xml:",chardata"`
	} `xml:"Password"`
	Nonce   string `xml:"Nonce"`
	Created string `xml:"Created"`
}

type envelope struct {
	XMLName xml.Name `xml:"Envelope"`
	Header  struct {
		Security struct {
			UsernameToken *usernameToken `xml:"UsernameToken"`
		} `xml:"Security"`
	} `xml:"Header"`
	Body struct {
		Inner []byte `xml:",innerxml"`
	} `xml:"Body"`
}

// checkXML rejects DTDs (entity expansion, XXE), processing instructions
// other than the XML declaration, and nesting beyond maxXMLDepth, and
// returns the local name of the first child of the SOAP Body.
func checkXML(b []byte) (string, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	depth, inBody, op := 0, 0, ""
	for {
		tok, err := dec.RawToken()
		if errors.Is(err, io.EOF) {
			if depth != 0 {
				return "", errors.New("unexpected end of document")
			}
			return op, nil
		}
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.Directive:
			return "", errors.New("DTDs and entity declarations are not accepted")
		case xml.ProcInst:
			if t.Target != "xml" {
				return "", errors.New("processing instructions are not accepted")
			}
		case xml.StartElement:
			depth++
			if depth > maxXMLDepth {
				return "", fmt.Errorf("nesting deeper than %d", maxXMLDepth)
			}
			if depth == 2 && t.Name.Local == "Body" {
				inBody = depth
			} else if inBody != 0 && depth == inBody+1 && op == "" {
				op = t.Name.Local
			}
		case xml.EndElement:
			if depth == inBody {
				inBody = 0
			}
			depth--
		}
	}
}

func parseRequest(r *http.Request) (*request, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxSOAPRequest+1))
	if err != nil {
		return nil, faultSender("ter:InvalidArgVal", "read request")
	}
	if len(b) > maxSOAPRequest {
		return nil, faultSender("ter:InvalidArgVal", "request too large")
	}
	op, err := checkXML(b)
	if err != nil {
		return nil, faultSender("ter:WellFormed", "malformed request: "+err.Error())
	}
	var env envelope
	if err := xml.Unmarshal(b, &env); err != nil {
		return nil, faultSender("ter:WellFormed", "malformed envelope")
	}
	if op == "" {
		return nil, faultSender("ter:WellFormed", "empty SOAP body")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return &request{op: op, body: env.Body.Inner, token: env.Header.Security.UsernameToken, scheme: scheme, host: r.Host}, nil
}

// preAuth operations may be called without credentials (ONVIF access class PRE_AUTH).
var preAuth = map[string]bool{
	"GetSystemDateAndTime": true, "GetWsdlUrl": true, "GetHostname": true,
	"GetEndpointReference": true, "GetServiceCapabilities": true,
}

// adminOnly operations need an Administrator.
var adminOnly = map[string]bool{
	"SetUser": true, "CreateUsers": true, "DeleteUsers": true, "StartFirmwareUpgrade": true,
	"UpgradeSystemFirmware": true, "SystemReboot": true, "GetUsers": true,
}

// authenticate checks a WS-UsernameToken digest and returns the user's name
// and level. Nonces are remembered so a captured request cannot be replayed.
func (d *onvifDevice) authenticate(tok *usernameToken) (string, string, error) {
	if tok == nil || tok.Username == "" {
		return "", "", errNotAuthorized
	}
	if !strings.HasSuffix(tok.Password.Type, "#PasswordDigest") {
		return "", "", errNotAuthorized // plain text passwords are refused
	}
	nonce, err := base64.StdEncoding.DecodeString(strings.TrimSpace(tok.Nonce))
	if err != nil || len(nonce) < 8 || len(nonce) > 64 {
		return "", "", errNotAuthorized
	}
	created, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(tok.Created))
	now := d.sim.now()
	if err != nil || created.Before(now.Add(-createdSkew)) || created.After(now.Add(createdSkew)) {
		return "", "", errNotAuthorized
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	key := tok.Username + "\x00" + tok.Nonce + "\x00" + tok.Created
	if _, seen := d.nonces[key]; seen {
		return "", "", errNotAuthorized
	}
	for _, u := range d.users {
		if u.Username != tok.Username {
			continue
		}
		h := sha1.New()
		h.Write(nonce)
		h.Write([]byte(strings.TrimSpace(tok.Created)))
		h.Write([]byte(u.Password))
		want := base64.StdEncoding.EncodeToString(h.Sum(nil))
		if subtle.ConstantTimeCompare([]byte(want), []byte(strings.TrimSpace(tok.Password.Text))) != 1 {
			return "", "", errNotAuthorized
		}
		d.nonces[key] = now
		d.nonceOrder = append(d.nonceOrder, key)
		if len(d.nonceOrder) > nonceCacheSize {
			delete(d.nonces, d.nonceOrder[0])
			d.nonceOrder = d.nonceOrder[1:]
		}
		return u.Username, u.Level, nil
	}
	return "", "", errNotAuthorized
}

// handler serves one device's ONVIF endpoints and firmware uploads.
func (d *onvifDevice) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /onvif/firmware/{token}", d.serveUpload)
	mux.HandleFunc("POST /onvif/", d.serveSOAP)
	return mux
}

func (d *onvifDevice) rebooting() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sim.now().Before(d.rebootUntil)
}

func (d *onvifDevice) serveSOAP(w http.ResponseWriter, r *http.Request) {
	if d.rebooting() {
		http.Error(w, "rebooting", http.StatusServiceUnavailable)
		return
	}
	req, err := parseRequest(r)
	if err == nil {
		var body string
		body, err = d.dispatch(r.Context(), r.URL.Path, req)
		if err == nil {
			writeSOAP(w, http.StatusOK, body)
			return
		}
	}
	var f *soapFault
	if !errors.As(err, &f) {
		d.log.Error("ONVIF request failed", "err", err)
		f = &soapFault{status: http.StatusInternalServerError, code: "env:Receiver", subcode: "ter:Action", reason: "internal error"}
	}
	d.log.Debug("ONVIF fault", "path", r.URL.Path, "fault", f.subcode, "detail", f.subcode2)
	inner := ""
	if f.subcode2 != "" {
		inner = `<env:Subcode><env:Value>` + f.subcode2 + `</env:Value></env:Subcode>`
	}
	writeSOAP(w, f.status, fmt.Sprintf(`<env:Fault><env:Code><env:Value>%s</env:Value><env:Subcode><env:Value>%s</env:Value>%s</env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">%s</env:Text></env:Reason></env:Fault>`,
		f.code, f.subcode, inner, esc(f.reason)))
}

const soapNamespaces = `xmlns:env="http://www.w3.org/2003/05/soap-envelope" ` +
	`xmlns:tt="http://www.onvif.org/ver10/schema" ` +
	`xmlns:tds="http://www.onvif.org/ver10/device/wsdl" ` +
	`xmlns:trt="http://www.onvif.org/ver10/media/wsdl" ` +
	`xmlns:tev="http://www.onvif.org/ver10/events/wsdl" ` +
	`xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" ` +
	`xmlns:wsa="http://www.w3.org/2005/08/addressing" ` +
	`xmlns:tns1="http://www.onvif.org/ver10/topics" ` +
	`xmlns:ter="http://www.onvif.org/ver10/error"`

func writeSOAP(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/soap+xml; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><env:Envelope %s><env:Body>%s</env:Body></env:Envelope>`, soapNamespaces, body)
}

// esc escapes s for XML character data and attribute values.
func esc(s string) string {
	var b strings.Builder
	if err := xml.EscapeText(&b, []byte(s)); err != nil {
		return ""
	}
	return b.String()
}

// dispatch authenticates and runs one operation, returning the Body content.
func (d *onvifDevice) dispatch(ctx context.Context, path string, req *request) (string, error) {
	self := ""
	if !preAuth[req.op] {
		user, level, err := d.authenticate(req.token)
		if err != nil {
			return "", err
		}
		// Anonymous accounts reach only the PRE_AUTH operations.
		if level == levelAnonymous || adminOnly[req.op] && level != levelAdmin {
			return "", errNotAuthorized
		}
		self = user
	}
	base := req.scheme + "://" + req.host
	if id, ok := strings.CutPrefix(path, "/onvif/events/subscription/"); ok {
		return d.subscriptionOp(ctx, id, req)
	}
	switch req.op {
	case "GetSystemDateAndTime":
		return d.opDateTime(), nil
	case "GetDeviceInformation":
		d.mu.Lock()
		defer d.mu.Unlock()
		return fmt.Sprintf(`<tds:GetDeviceInformationResponse><tds:Manufacturer>EdgeNVR Labs</tds:Manufacturer><tds:Model>CamSim-1080</tds:Model><tds:FirmwareVersion>%s</tds:FirmwareVersion><tds:SerialNumber>%s</tds:SerialNumber><tds:HardwareId>camsim-hw1</tds:HardwareId></tds:GetDeviceInformationResponse>`,
			esc(d.firmware), esc(d.serial)), nil
	case "GetCapabilities":
		return d.opCapabilities(base), nil
	case "GetServices":
		return d.opServices(base), nil
	case "GetServiceCapabilities":
		return `<tds:GetServiceCapabilitiesResponse><tds:Capabilities><tds:Network/><tds:Security TLS1.2="true" Dot1X="true" UsernameToken="true" HttpDigest="false"/><tds:System FirmwareUpgrade="true" HttpFirmwareUpgrade="true"/></tds:Capabilities></tds:GetServiceCapabilitiesResponse>`, nil
	case "GetNetworkInterfaces":
		d.mu.Lock()
		defer d.mu.Unlock()
		return fmt.Sprintf(`<tds:GetNetworkInterfacesResponse><tds:NetworkInterfaces token="eth0"><tt:Enabled>true</tt:Enabled><tt:Info><tt:Name>eth0</tt:Name><tt:HwAddress>%s</tt:HwAddress><tt:MTU>1500</tt:MTU></tt:Info><tt:IPv4><tt:Enabled>true</tt:Enabled><tt:Config><tt:Manual><tt:Address>127.0.0.1</tt:Address><tt:PrefixLength>8</tt:PrefixLength></tt:Manual><tt:DHCP>false</tt:DHCP></tt:Config></tt:IPv4></tds:NetworkInterfaces></tds:GetNetworkInterfacesResponse>`, esc(d.mac)), nil
	case "GetScopes":
		return `<tds:GetScopesResponse><tds:Scopes><tt:ScopeDef>Fixed</tt:ScopeDef><tt:ScopeItem>onvif://www.onvif.org/type/video_encoder</tt:ScopeItem></tds:Scopes><tds:Scopes><tt:ScopeDef>Fixed</tt:ScopeDef><tt:ScopeItem>onvif://www.onvif.org/hardware/CamSim-1080</tt:ScopeItem></tds:Scopes></tds:GetScopesResponse>`, nil
	case "GetUsers":
		return d.opGetUsers(), nil
	case "CreateUsers":
		return d.opCreateUsers(req)
	case "SetUser":
		return d.opSetUser(req)
	case "DeleteUsers":
		return d.opDeleteUsers(req, self)
	case "SystemReboot":
		d.startReboot()
		return `<tds:SystemRebootResponse><tds:Message>Rebooting</tds:Message></tds:SystemRebootResponse>`, nil
	case "StartFirmwareUpgrade":
		return d.opStartFirmwareUpgrade(base)
	case "UpgradeSystemFirmware":
		return d.opUpgradeSystemFirmware(req)
	case "GetProfiles":
		return `<trt:GetProfilesResponse>` + profileXML + `</trt:GetProfilesResponse>`, nil
	case "GetProfile":
		return `<trt:GetProfileResponse>` + strings.Replace(profileXML, "trt:Profiles", "trt:Profile", 2) + `</trt:GetProfileResponse>`, nil
	case "GetVideoSources":
		return `<trt:GetVideoSourcesResponse><trt:VideoSources token="vsrc0"><tt:Framerate>25</tt:Framerate><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution></trt:VideoSources></trt:GetVideoSourcesResponse>`, nil
	case "GetStreamUri":
		return d.opStreamURI(req)
	case "GetSnapshotUri":
		return "", faultSender("ter:ActionNotSupported", "snapshots are not supported")
	case "GetEventProperties":
		return `<tev:GetEventPropertiesResponse><tev:TopicNamespaceLocation>http://www.onvif.org/onvif/ver10/topics/topicns.xml</tev:TopicNamespaceLocation><wsnt:FixedTopicSet>true</wsnt:FixedTopicSet><wstop:TopicSet xmlns:wstop="http://docs.oasis-open.org/wsn/t-1"><tns1:VideoSource><GlobalSceneChange><ImagingService wstop:topic="true"/></GlobalSceneChange><SignalLoss wstop:topic="true"/></tns1:VideoSource></wstop:TopicSet><wsnt:TopicExpressionDialect>http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet</wsnt:TopicExpressionDialect><tev:MessageContentFilterDialect>http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter</tev:MessageContentFilterDialect></tev:GetEventPropertiesResponse>`, nil
	case "CreatePullPointSubscription":
		return d.opCreatePullPoint(base)
	}
	return "", faultSender("ter:ActionNotSupported", "operation not supported: "+req.op)
}

const profileXML = `<trt:Profiles token="profile_1" fixed="true"><tt:Name>mainStream</tt:Name>` +
	`<tt:VideoSourceConfiguration token="vsc0"><tt:Name>vsc0</tt:Name><tt:UseCount>1</tt:UseCount><tt:SourceToken>vsrc0</tt:SourceToken><tt:Bounds x="0" y="0" width="1920" height="1080"/></tt:VideoSourceConfiguration>` +
	`<tt:VideoEncoderConfiguration token="vec0"><tt:Name>vec0</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution><tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit></tt:RateControl><tt:H264><tt:GovLength>25</tt:GovLength><tt:H264Profile>High</tt:H264Profile></tt:H264><tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>` +
	`</trt:Profiles>`

func (d *onvifDevice) opDateTime() string {
	now := d.sim.now().UTC()
	return fmt.Sprintf(`<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone><tt:UTCDateTime><tt:Time><tt:Hour>%d</tt:Hour><tt:Minute>%d</tt:Minute><tt:Second>%d</tt:Second></tt:Time><tt:Date><tt:Year>%d</tt:Year><tt:Month>%d</tt:Month><tt:Day>%d</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>`,
		now.Hour(), now.Minute(), now.Second(), now.Year(), int(now.Month()), now.Day())
}

func (d *onvifDevice) opCapabilities(base string) string {
	return fmt.Sprintf(`<tds:GetCapabilitiesResponse><tds:Capabilities>`+
		`<tt:Device><tt:XAddr>%[1]s/onvif/device_service</tt:XAddr><tt:Network><tt:IPFilter>false</tt:IPFilter><tt:ZeroConfiguration>false</tt:ZeroConfiguration><tt:IPVersion6>false</tt:IPVersion6><tt:DynDNS>false</tt:DynDNS></tt:Network>`+
		`<tt:System><tt:DiscoveryResolve>true</tt:DiscoveryResolve><tt:DiscoveryBye>true</tt:DiscoveryBye><tt:RemoteDiscovery>false</tt:RemoteDiscovery><tt:SystemBackup>false</tt:SystemBackup><tt:SystemLogging>false</tt:SystemLogging><tt:FirmwareUpgrade>true</tt:FirmwareUpgrade><tt:SupportedVersions><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tt:SupportedVersions></tt:System>`+
		`<tt:Security><tt:TLS1.1>false</tt:TLS1.1><tt:TLS1.2>%[2]t</tt:TLS1.2><tt:OnboardKeyGeneration>true</tt:OnboardKeyGeneration><tt:AccessPolicyConfig>false</tt:AccessPolicyConfig><tt:X.509Token>false</tt:X.509Token><tt:SAMLToken>false</tt:SAMLToken><tt:KerberosToken>false</tt:KerberosToken><tt:RELToken>false</tt:RELToken><tt:Extension><tt:TLS1.0>false</tt:TLS1.0><tt:Extension><tt:Dot1X>true</tt:Dot1X><tt:SupportedEAPMethod>13</tt:SupportedEAPMethod><tt:RemoteUserHandling>false</tt:RemoteUserHandling></tt:Extension></tt:Extension></tt:Security></tt:Device>`+
		`<tt:Events><tt:XAddr>%[1]s/onvif/events_service</tt:XAddr><tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport><tt:WSPullPointSupport>true</tt:WSPullPointSupport><tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>`+
		`<tt:Media><tt:XAddr>%[1]s/onvif/media_service</tt:XAddr><tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>`+
		`</tds:Capabilities></tds:GetCapabilitiesResponse>`, esc(base), d.httpsAddr != "")
}

func (d *onvifDevice) opServices(base string) string {
	var b strings.Builder
	b.WriteString(`<tds:GetServicesResponse>`)
	for _, s := range [][3]string{
		{"http://www.onvif.org/ver10/device/wsdl", "/onvif/device_service", "2.60"},
		{"http://www.onvif.org/ver10/media/wsdl", "/onvif/media_service", "2.60"},
		{"http://www.onvif.org/ver10/events/wsdl", "/onvif/events_service", "2.60"},
	} {
		major, minor, _ := strings.Cut(s[2], ".")
		fmt.Fprintf(&b, `<tds:Service><tds:Namespace>%s</tds:Namespace><tds:XAddr>%s%s</tds:XAddr><tds:Version><tt:Major>%s</tt:Major><tt:Minor>%s</tt:Minor></tds:Version></tds:Service>`,
			s[0], esc(base), s[1], major, minor)
	}
	b.WriteString(`</tds:GetServicesResponse>`)
	return b.String()
}

func (d *onvifDevice) opStreamURI(req *request) (string, error) {
	var in struct {
		Protocol     string `xml:"GetStreamUri>StreamSetup>Transport>Protocol"`
		ProfileToken string `xml:"GetStreamUri>ProfileToken"`
	}
	if err := xml.Unmarshal(wrap(req.body), &in); err != nil {
		return "", faultSender("ter:InvalidArgVal", "malformed GetStreamUri")
	}
	if in.ProfileToken != "" && in.ProfileToken != "profile_1" {
		return "", faultSender("ter:NoProfile", "no such profile")
	}
	addr, scheme := d.sim.rtspAddr(), "rtsp"
	if req.scheme == "https" && d.sim.rtspsAddr != nil && d.sim.rtspsAddr() != "" {
		addr, scheme = d.sim.rtspsAddr(), "rtsps"
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("RTSP address %q: %w", addr, err)
	}
	host := req.host
	if h, _, err := net.SplitHostPort(req.host); err == nil {
		host = h
	}
	uri := scheme + "://" + net.JoinHostPort(strings.Trim(host, "[]"), port) + "/" + d.name
	return fmt.Sprintf(`<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>%s</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>`, esc(uri)), nil
}

// wrap makes the inner XML of a Body a single document.
func wrap(inner []byte) []byte {
	return append(append([]byte("<Body>"), inner...), "</Body>"...)
}

func (d *onvifDevice) startReboot() {
	d.mu.Lock()
	d.rebootUntil = d.sim.now().Add(d.sim.reboot)
	d.reboots++
	for id, s := range d.subs {
		s.close()
		delete(d.subs, id)
	}
	d.mu.Unlock()
	d.log.Info("rebooting", "for", d.sim.reboot)
	d.sim.saveState()
}

// control applies a control-endpoint action to the device.
func (d *onvifDevice) control(action, kind, value string) error {
	switch action {
	case "event":
		var topic string
		switch kind {
		case "tamper":
			topic = topicTamper
		case "signal-loss":
			topic = topicSignalLoss
		default:
			return fmt.Errorf("unknown event kind %q: tamper or signal-loss", kind)
		}
		state, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("event value %q: true or false", value)
		}
		d.raise(topic, state)
	case "swap":
		d.mu.Lock()
		err := d.newIdentity()
		d.mu.Unlock()
		if err != nil {
			return err
		}
		d.log.Info("camera swapped for another device")
	case "fault":
		on := value != "false"
		switch kind {
		case onvifFaultRejectSetUser, onvifFaultRejectFirmware:
		default:
			return fmt.Errorf("unknown ONVIF fault %q", kind)
		}
		d.mu.Lock()
		d.faults[kind] = on
		d.mu.Unlock()
	default:
		return fmt.Errorf("unknown action %q", action)
	}
	d.sim.saveState()
	return nil
}

// onvifControl serves POST /onvif/{action}?cam=camN&kind=…&value=… on the
// loopback control endpoint:
//
//	POST /onvif/event?cam=cam1&kind=tamper&value=true       raise a tamper event (or signal-loss)
//	POST /onvif/swap?cam=cam1                               replace the camera by another one (new serial, MAC, certificate)
//	POST /onvif/fault?cam=cam1&kind=reject-setuser          refuse SetUser (value=false clears it)
//	POST /onvif/fault?cam=cam1&kind=reject-firmware         refuse the next firmware images
//	POST /onvif/account?cam=cam1&user=service&fixed=true    make an account built in: DeleteUsers refuses it
//	POST /onvif/account?cam=cam1&user=service&locked=true   … and SetUser too (false clears either)
//	GET  /onvif/state                                       every device's state (as in -onvif-state)
func (s *onvifSet) control() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /onvif/state", func(w http.ResponseWriter, _ *http.Request) {
		all := map[string]onvifState{}
		for _, d := range s.devices {
			d.mu.Lock()
			all[d.name] = d.snapshotLocked()
			d.mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		b, err := jsonMarshal(all)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("POST /onvif/{action}", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		d := s.byName[q.Get("cam")]
		if d == nil {
			http.Error(w, fmt.Sprintf("unknown camera %q", q.Get("cam")), http.StatusNotFound)
			return
		}
		var err error
		if r.PathValue("action") == "account" {
			if err = d.controlAccount(q.Get("user"), q.Get("fixed"), q.Get("locked")); err == nil {
				s.saveState()
			}
		} else {
			err = d.control(r.PathValue("action"), q.Get("kind"), q.Get("value"))
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"ok":true}`)
	})
	return mux
}

// listen binds every device's HTTP (and HTTPS) listener. A port of 0 lets
// the kernel choose per device; a fixed port P gives device i port P+i-1.
func (s *onvifSet) listen(httpAddr, httpsAddr string) ([]net.Listener, []net.Listener, error) {
	var plain, secure []net.Listener
	closeAll := func() {
		for _, l := range append(plain, secure...) {
			l.Close()
		}
	}
	bind := func(addr string, i int) (net.Listener, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("ONVIF address %q: %w", addr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p+i > 65535 {
			return nil, fmt.Errorf("ONVIF address %q: bad port", addr)
		}
		if p != 0 {
			p += i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return nil, fmt.Errorf("listen ONVIF: %w", err)
		}
		return ln, nil
	}
	for i, d := range s.devices {
		ln, err := bind(httpAddr, i)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		plain = append(plain, ln)
		d.httpAddr = ln.Addr().String()
		if httpsAddr != "" {
			ln, err := bind(httpsAddr, i)
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			secure = append(secure, tls.NewListener(ln, d.tlsConfig()))
			d.httpsAddr = ln.Addr().String()
		}
	}
	return plain, secure, nil
}

// serve runs the HTTP servers on the listeners until ctx ends.
func (s *onvifSet) serve(ctx context.Context, plain, secure []net.Listener) error {
	errc := make(chan error, len(plain)+len(secure))
	var servers []*http.Server
	for i, d := range s.devices {
		for _, ln := range [][]net.Listener{plain, secure} {
			if i >= len(ln) {
				continue
			}
			hs := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
				ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
			servers = append(servers, hs)
			go func(l net.Listener) {
				if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
					errc <- fmt.Errorf("ONVIF server %s: %w", d.name, err)
					return
				}
				errc <- nil
			}(ln[i])
		}
	}
	s.saveState()
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	for _, d := range s.devices {
		d.mu.Lock()
		for id, sub := range d.subs {
			sub.close()
			delete(d.subs, id)
		}
		d.mu.Unlock()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
	}
	return first
}

func (s *onvifSet) addrs() []onvifAddrs {
	out := make([]onvifAddrs, 0, len(s.devices))
	for _, d := range s.devices {
		d.mu.Lock()
		out = append(out, onvifAddrs{Camera: d.name, UUID: d.uuid, HTTP: d.httpAddr, HTTPS: d.httpsAddr})
		d.mu.Unlock()
	}
	return out
}

// startONVIF binds the ONVIF listeners and WS-Discovery and starts serving
// them in g; the bound addresses go into addrs.
func (s *Sim) startONVIF(ctx context.Context, g *errgroup.Group, addrs *Addrs) error {
	o := s.onvif
	o.rtspAddr = func() string { return addrs.RTSP }
	o.rtspsAddr = func() string { return addrs.RTSPS }
	plain, secure, err := o.listen(s.cfg.ONVIFAddr, s.cfg.ONVIFSAddr)
	if err != nil {
		return err
	}
	if s.cfg.DiscoveryIface != "" {
		_, conn, err := listenDiscovery(s.cfg.DiscoveryIface)
		if err != nil {
			for _, l := range append(plain, secure...) {
				l.Close()
			}
			return err
		}
		g.Go(func() error { return o.serveDiscovery(ctx, conn) })
	}
	addrs.ONVIF = o.addrs()
	g.Go(func() error { return o.serve(ctx, plain, secure) })
	return nil
}
