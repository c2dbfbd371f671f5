package bridge

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/headers"
	"github.com/edgenvr/nvr/appliance/authz"
)

// Authz is what the bridge needs of the access-control service; *authz.Service satisfies it.
type Authz interface {
	Decide(authz.Request) authz.Decision
	AuthenticateToken(token string) (authz.Subject, error)
	User(name string) (authz.User, error)
	Event(subject authz.Subject, action, object, result, reason, source string)
}

// Authentication outcomes callers branch on. Their messages carry no secret.
var (
	// ErrNoCredentials: the request carries no Authorization header; the answer is a challenge.
	ErrNoCredentials = errors.New("no credentials")
	// ErrBadCredentials: wrong, unknown, revoked or not allowed here (Basic over plain RTSP).
	ErrBadCredentials = errors.New("wrong credentials")
	// ErrStaleNonce: a digest answered a nonce that expired or was issued to another address.
	ErrStaleNonce = errors.New("stale nonce")
	// ErrThrottled: too many failures from the client's address; it must wait.
	ErrThrottled = errors.New("too many failed attempts")
)

// authenticator checks the Authorization header of RTSP requests.
type authenticator struct {
	az       Authz
	creds    *Credentials
	realm    string
	now      func() time.Time
	rnd      io.Reader
	nonceTTL time.Duration
	fails    *failures
}

const nonceRandom = 8

// newNonce returns a nonce bound to the client's address and to the time: base64(time ‖ random ‖ MAC).
// The server keeps no state for it; a nonce replayed from another address or after nonceTTL is stale.
func (a *authenticator) newNonce(ip string) string {
	var b [8 + nonceRandom + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(a.now().Unix()))
	if _, err := io.ReadFull(a.rnd, b[8:8+nonceRandom]); err != nil {
		// Without randomness the nonce is still unforgeable (MAC) and time-bound; it only repeats within
		// a second.
		clear(b[8 : 8+nonceRandom])
	}
	copy(b[8+nonceRandom:], a.creds.mac([]byte(ip), b[:8+nonceRandom])[:16])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// checkNonce reports whether nonce was issued by this bridge to ip within nonceTTL.
func (a *authenticator) checkNonce(nonce, ip string) bool {
	if len(nonce) > 64 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 8+nonceRandom+16 {
		return false
	}
	if subtle.ConstantTimeCompare(b[8+nonceRandom:], a.creds.mac([]byte(ip), b[:8+nonceRandom])[:16]) != 1 {
		return false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0)
	age := a.now().Sub(issued)
	return age >= -time.Minute && age <= a.nonceTTL
}

// challenge returns the WWW-Authenticate values of a 401: digest (MD5, the algorithm RTSP clients
// implement) always, and Basic only over TLS.
func (a *authenticator) challenge(secure bool, ip string, stale bool) base.HeaderValue {
	md := headers.AuthAlgorithmMD5
	v := headers.Authenticate{Method: headers.AuthMethodDigest, Realm: a.realm, Nonce: a.newNonce(ip), Algorithm: &md}.Marshal()
	if stale {
		v[0] += `, stale="true"`
	}
	if secure {
		v = append(v, headers.Authenticate{Method: headers.AuthMethodBasic, Realm: a.realm}.Marshal()...)
	}
	return v
}

// authenticate returns the subject a request's credentials stand for. Digest answers are checked against
// the account's bridge credential; Basic (TLS only) takes a service account's API token or the account's
// bridge credential. A person's password is never accepted (their sign-ins need a second factor): a
// person holds a bridge credential they issued themselves after a full sign-in.
func (a *authenticator) authenticate(req *base.Request, secure bool, ip string) (authz.Subject, error) {
	hv := req.Header["Authorization"]
	if len(hv) == 0 {
		return authz.Subject{}, ErrNoCredentials
	}
	if wait := a.fails.blocked(ip, a.now()); wait > 0 {
		return authz.Subject{}, ErrThrottled
	}
	var h headers.Authorization
	if len(hv) != 1 || len(hv[0]) > 1024 || h.Unmarshal(hv) != nil || h.Username == "" || len(h.Username) > 64 {
		return a.failed(authz.Subject{}, ip, "malformed Authorization header")
	}
	switch h.Method {
	case headers.AuthMethodBasic:
		if !secure {
			return a.failed(a.known(h.Username), ip, "Basic authentication over plain RTSP")
		}
		if strings.HasPrefix(h.BasicPass, "nvrt_") {
			sub, err := a.az.AuthenticateToken(h.BasicPass)
			if err != nil || sub.User != h.Username {
				return a.failed(a.known(h.Username), ip, "wrong API token")
			}
			a.fails.success(ip)
			return sub, nil
		}
		want, holder, serial, ok := a.credential(h.Username)
		if !ok || subtle.ConstantTimeCompare([]byte(h.BasicPass), []byte(want)) != 1 {
			return a.failed(a.known(h.Username), ip, "wrong bridge credential")
		}
		a.fails.success(ip)
		return credSubject(holder, serial), nil
	case headers.AuthMethodDigest:
		if !a.checkNonce(h.Nonce, ip) {
			return authz.Subject{}, ErrStaleNonce
		}
		if h.Realm != a.realm {
			return a.failed(a.known(h.Username), ip, "wrong realm")
		}
		if !uriMatches(req, h.URI) {
			return a.failed(a.known(h.Username), ip, "digest for another URL")
		}
		var hf func() hash.Hash
		switch {
		case h.Algorithm == nil || *h.Algorithm == headers.AuthAlgorithmMD5:
			hf = md5.New
		case *h.Algorithm == headers.AuthAlgorithmSHA256:
			hf = sha256.New
		default:
			return a.failed(a.known(h.Username), ip, "unknown digest algorithm")
		}
		secret, holder, serial, ok := a.credential(h.Username)
		if !ok {
			return a.failed(a.known(h.Username), ip, "no bridge credential")
		}
		ha1 := hexHash(hf, h.Username+":"+a.realm+":"+secret)
		want := hexHash(hf, ha1+":"+h.Nonce+":"+hexHash(hf, string(req.Method)+":"+h.URI))
		if subtle.ConstantTimeCompare([]byte(strings.ToLower(h.Response)), []byte(want)) != 1 {
			return a.failed(a.known(h.Username), ip, "wrong digest")
		}
		a.fails.success(ip)
		return credSubject(holder, serial), nil
	default:
		return a.failed(authz.Subject{}, ip, "unknown authentication method")
	}
}

// credential returns the current bridge credential of user, the account and the credential's serial, if
// the account may hold one now ([CheckHolder]: service accounts and people, never a disabled, directory or
// dual-authorization account). It is asked at every authentication, so an account that stops qualifying
// loses the bridge at its next request.
func (a *authenticator) credential(user string) (string, authz.User, uint64, bool) {
	u, err := a.az.User(user)
	if err != nil || CheckHolder(u) != nil {
		return "", authz.User{}, 0, false
	}
	secret, serial, ok := a.creds.secret(user, u.Created)
	return secret, u, serial, ok
}

// Door is how authz is told that account u acts through the bridge (the Via of its [authz.Subject]): a service account's only door is "token" (the
// one authz admits for service accounts, shared with its API tokens); a person's is "bridge" (authz admits
// people through any door but "token"). Either way the account acts with exactly its roles.
func Door(u authz.User) string {
	if u.Service {
		return "token"
	}
	return "bridge"
}

// credSubject is the subject of u's bridge credential at serial: the audit log reads "vms (token
// bridge-3)" for a service account and "alice (bridge bridge-1)" for a person.
func credSubject(u authz.User, serial uint64) authz.Subject {
	return authz.Subject{User: u.Name, Via: Door(u), Ref: "bridge-" + itoa(serial)}
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// known returns a subject naming user only if such an account exists: a name that is no account may be a
// mistyped secret and stays out of the audit log.
func (a *authenticator) known(user string) authz.Subject {
	u, err := a.az.User(user)
	if err != nil {
		return authz.Subject{}
	}
	return authz.Subject{User: user, Via: Door(u)}
}

// failed counts and audits a failed authentication.
func (a *authenticator) failed(sub authz.Subject, ip, reason string) (authz.Subject, error) {
	a.fails.failure(ip, a.now())
	a.az.Event(sub, "bridge.login", "bridge", "failure", reason, ip)
	return authz.Subject{}, ErrBadCredentials
}

// uriMatches reports whether a digest's URI is the request's URL (or, for SETUP, the base URL of the
// track URL, as some clients send).
func uriMatches(req *base.Request, uri string) bool {
	if req.URL == nil || uri == "" {
		return false
	}
	u := req.URL.String()
	if uri == u {
		return true
	}
	if req.Method == base.Setup {
		if i := strings.LastIndex(u, "/trackID="); i > 0 && (uri == u[:i] || uri == u[:i+1]) {
			return true
		}
	}
	return false
}

func hexHash(h func() hash.Hash, s string) string {
	x := h()
	x.Write([]byte(s))
	return hex.EncodeToString(x.Sum(nil))
}

// failures counts failed authentications per source address: after failFree failures each further one
// doubles a wait (from one second up to failMax) during which that address's credentials are not even
// checked. The table is bounded; idle entries are forgotten.
type failures struct {
	mu  sync.Mutex
	m   map[string]*failEntry
	max int
}

type failEntry struct {
	n     int
	until time.Time
	last  time.Time
}

const (
	failFree   = 5
	failMax    = 5 * time.Minute
	failForget = 15 * time.Minute
)

func newFailures(max int) *failures { return &failures{m: map[string]*failEntry{}, max: max} }

func (f *failures) blocked(ip string, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.m[ip]
	if e == nil || !now.Before(e.until) {
		return 0
	}
	return e.until.Sub(now)
}

func (f *failures) failure(ip string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.m[ip]
	if e == nil || now.Sub(e.last) > failForget {
		if len(f.m) >= f.max {
			f.evictLocked(now)
		}
		e = &failEntry{}
		f.m[ip] = e
	}
	e.n++
	e.last = now
	if e.n > failFree {
		d := time.Second << min(e.n-failFree-1, 16)
		e.until = now.Add(min(d, failMax))
	}
}

func (f *failures) success(ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, ip)
}

// evictLocked drops forgotten entries, or the oldest one when none is.
func (f *failures) evictLocked(now time.Time) {
	var oldest string
	var ot time.Time
	for k, e := range f.m {
		if now.Sub(e.last) > failForget {
			delete(f.m, k)
			continue
		}
		if oldest == "" || e.last.Before(ot) {
			oldest, ot = k, e.last
		}
	}
	if len(f.m) >= f.max && oldest != "" {
		delete(f.m, oldest)
	}
}
