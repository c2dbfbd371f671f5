package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Firmware images for camsim are a small text header and a payload:
//
//	CAMSIM-FIRMWARE 1
//	model: CamSim-1080
//	version: 2.1.0
//	sha256: <hex SHA-256 of the payload>
//	<empty line>
//	<payload bytes>
//
// The camera refuses an image whose payload does not match its checksum or
// whose model is not its own; the firmware version then stays as it was.
const (
	firmwareMagic   = "CAMSIM-FIRMWARE 1"
	uploadTTL       = 5 * time.Minute
	firmwareModel   = "CamSim-1080"
	maxFirmwareHead = 4096
)

var errBadImage = errors.New("bad firmware image")

// parseFirmware checks an image and returns its version.
func parseFirmware(img []byte) (string, error) {
	head, payload, ok := bytes.Cut(img, []byte("\n\n"))
	if !ok || len(head) > maxFirmwareHead {
		return "", fmt.Errorf("%w: no header", errBadImage)
	}
	sc := bufio.NewScanner(bytes.NewReader(head))
	if !sc.Scan() || sc.Text() != firmwareMagic {
		return "", fmt.Errorf("%w: not a camsim image", errBadImage)
	}
	fields := map[string]string{}
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			return "", fmt.Errorf("%w: malformed header line", errBadImage)
		}
		fields[k] = v
	}
	if fields["model"] != firmwareModel {
		return "", fmt.Errorf("%w: image is for model %q", errBadImage, fields["model"])
	}
	v := fields["version"]
	if v == "" || len(v) > 32 {
		return "", fmt.Errorf("%w: bad version", errBadImage)
	}
	sum := sha256.Sum256(payload)
	if !strings.EqualFold(fields["sha256"], hex.EncodeToString(sum[:])) {
		return "", fmt.Errorf("%w: checksum mismatch", errBadImage)
	}
	return v, nil
}

// install applies a firmware image: checks it, sets the version and reboots.
func (d *onvifDevice) install(img []byte) error {
	d.mu.Lock()
	refuse := d.faults[onvifFaultRejectFirmware]
	d.mu.Unlock()
	if refuse {
		return fmt.Errorf("%w: flash write failed", errBadImage)
	}
	v, err := parseFirmware(img)
	if err != nil {
		d.log.Warn("firmware refused", "err", err)
		return err
	}
	d.mu.Lock()
	d.firmware = v
	d.firmwareUpdated = d.sim.now().UTC()
	d.mu.Unlock()
	d.log.Info("firmware installed", "version", v)
	d.startReboot()
	return nil
}

func (d *onvifDevice) opStartFirmwareUpgrade(base string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("upload token: %w", err)
	}
	tok := hex.EncodeToString(b[:])
	d.mu.Lock()
	now := d.sim.now()
	for k, exp := range d.uploads {
		if now.After(exp) {
			delete(d.uploads, k)
		}
	}
	d.uploads[tok] = now.Add(uploadTTL)
	d.mu.Unlock()
	return fmt.Sprintf(`<tds:StartFirmwareUpgradeResponse><tds:UploadUri>%s/onvif/firmware/%s</tds:UploadUri><tds:UploadDelay>PT0S</tds:UploadDelay><tds:ExpectedDownTime>PT%dS</tds:ExpectedDownTime></tds:StartFirmwareUpgradeResponse>`,
		esc(base), tok, max(1, int(d.sim.reboot/time.Second))), nil
}

// serveUpload takes a firmware image POSTed to an UploadUri. The URI's
// one-time token is the credential, as in the ONVIF HTTP upload scheme.
func (d *onvifDevice) serveUpload(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	d.mu.Lock()
	exp, ok := d.uploads[tok]
	delete(d.uploads, tok)
	d.mu.Unlock()
	if !ok || d.sim.now().After(exp) {
		http.Error(w, "unknown or expired upload token", http.StatusNotFound)
		return
	}
	img, err := io.ReadAll(io.LimitReader(r.Body, maxFirmwareImage+1))
	if err != nil {
		http.Error(w, "read image", http.StatusBadRequest)
		return
	}
	if len(img) > maxFirmwareImage {
		http.Error(w, "image too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err := d.install(img); err != nil {
		http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// opUpgradeSystemFirmware takes the image inline (base64 in tt:Data); MTOM
// attachments are not supported.
func (d *onvifDevice) opUpgradeSystemFirmware(req *request) (string, error) {
	var in struct {
		Data string `xml:"UpgradeSystemFirmware>Firmware>Data"`
	}
	if err := xml.Unmarshal(wrap(req.body), &in); err != nil || in.Data == "" {
		return "", faultSender("ter:InvalidArgVal", "UpgradeSystemFirmware needs base64 image data")
	}
	img, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(in.Data), ""))
	if err != nil {
		return "", faultSender("ter:InvalidArgVal", "image data is not base64")
	}
	if err := d.install(img); err != nil {
		return "", &soapFault{status: http.StatusBadRequest, code: "env:Receiver", subcode: "ter:InvalidFirmware", reason: err.Error()}
	}
	return `<tds:UpgradeSystemFirmwareResponse><tds:Message>Upgrade successful, rebooting</tds:Message></tds:UpgradeSystemFirmwareResponse>`, nil
}
