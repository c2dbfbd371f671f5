package authz

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// apiToken is the stored form of an API token: the hash of its secret only.
type apiToken struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Label   string    `json:"label"`
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
}

// TokenInfo describes an API token without its secret.
type TokenInfo struct {
	ID, User, Label string
	Created         time.Time
}

const tokenPrefix = "nvrt_"

// IssueToken creates an API token for service account user and returns it (shown once). A token acts
// with exactly the account's roles, schedules and limits, and every use is audited. The caller must have
// been allowed [ManageUsers].
func (s *Service) IssueToken(by Subject, user, label, source string) (string, error) {
	id, err := s.token(6)
	if err != nil {
		return "", err
	}
	id = strings.NewReplacer("-", "x", "_", "y").Replace(id)
	secret, err := s.token(32)
	if err != nil {
		return "", err
	}
	t := apiToken{ID: id, User: user, Label: label, Hash: tokenHash(secret), Created: s.cfg.Now().UTC()}
	err = s.db.Update(func(tx *bolt.Tx) error {
		u, err := s.getUser(tx, user)
		if err != nil {
			return err
		}
		if !u.Service {
			return fmt.Errorf("user %s is not a service account", user)
		}
		return putJSON(tx, bucketTokens, id, t)
	})
	if err != nil {
		return "", err
	}
	s.Event(by, "token.issue", "token/"+id, "ok", "for "+user+": "+label, source)
	return tokenPrefix + id + "_" + secret, nil
}

// AuthenticateToken returns the subject an API token acts as.
func (s *Service) AuthenticateToken(tok string) (Subject, error) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok || len(tok) > 128 {
		return Subject{}, ErrBadCredentials
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok {
		return Subject{}, ErrBadCredentials
	}
	var t apiToken
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get([]byte(id))
		if v == nil {
			return ErrBadCredentials
		}
		return json.Unmarshal(v, &t)
	})
	if err != nil || subtle.ConstantTimeCompare([]byte(tokenHash(secret)), []byte(t.Hash)) != 1 {
		return Subject{}, ErrBadCredentials
	}
	return Subject{User: t.User, Via: "token", Ref: t.ID}, nil
}

// Tokens lists API tokens without secrets.
func (s *Service) Tokens() ([]TokenInfo, error) {
	var out []TokenInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
			var t apiToken
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			out = append(out, TokenInfo{ID: t.ID, User: t.User, Label: t.Label, Created: t.Created})
			return nil
		})
	})
	return out, err
}

// RevokeToken deletes an API token.
func (s *Service) RevokeToken(by Subject, id, source string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketTokens).Get([]byte(id)) == nil {
			return fmt.Errorf("token %s: %w", id, ErrNotFound)
		}
		return tx.Bucket(bucketTokens).Delete([]byte(id))
	})
	if err != nil {
		return err
	}
	s.Event(by, "token.revoke", "token/"+id, "ok", "", source)
	return nil
}
