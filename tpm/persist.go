package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Persistent handles of the appliance's keys (TCG owner range). A TPM holds only a few transient objects
// at once (three in the reference implementation and swtpm), so every long-lived key is made persistent at
// first use: it occupies no transient slot between uses, and sealing or creating objects always finds room.
const (
	VaultKeyHandle = 0x81010001
	LogKeyHandle   = 0x81010003
	TLSKeyHandle   = 0x81010004
)

// persistentLocked returns the public area of the key at persistent handle h, creating it from tmpl (a
// deterministic primary under the owner hierarchy) and persisting it on first use. An object at h that is
// not of tmpl's type and attributes is an error, never overwritten. t.mu must be held.
func (t *TPM) persistentLocked(h uint32, tmpl tpm2.TPMTPublic, what string) (*tpm2.ReadPublicResponse, error) {
	handle := tpm2.TPMHandle(h)
	rp, err := tpm2.ReadPublic{ObjectHandle: handle}.Execute(t.tr)
	if err == nil {
		if err := sameShape(rp.OutPublic, tmpl); err != nil {
			return nil, fmt.Errorf("tpm: persistent object 0x%08x is not the %s: %w", h, what, err)
		}
		return rp, nil
	}
	if !isHandleError(err) {
		return nil, fmt.Errorf("tpm: read %s at 0x%08x: %w", what, h, err)
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: create %s: %w", what, err)
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: handle,
	}.Execute(t.tr)
	flushErr := t.flushLocked(rsp.ObjectHandle)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tpm: persist %s at 0x%08x: %w", what, h, err), flushErr)
	}
	if flushErr != nil {
		return nil, flushErr
	}
	t.log.Info("tpm: key made persistent", "key", what, "handle", fmt.Sprintf("0x%08x", h))
	rp, err = tpm2.ReadPublic{ObjectHandle: handle}.Execute(t.tr)
	if err != nil {
		return nil, fmt.Errorf("tpm: read back %s: %w", what, err)
	}
	return rp, nil
}

// sameShape checks that a public area has the template's type, name algorithm and attributes. The key's
// own parser (curve, scheme, size) checks the rest.
func sameShape(got tpm2.TPM2BPublic, want tpm2.TPMTPublic) error {
	p, err := got.Contents()
	if err != nil {
		return err
	}
	if p.Type != want.Type || p.NameAlg != want.NameAlg || p.ObjectAttributes != want.ObjectAttributes {
		return errors.New("type, name algorithm or attributes differ")
	}
	return nil
}
