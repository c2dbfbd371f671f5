package authz

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

type setupState struct {
	codeHash string
	expires  time.Time
}

type setupEnrol struct {
	name    string
	hash    string
	totp    TOTPEnrolment
	expires time.Time
}

// SetupCode returns a fresh one-time setup code if the appliance has no account yet and no valid code is
// outstanding; fresh is false otherwise. The code must be shown only on the local display (the LCD, the
// console or journal under make run), never in a web page or a log line.
func (s *Service) SetupCode() (code string, expires time.Time, fresh bool, err error) {
	if !s.needsSetup() {
		return "", time.Time{}, false, nil
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.setup != nil && now.Before(s.setup.expires) {
		return "", s.setup.expires, false, nil
	}
	b := make([]byte, 12)
	if _, err := s.readRand(b); err != nil {
		return "", time.Time{}, false, fmt.Errorf("setup code: %w", err)
	}
	var sb strings.Builder
	for i, c := range b {
		if i > 0 && i%4 == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(setupAlphabet[int(c)%len(setupAlphabet)])
	}
	s.setup = &setupState{codeHash: tokenHash(normSetupCode(sb.String())), expires: now.Add(s.cfg.SetupCodeTTL)}
	return sb.String(), s.setup.expires, true, nil
}

// SetupBegin checks the setup code and the first administrator's name and password, and returns an
// enrolment id and the TOTP secret to enrol. Nothing is stored until [Service.SetupFinish].
func (s *Service) SetupBegin(ctx context.Context, code, name, password, source string) (string, TOTPEnrolment, error) {
	if !s.needsSetup() {
		return "", TOTPEnrolment{}, ErrSetupDone
	}
	delay, err := s.thr.admit(source, "(setup)")
	if err != nil {
		return "", TOTPEnrolment{}, err
	}
	if err := s.cfg.Sleep(ctx, delay); err != nil {
		return "", TOTPEnrolment{}, err
	}
	s.mu.Lock()
	st := s.setup
	s.mu.Unlock()
	if st == nil || s.cfg.Now().After(st.expires) ||
		subtle.ConstantTimeCompare([]byte(tokenHash(normSetupCode(code))), []byte(st.codeHash)) != 1 {
		return "", TOTPEnrolment{}, s.failed(ctx, "(setup)", source, "setup", "wrong or expired setup code")
	}
	if !validName(name) {
		return "", TOTPEnrolment{}, fmt.Errorf("user name %q: use letters, digits, ., _ and - (at most 64)", name)
	}
	if err := CheckPasswordPolicy(name, password); err != nil {
		return "", TOTPEnrolment{}, err
	}
	hash, err := s.hashPassword(password, s.cfg.Argon2)
	if err != nil {
		return "", TOTPEnrolment{}, err
	}
	enr, err := s.newTOTP(name)
	if err != nil {
		return "", TOTPEnrolment{}, err
	}
	id, err := s.token(24)
	if err != nil {
		return "", TOTPEnrolment{}, err
	}
	s.mu.Lock()
	s.enrol[tokenHash(id)] = &setupEnrol{name: name, hash: hash, totp: enr, expires: s.cfg.Now().Add(enrolTTL)}
	s.mu.Unlock()
	s.Event(Subject{User: name, Via: "setup"}, "setup.code", "system", "ok", "setup code accepted, TOTP enrolment next", source)
	return id, enr, nil
}

// SetupEnrolment returns the TOTP enrolment of an unfinished setup, to show it again.
func (s *Service) SetupEnrolment(id string) (string, TOTPEnrolment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.enrol[tokenHash(id)]
	if e == nil || s.cfg.Now().After(e.expires) {
		return "", TOTPEnrolment{}, ErrExpired
	}
	return e.name, e.totp, nil
}

// SetupFinish checks a TOTP code from the enrolled app, creates the first administrator and the default
// roles, and expires the setup code. It returns the administrator's recovery codes, to show once.
func (s *Service) SetupFinish(ctx context.Context, id, code, source string) ([]string, error) {
	s.mu.Lock()
	e := s.enrol[tokenHash(id)]
	s.mu.Unlock()
	if e == nil || s.cfg.Now().After(e.expires) {
		return nil, ErrExpired
	}
	step, ok := checkTOTP(e.totp.Secret, code, s.cfg.Now(), 0)
	if !ok {
		return nil, s.failed(ctx, "(setup)", source, "setup", "wrong TOTP code at enrolment")
	}
	codes, hashes, err := s.newRecoveryCodes(10)
	if err != nil {
		return nil, err
	}
	seed, err := s.sealSeed(e.name, e.totp.Secret)
	if err != nil {
		return nil, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketUsers).Cursor().First(); k != nil {
			return ErrSetupDone
		}
		for _, r := range DefaultRoles() {
			if err := putJSON(tx, bucketRoles, r.Name, r); err != nil {
				return err
			}
		}
		return putJSON(tx, bucketUsers, e.name, &User{Name: e.name, Roles: []string{"administrator"}, Hash: e.hash,
			Created: s.cfg.Now().UTC(), TOTPSecret: seed, TOTPLast: step, Recovery: hashes})
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	s.mu.Lock()
	s.setup = nil
	s.enrol = map[string]*setupEnrol{}
	s.mu.Unlock()
	s.thr.success(source, "(setup)")
	s.Event(Subject{User: e.name, Via: "setup"}, "setup", "account/"+e.name, "ok", "first administrator created; setup code expired", source)
	return codes, nil
}

// NewUser describes an account to create.
type NewUser struct {
	Name     string
	Password string // interactive users; empty for service accounts
	Roles    []string
	DualAuth bool
	Service  bool
}

// CreateUser creates an account. The caller must have been allowed [ManageUsers]; by is recorded.
func (s *Service) CreateUser(by Subject, nu NewUser, source string) error {
	if !validName(nu.Name) {
		return fmt.Errorf("user name %q: use letters, digits, ., _ and - (at most 64)", nu.Name)
	}
	u := &User{Name: nu.Name, Roles: nu.Roles, DualAuth: nu.DualAuth, Service: nu.Service, Created: s.cfg.Now().UTC()}
	if !nu.Service {
		if err := CheckPasswordPolicy(nu.Name, nu.Password); err != nil {
			return err
		}
		h, err := s.hashPassword(nu.Password, s.cfg.Argon2)
		if err != nil {
			return err
		}
		u.Hash = h
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketUsers).Get([]byte(nu.Name)) != nil {
			return fmt.Errorf("user %s: %w", nu.Name, ErrExists)
		}
		for _, r := range nu.Roles {
			if tx.Bucket(bucketRoles).Get([]byte(r)) == nil {
				return fmt.Errorf("role %s: %w", r, ErrNotFound)
			}
		}
		return putJSON(tx, bucketUsers, u.Name, u)
	})
	if err != nil {
		return err
	}
	kind := "user"
	if nu.Service {
		kind = "service account"
	}
	s.Event(by, "user.create", "account/"+nu.Name, "ok", fmt.Sprintf("%s with roles %s, dual authorization %v", kind, strings.Join(nu.Roles, ","), nu.DualAuth), source)
	return nil
}

// UpdateUser sets an account's roles, dual-authorization flag and disabled flag. The last enabled
// administrator cannot lose the administrator role or be disabled.
func (s *Service) UpdateUser(by Subject, name string, roles []string, dual, disabled bool, source string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, name)
		if err != nil {
			return err
		}
		for _, r := range roles {
			if tx.Bucket(bucketRoles).Get([]byte(r)) == nil {
				return fmt.Errorf("role %s: %w", r, ErrNotFound)
			}
		}
		wasAdmin := slices.Contains(u.Roles, "administrator") && !u.Disabled
		u.Roles, u.DualAuth, u.Disabled = roles, dual, disabled
		if wasAdmin && (!slices.Contains(roles, "administrator") || disabled) && s.admins(tx) <= 1 {
			return ErrLastAdmin
		}
		return putJSON(tx, bucketUsers, name, u)
	})
	if err != nil {
		return err
	}
	s.Event(by, "user.update", "account/"+name, "ok", fmt.Sprintf("roles %s, dual authorization %v, disabled %v", strings.Join(roles, ","), dual, disabled), source)
	if disabled {
		s.RevokeSession(by, "", name, source)
	}
	return nil
}

func (s *Service) admins(tx *bolt.Tx) int {
	n := 0
	_ = tx.Bucket(bucketUsers).ForEach(func(_, v []byte) error {
		var u User
		if json.Unmarshal(v, &u) == nil && !u.Disabled && slices.Contains(u.Roles, "administrator") {
			n++
		}
		return nil
	})
	return n
}

// DeleteUser removes an account, its sessions and its API tokens.
func (s *Service) DeleteUser(by Subject, name, source string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, name)
		if err != nil {
			return err
		}
		if slices.Contains(u.Roles, "administrator") && !u.Disabled && s.admins(tx) <= 1 {
			return ErrLastAdmin
		}
		c := tx.Bucket(bucketTokens).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var t apiToken
			if json.Unmarshal(v, &t) == nil && t.User == name {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bucketUsers).Delete([]byte(name))
	})
	if err != nil {
		return err
	}
	s.Event(by, "user.delete", "account/"+name, "ok", "", source)
	s.RevokeSession(by, "", name, source)
	return nil
}

// SetPassword changes a user's password (the policy applies) and ends their sessions.
func (s *Service) SetPassword(by Subject, name, password, source string) error {
	if err := CheckPasswordPolicy(name, password); err != nil {
		return err
	}
	h, err := s.hashPassword(password, s.cfg.Argon2)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, name)
		if err != nil {
			return err
		}
		if u.Directory != "" {
			return fmt.Errorf("%s is a directory account: its password is changed in the directory: %w", name, ErrDenied)
		}
		u.Hash = h
		return putJSON(tx, bucketUsers, name, u)
	})
	if err != nil {
		return err
	}
	s.Event(by, "user.password", "account/"+name, "ok", "password changed", source)
	s.RevokeSession(by, "", name, source)
	return nil
}

// PutRole creates or replaces a role.
func (s *Service) PutRole(by Subject, r Role, source string) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx, bucketRoles, r.Name, r) }); err != nil {
		return fmt.Errorf("role %s: %w", r.Name, err)
	}
	b, _ := json.Marshal(r)
	s.Event(by, "role.put", "role/"+r.Name, "ok", string(b), source)
	return nil
}

// DeleteRole removes a role that no account holds.
func (s *Service) DeleteRole(by Subject, name, source string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoles).Get([]byte(name)) == nil {
			return fmt.Errorf("role %s: %w", name, ErrNotFound)
		}
		inUse := ""
		_ = tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u User
			if json.Unmarshal(v, &u) == nil && slices.Contains(u.Roles, name) {
				inUse = u.Name
			}
			return nil
		})
		if inUse != "" {
			return fmt.Errorf("role %s is held by %s", name, inUse)
		}
		return tx.Bucket(bucketRoles).Delete([]byte(name))
	})
	if err != nil {
		return err
	}
	s.Event(by, "role.delete", "role/"+name, "ok", "", source)
	return nil
}
