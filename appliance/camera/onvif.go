package camera

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/use-go/onvif/device"
	"github.com/use-go/onvif/media"
	"github.com/use-go/onvif/xsd/onvif"
)

// The ONVIF operations the appliance uses. Requests are use-go/onvif's types
// (or small local ones where that library's types are wrong or missing);
// responses are decoded by decodeSOAP into local structs, never through a
// path that reads an unbounded body.

// deviceInfo is GetDeviceInformation's answer.
type deviceInfo struct {
	Manufacturer string `xml:"GetDeviceInformationResponse>Manufacturer"`
	Model        string `xml:"GetDeviceInformationResponse>Model"`
	Firmware     string `xml:"GetDeviceInformationResponse>FirmwareVersion"`
	Serial       string `xml:"GetDeviceInformationResponse>SerialNumber"`
	HardwareID   string `xml:"GetDeviceInformationResponse>HardwareId"`
}

func getDeviceInfo(ctx context.Context, e *endpoint, cred credentials) (deviceInfo, error) {
	var out deviceInfo
	if err := e.call(ctx, "", cred, device.GetDeviceInformation{}, &out); err != nil {
		return out, fmt.Errorf("GetDeviceInformation: %w", err)
	}
	out.Manufacturer, out.Model = clip(out.Manufacturer, 64), clip(out.Model, 64)
	out.Firmware, out.Serial, out.HardwareID = clip(out.Firmware, 64), clip(out.Serial, 64), clip(out.HardwareID, 64)
	if strings.TrimSpace(out.Serial) == "" {
		return out, fmt.Errorf("GetDeviceInformation: %w: no serial number", ErrMalformed)
	}
	return out, nil
}

// capabilities is what GetCapabilities tells the appliance.
type capabilities struct {
	MediaXAddr  string `xml:"GetCapabilitiesResponse>Capabilities>Media>XAddr"`
	EventsXAddr string `xml:"GetCapabilitiesResponse>Capabilities>Events>XAddr"`
	PullPoint   bool   `xml:"GetCapabilitiesResponse>Capabilities>Events>WSPullPointSupport"`
	TLS12       bool   `xml:"GetCapabilitiesResponse>Capabilities>Device>Security>TLS1.2"`
	Dot1X       bool   `xml:"GetCapabilitiesResponse>Capabilities>Device>Security>Extension>Extension>Dot1X"`
	Firmware    bool   `xml:"GetCapabilitiesResponse>Capabilities>Device>System>FirmwareUpgrade"`
}

func getCapabilities(ctx context.Context, e *endpoint, cred credentials) (capabilities, error) {
	var out capabilities
	if err := e.call(ctx, "", cred, device.GetCapabilities{Category: "All"}, &out); err != nil {
		return out, fmt.Errorf("GetCapabilities: %w", err)
	}
	return out, nil
}

func getMAC(ctx context.Context, e *endpoint, cred credentials) (string, error) {
	var out struct {
		HW []string `xml:"GetNetworkInterfacesResponse>NetworkInterfaces>Info>HwAddress"`
	}
	if err := e.call(ctx, "", cred, device.GetNetworkInterfaces{}, &out); err != nil {
		return "", fmt.Errorf("GetNetworkInterfaces: %w", err)
	}
	for _, hw := range out.HW {
		if mac, err := net.ParseMAC(strings.TrimSpace(hw)); err == nil {
			return mac.String(), nil
		}
	}
	return "", fmt.Errorf("GetNetworkInterfaces: %w: no MAC address", ErrMalformed)
}

func getStreamURI(ctx context.Context, e *endpoint, cred credentials, mediaAddr string) (string, error) {
	var prof struct {
		Profiles []struct {
			Token string `xml:"token,attr"`
		} `xml:"GetProfilesResponse>Profiles"`
	}
	if err := e.call(ctx, mediaAddr, cred, media.GetProfiles{}, &prof); err != nil {
		return "", fmt.Errorf("GetProfiles: %w", err)
	}
	if len(prof.Profiles) == 0 || prof.Profiles[0].Token == "" {
		return "", fmt.Errorf("GetProfiles: %w: no profile", ErrMalformed)
	}
	var out struct {
		URI string `xml:"GetStreamUriResponse>MediaUri>Uri"`
	}
	req := media.GetStreamUri{
		StreamSetup:  onvif.StreamSetup{Stream: "RTP-Unicast", Transport: onvif.Transport{Protocol: "RTSP"}},
		ProfileToken: onvif.ReferenceToken(prof.Profiles[0].Token),
	}
	if err := e.call(ctx, mediaAddr, cred, req, &out); err != nil {
		return "", fmt.Errorf("GetStreamUri: %w", err)
	}
	uri := strings.TrimSpace(out.URI)
	if !strings.HasPrefix(uri, "rtsp://") && !strings.HasPrefix(uri, "rtsps://") || len(uri) > 512 {
		return "", fmt.Errorf("GetStreamUri: %w: not an RTSP URI", ErrMalformed)
	}
	return uri, nil
}

// setUser is tds:SetUser with the schema's element names (use-go/onvif's
// onvif.User has the right shape).
func setPassword(ctx context.Context, e *endpoint, cred credentials, username, password string) error {
	users, err := getUsers(ctx, e, cred)
	if err != nil {
		return err
	}
	level := ""
	for _, u := range users {
		if u.Username == username {
			level = u.Level
		}
	}
	if level == "" || level == LevelUnknown {
		return fmt.Errorf("GetUsers: %w: user %q not on the camera with a known level", ErrMalformed, clip(username, 64))
	}
	return setUser(ctx, e, cred, username, password, level)
}

// uploadFirmware runs StartFirmwareUpgrade and posts the image to the
// returned upload URI (on the same pinned endpoint).
func uploadFirmware(ctx context.Context, e *endpoint, cred credentials, img []byte) error {
	var out struct {
		URI string `xml:"StartFirmwareUpgradeResponse>UploadUri"`
	}
	if err := e.call(ctx, "", cred, device.StartFirmwareUpgrade{}, &out); err != nil {
		return fmt.Errorf("StartFirmwareUpgrade: %w", err)
	}
	if strings.TrimSpace(out.URI) == "" {
		return fmt.Errorf("StartFirmwareUpgrade: %w: no upload URI", ErrMalformed)
	}
	status, body, err := e.post(ctx, strings.TrimSpace(out.URI), "application/octet-stream", bytes.NewReader(img), 4096)
	if err != nil {
		return fmt.Errorf("firmware upload: %w", err)
	}
	if status != http.StatusOK && status != http.StatusNoContent {
		return fmt.Errorf("%w: upload answered HTTP %d: %s", ErrFirmwareRefused, status, clip(strings.TrimSpace(string(body)), 120))
	}
	return nil
}

// createPullPoint is tev:CreatePullPointSubscription without a filter.
type createPullPoint struct {
	XMLName                string `xml:"tev:CreatePullPointSubscription"`
	InitialTerminationTime string `xml:"tev:InitialTerminationTime"`
}

type pullMessages struct {
	XMLName      string `xml:"tev:PullMessages"`
	Timeout      string `xml:"tev:Timeout"`
	MessageLimit int    `xml:"tev:MessageLimit"`
}

type unsubscribe struct {
	XMLName string `xml:"wsnt:Unsubscribe"`
}

func subscribe(ctx context.Context, e *endpoint, cred credentials, eventsAddr string) (string, error) {
	var out struct {
		Address string `xml:"CreatePullPointSubscriptionResponse>SubscriptionReference>Address"`
	}
	if err := e.call(ctx, eventsAddr, cred, createPullPoint{InitialTerminationTime: "PT60S"}, &out); err != nil {
		return "", fmt.Errorf("CreatePullPointSubscription: %w", err)
	}
	if strings.TrimSpace(out.Address) == "" {
		return "", fmt.Errorf("CreatePullPointSubscription: %w: no subscription address", ErrMalformed)
	}
	return strings.TrimSpace(out.Address), nil
}

// maxEventsPerPull bounds the notifications taken from one response.
const maxEventsPerPull = 64

// notification is one ONVIF event message, reduced to what alarms need.
type notification struct {
	Topic string
	State *bool // the Data item named State (or IsTampered, etc.), when boolean
	Time  time.Time
}

type pullResponse struct {
	Messages []struct {
		Topic   string `xml:"Topic"`
		Message struct {
			Inner struct {
				UtcTime string `xml:"UtcTime,attr"`
				Data    []struct {
					Name  string `xml:"Name,attr"`
					Value string `xml:"Value,attr"`
				} `xml:"Data>SimpleItem"`
			} `xml:"Message"`
		} `xml:"Message"`
	} `xml:"PullMessagesResponse>NotificationMessage"`
}

// parseNotifications decodes a PullMessages response (status and body as
// received) into at most maxEventsPerPull notifications.
func parseNotifications(status int, b []byte) ([]notification, error) {
	var out pullResponse
	if err := decodeSOAP(status, b, &out); err != nil {
		return nil, err
	}
	if len(out.Messages) > maxEventsPerPull {
		return nil, fmt.Errorf("%w: %d notifications in one response", ErrTooLarge, len(out.Messages))
	}
	ns := make([]notification, 0, len(out.Messages))
	for _, m := range out.Messages {
		n := notification{Topic: clip(strings.TrimSpace(m.Topic), 200)}
		if t, err := time.Parse(time.RFC3339Nano, m.Message.Inner.UtcTime); err == nil {
			n.Time = t
		}
		for _, d := range m.Message.Inner.Data {
			switch strings.ToLower(d.Value) {
			case "true", "1":
				v := true
				n.State = &v
			case "false", "0":
				v := false
				n.State = &v
			}
		}
		ns = append(ns, n)
	}
	return ns, nil
}

func pull(ctx context.Context, e *endpoint, cred credentials, subAddr string, wait time.Duration) ([]notification, error) {
	req := pullMessages{Timeout: fmt.Sprintf("PT%dS", max(1, int(wait/time.Second))), MessageLimit: maxEventsPerPull}
	status, body, err := e.exchange(ctx, subAddr, cred, req)
	if err != nil {
		return nil, fmt.Errorf("PullMessages: %w", err)
	}
	ns, err := parseNotifications(status, body)
	if err != nil {
		return nil, fmt.Errorf("PullMessages: %w", authErr(err))
	}
	return ns, nil
}
