package web

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/edgenvr/nvr/appliance/camera"
)

// errBadUpload is returned for a firmware upload that is not a well-formed, bounded multipart form.
var errBadUpload = errors.New("malformed firmware upload")

// Limits of a firmware upload form (besides the image itself).
const (
	maxUploadParts      = 1100     // the fields, one checkbox per camera, and the image
	maxUploadFieldBytes = 8 << 10  // one field's value
	maxUploadFieldsSum  = 64 << 10 // all fields together
	maxRolloutCameras   = 1024
)

// firmwareUpload is a parsed firmware upload form.
type firmwareUpload struct {
	Fields   url.Values
	Image    []byte
	FileName string
	// Sum is the SHA-256 of Image, computed while it was read.
	Sum [sha256.Size]byte
}

// readFirmwareUpload reads a multipart/form-data body: small text fields and at most one file part
// named "image" of at most maxImage bytes. Everything is bounded: parts, field sizes, their sum.
func readFirmwareUpload(contentType string, body io.Reader, maxImage int64) (*firmwareUpload, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, fmt.Errorf("%w: want multipart/form-data", errBadUpload)
	}
	mr := multipart.NewReader(body, params["boundary"])
	up := &firmwareUpload{Fields: url.Values{}}
	sum := 0
	seenImage := false
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errBadUpload, err)
		}
		if n >= maxUploadParts {
			part.Close()
			return nil, fmt.Errorf("%w: too many parts", errBadUpload)
		}
		name := part.FormName()
		if name == "" || len(name) > 64 {
			part.Close()
			return nil, fmt.Errorf("%w: unnamed or long part", errBadUpload)
		}
		if name == "image" {
			if seenImage {
				part.Close()
				return nil, fmt.Errorf("%w: more than one image", errBadUpload)
			}
			seenImage = true
			up.FileName = cleanText(part.FileName(), 128)
			b, err := io.ReadAll(io.LimitReader(part, maxImage+1))
			part.Close()
			if err != nil {
				return nil, fmt.Errorf("%w: image: %v", errBadUpload, err)
			}
			if int64(len(b)) > maxImage {
				return nil, fmt.Errorf("%w: the image is larger than %d MiB", errBadUpload, maxImage>>20)
			}
			up.Image, up.Sum = b, sha256.Sum256(b)
			continue
		}
		b, err := io.ReadAll(io.LimitReader(part, maxUploadFieldBytes+1))
		part.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: field %s: %v", errBadUpload, name, err)
		}
		if len(b) > maxUploadFieldBytes {
			return nil, fmt.Errorf("%w: field %s too large", errBadUpload, name)
		}
		if sum += len(b) + len(name); sum > maxUploadFieldsSum {
			return nil, fmt.Errorf("%w: fields too large", errBadUpload)
		}
		up.Fields.Add(name, string(b))
	}
	return up, nil
}

// rolloutForm is the checked content of the rollout form.
type rolloutForm struct {
	Model, Version, SHA256 string
	Cameras                []string
	Canary                 int
}

// parseRolloutForm checks the rollout form's fields: the model and version the image is for, the
// vendor's SHA-256 (hex, colons and spaces allowed), the cameras (the first listed in "first" goes
// first, as the canary) and how many canaries.
func parseRolloutForm(f url.Values) (rolloutForm, error) {
	var r rolloutForm
	r.Model = strings.TrimSpace(f.Get("model"))
	r.Version = strings.TrimSpace(f.Get("version"))
	if r.Model == "" || len(r.Model) > 128 || cleanText(r.Model, 128) != r.Model {
		return r, errors.New("name the camera model the image is for, as the inventory shows it")
	}
	if r.Version == "" || len(r.Version) > 64 || cleanText(r.Version, 64) != r.Version {
		return r, errors.New("give the firmware version the image installs, as the camera will report it")
	}
	sum, err := normalizeHex(f.Get("sha256"))
	if err != nil {
		return r, fmt.Errorf("vendor checksum: %w", err)
	}
	r.SHA256 = sum
	r.Canary = 1
	if v := strings.TrimSpace(f.Get("canary")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxRolloutCameras {
			return r, errors.New("canary cameras: a number from 1")
		}
		r.Canary = n
	}
	first := f.Get("first")
	if first != "" && !validCameraID(first) {
		return r, errors.New("malformed canary camera")
	}
	if first != "" {
		r.Cameras = append(r.Cameras, first)
	}
	for _, id := range f["camera"] {
		if !validCameraID(id) {
			return r, errors.New("malformed camera id")
		}
		if id != first {
			r.Cameras = append(r.Cameras, id)
		}
	}
	if len(f["camera"]) == 0 {
		return r, errors.New("choose the cameras to update")
	}
	if len(r.Cameras) > maxRolloutCameras {
		return r, errors.New("too many cameras")
	}
	if first != "" && !slices.Contains(f["camera"], first) {
		return r, errors.New("the canary camera is not among the chosen cameras")
	}
	return r, nil
}

// parseAdoptForm checks the adoption form. The password is the installer's, typed once: it goes to the
// manager and nowhere else.
func parseAdoptForm(f url.Values) (camera.AdoptRequest, error) {
	req := camera.AdoptRequest{
		HTTP:     strings.TrimSpace(f.Get("http")),
		HTTPS:    strings.TrimSpace(f.Get("https")),
		Username: f.Get("username"),
		Password: f.Get("password"),
		Name:     strings.TrimSpace(f.Get("name")),
	}
	if req.HTTP == "" && req.HTTPS == "" {
		return req, errors.New("give the camera's address (host:port of its ONVIF service)")
	}
	for _, a := range []string{req.HTTP, req.HTTPS} {
		if a == "" {
			continue
		}
		if len(a) > 260 {
			return req, errors.New("the camera address is too long")
		}
		if h, p, err := net.SplitHostPort(a); err != nil || h == "" || p == "" || cleanText(a, 260) != a {
			return req, errors.New("the camera address must be host:port")
		}
	}
	if req.Username == "" || len(req.Username) > 64 || cleanText(req.Username, 64) != req.Username {
		return req, errors.New("give the camera account's user name (up to 64 characters)")
	}
	if req.Password == "" || len(req.Password) > 256 {
		return req, errors.New("give the camera account's current password (up to 256 characters)")
	}
	if len(req.Name) > 64 || cleanText(req.Name, 64) != req.Name {
		return req, errors.New("the camera name is too long or has control characters")
	}
	if v := strings.TrimSpace(f.Get("cert_sha256")); v != "" {
		sum, err := normalizeHex(v)
		if err != nil {
			return req, fmt.Errorf("certificate fingerprint: %w", err)
		}
		req.CertSHA256 = sum
	}
	return req, nil
}

// normalizeHex accepts a SHA-256 as 64 hex digits, with colons or spaces between them, in any case.
func normalizeHex(v string) (string, error) {
	if len(v) > 200 {
		return "", errors.New("too long")
	}
	v = strings.Map(func(r rune) rune {
		if r == ':' || unicode.IsSpace(r) {
			return -1
		}
		return unicode.ToLower(r)
	}, v)
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != sha256.Size {
		return "", errors.New("want a SHA-256: 64 hexadecimal digits")
	}
	return v, nil
}

// validCameraID accepts the manager's ids: letters, digits, '-', '_' and '.', up to 64.
func validCameraID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// cleanText drops control characters and clips s to max bytes (on a rune boundary).
func cleanText(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return -1
		}
		return r
	}, s)
	for len(s) > max {
		_, i := lastRune(s)
		s = s[:i]
	}
	return s
}

func lastRune(s string) (rune, int) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i]&0xc0 != 0x80 {
			return rune(s[i]), i
		}
	}
	return 0, 0
}
