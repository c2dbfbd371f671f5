package camera

import (
	"errors"
	"fmt"
)

// Errors callers branch on.
var (
	// ErrMalformed: a camera sent XML that is not well formed, holds a DTD
	// (entity expansion, external entities), nests too deep, or does not
	// have the expected shape.
	ErrMalformed = errors.New("camera: malformed response")
	// ErrTooLarge: a camera's response exceeded its size limit.
	ErrTooLarge = errors.New("camera: response too large")
	// ErrUnreachable: the camera did not answer (network, timeout, reboot).
	ErrUnreachable = errors.New("camera: unreachable")
	// ErrUnauthorized: the camera refused the credentials.
	ErrUnauthorized = errors.New("camera: not authorized")
	// ErrCertChanged: the camera's HTTPS certificate is not the one pinned
	// at adoption: a swapped (or impersonated) camera.
	ErrCertChanged = errors.New("camera: certificate does not match the pin")
	// ErrIdentityChanged: the camera's serial number or MAC address is not
	// the one recorded at adoption: a swapped camera.
	ErrIdentityChanged = errors.New("camera: identity changed")
	// ErrQuarantined: the camera is held after a suspected swap until an
	// administrator accepts it; nothing is recorded from it meanwhile.
	ErrQuarantined = errors.New("camera: quarantined until an administrator accepts it")
	// ErrNotFound: no adopted camera has that id.
	ErrNotFound = errors.New("camera: not found")
	// ErrAlreadyAdopted: the camera (by serial) is adopted already.
	ErrAlreadyAdopted = errors.New("camera: already adopted")
	// ErrChecksum: a firmware image does not match its vendor checksum.
	ErrChecksum = errors.New("camera: firmware checksum mismatch")
	// ErrFirmwareRefused: the camera refused a firmware image or did not
	// come back with the new version.
	ErrFirmwareRefused = errors.New("camera: firmware update failed")
	// ErrNoHTTPS: the camera offers no HTTPS and plain HTTP adoption is
	// not allowed (Config.AllowPlainHTTP).
	ErrNoHTTPS = errors.New("camera: no HTTPS; plain HTTP adoption is disabled")
	// ErrBusy: another operation on the same camera is running.
	ErrBusy = errors.New("camera: busy with another operation")
)

// FaultError is a SOAP fault returned by a camera. Its text comes from the
// camera: it is clipped and stripped of control characters.
type FaultError struct {
	Status  int    // HTTP status
	Code    string // e.g. Sender
	Subcode string // e.g. NotAuthorized
	// Detail is the second-level subcode ONVIF gives many faults (e.g.
	// FixedUser under InvalidArgVal); may be empty.
	Detail string
	Reason string
}

func (f *FaultError) Error() string {
	code := f.Code + "/" + f.Subcode
	if f.Detail != "" {
		code += "/" + f.Detail
	}
	return fmt.Sprintf("camera: SOAP fault (HTTP %d) %s: %s", f.Status, code, f.Reason)
}

func (f *FaultError) unauthorized() bool {
	return f.Status == 401 || f.Subcode == "NotAuthorized" || f.Subcode == "FailedAuthentication"
}
