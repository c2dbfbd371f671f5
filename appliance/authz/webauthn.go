package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	bolt "go.etcd.io/bbolt"
)

// MaxWebAuthnBody bounds a WebAuthn response from a browser.
const MaxWebAuthnBody = 64 << 10

// ErrNoWebAuthn is returned when WebAuthn is not configured or the user has no security key.
var ErrNoWebAuthn = errors.New("security keys are not available")

// waUser adapts a User to webauthn.User.
type waUser struct{ u *User }

func (w waUser) WebAuthnID() []byte                         { return w.u.WebAuthnID }
func (w waUser) WebAuthnName() string                       { return w.u.Name }
func (w waUser) WebAuthnDisplayName() string                { return w.u.Name }
func (w waUser) WebAuthnCredentials() []webauthn.Credential { return w.u.Credentials }

// ParseWebAuthnCreation decodes a browser's registration response (bounded); exported for fuzzing.
func ParseWebAuthnCreation(body []byte) (*protocol.ParsedCredentialCreationData, error) {
	if len(body) > MaxWebAuthnBody {
		return nil, errors.New("webauthn response too large")
	}
	return protocol.ParseCredentialCreationResponseBody(bytes.NewReader(body))
}

// ParseWebAuthnAssertion decodes a browser's login response (bounded); exported for fuzzing.
func ParseWebAuthnAssertion(body []byte) (*protocol.ParsedCredentialAssertionData, error) {
	if len(body) > MaxWebAuthnBody {
		return nil, errors.New("webauthn response too large")
	}
	return protocol.ParseCredentialRequestResponseBody(bytes.NewReader(body))
}

// WebAuthnRegisterBegin starts enrolling a security key for the session's user and returns the options
// for navigator.credentials.create (JSON).
func (s *Service) WebAuthnRegisterBegin(sess Session) ([]byte, error) {
	if s.wa == nil {
		return nil, ErrNoWebAuthn
	}
	var opts []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, sess.User)
		if err != nil {
			return err
		}
		if len(u.WebAuthnID) == 0 {
			u.WebAuthnID = make([]byte, 32)
			if _, err := s.readRand(u.WebAuthnID); err != nil {
				return err
			}
			if err := putJSON(tx, bucketUsers, u.Name, u); err != nil {
				return err
			}
		}
		creation, data, err := s.wa.BeginRegistration(waUser{u},
			webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{UserVerification: protocol.VerificationDiscouraged}),
			webauthn.WithExclusions(webauthn.Credentials(u.Credentials).CredentialDescriptors()))
		if err != nil {
			return fmt.Errorf("webauthn begin registration: %w", err)
		}
		s.mu.Lock()
		s.waReg[sess.ID] = data
		s.mu.Unlock()
		opts, err = json.Marshal(creation)
		return err
	})
	return opts, err
}

// WebAuthnRegisterFinish verifies the browser's registration response and stores the credential.
func (s *Service) WebAuthnRegisterFinish(sess Session, body []byte, source string) error {
	if s.wa == nil {
		return ErrNoWebAuthn
	}
	s.mu.Lock()
	data := s.waReg[sess.ID]
	delete(s.waReg, sess.ID)
	s.mu.Unlock()
	if data == nil {
		return ErrExpired
	}
	parsed, err := ParseWebAuthnCreation(body)
	if err != nil {
		return fmt.Errorf("webauthn registration response: %w", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, sess.User)
		if err != nil {
			return err
		}
		cred, err := s.wa.CreateCredential(waUser{u}, *data, parsed)
		if err != nil {
			return fmt.Errorf("webauthn registration: %w", err)
		}
		u.Credentials = append(u.Credentials, *cred)
		return putJSON(tx, bucketUsers, u.Name, u)
	})
	if err != nil {
		s.Event(Subject{User: sess.User, Via: "session", Ref: sess.ID}, "webauthn.register", "account/"+sess.User, "fail", "registration rejected", source)
		return err
	}
	s.Event(Subject{User: sess.User, Via: "session", Ref: sess.ID}, "webauthn.register", "account/"+sess.User, "ok", "security key enrolled", source)
	return nil
}

// LoginWebAuthnBegin returns the options for navigator.credentials.get at the second-factor step.
func (s *Service) LoginWebAuthnBegin(pending string) ([]byte, error) {
	if s.wa == nil {
		return nil, ErrNoWebAuthn
	}
	p, err := s.takePending(pending, StepSecondFactor)
	if err != nil {
		return nil, err
	}
	var u *User
	if err := s.db.View(func(tx *bolt.Tx) error { u, err = s.getUser(tx, p.user); return err }); err != nil {
		return nil, err
	}
	if !u.HasWebAuthn() {
		return nil, ErrNoWebAuthn
	}
	assertion, data, err := s.wa.BeginLogin(waUser{u}, webauthn.WithUserVerification(protocol.VerificationDiscouraged))
	if err != nil {
		return nil, fmt.Errorf("webauthn begin login: %w", err)
	}
	s.mu.Lock()
	p.wa = data
	s.mu.Unlock()
	return json.Marshal(assertion)
}

// LoginWebAuthnFinish completes the second-factor step with a security key's assertion.
func (s *Service) LoginWebAuthnFinish(ctx context.Context, pending string, body []byte, source string) (LoginState, error) {
	if s.wa == nil {
		return LoginState{}, ErrNoWebAuthn
	}
	p, err := s.takePending(pending, StepSecondFactor)
	if err != nil {
		return LoginState{}, err
	}
	s.mu.Lock()
	data := p.wa
	p.wa = nil
	s.mu.Unlock()
	if data == nil {
		return LoginState{}, ErrExpired
	}
	parsed, err := ParseWebAuthnAssertion(body)
	if err != nil {
		return LoginState{}, s.secondFactorFailed(ctx, pending, p, source)
	}
	ok := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, p.user)
		if err != nil {
			return err
		}
		cred, err := s.wa.ValidateLogin(waUser{u}, *data, parsed)
		if err != nil {
			return nil
		}
		for i := range u.Credentials {
			if bytes.Equal(u.Credentials[i].ID, cred.ID) {
				u.Credentials[i].Authenticator.SignCount = cred.Authenticator.SignCount
			}
		}
		ok = true
		return putJSON(tx, bucketUsers, u.Name, u)
	})
	if err != nil {
		return LoginState{}, err
	}
	if !ok {
		return LoginState{}, s.secondFactorFailed(ctx, pending, p, source)
	}
	return s.afterSecondFactor(pending, p, source, "security key")
}
