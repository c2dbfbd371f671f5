// Package camera manages the appliance's cameras over ONVIF: WS-Discovery on
// the camera network, adoption (HTTPS certificate pinned, inventory read,
// the installer's password replaced by a generated one), the camera's other
// accounts (deleted, or given a password nobody knows, at adoption, every
// rotation and a periodic audit; see accounts.go), inventory and the
// stale-firmware report, firmware rollouts (vendor checksum, canary, then
// bulk, stopping at the first failure), password rotation (single, bulk, on
// a schedule), ONVIF events (tamper, signal loss) and the ingest's video-loss
// detection as alarms, and swapped-camera detection (a changed certificate,
// serial number or MAC address quarantines the camera until an
// administrator accepts it).
//
// It owns the camera registry (DIR/cameras.json): inventory in clear, the
// credentials encrypted under a data key that the TPM seals ([Sealer]) and
// that is unsealed once, in [New].
//
// It speaks ONVIF through use-go/onvif's request types and WS-Security
// (gosoap) but reads every answer itself: bounded in size and time, DTDs
// refused, nesting bounded, and a camera's addresses never followed beyond
// the host that was adopted. Cameras are hostile input.
//
// It must never log, return in an error, or put in a URL a camera password;
// never record from a quarantined camera ([Manager.Source] refuses); never
// drop a password before its replacement has logged in; never store or
// show the passwords it gives other accounts; never take
// authorization decisions (its HTTP API trusts the caller's authorizer).
package camera

import (
	"encoding/xml"
	"fmt"
)

// decodeEnvelope unmarshals a checked document into out.
func decodeEnvelope(b []byte, out any) error {
	if err := xml.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}
