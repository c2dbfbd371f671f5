// Package cli holds what the appliance's commands share: logger set-up, credentials files and time
// arguments. It holds no appliance logic.
package cli

import (
	"bufio"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// Logger returns a logger writing to w at the given level ("debug", "info", "warn", "error") and format
// ("text" or "json").
func Logger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q is not text or json", format)
}

// Credential is a camera's user name and password.
type Credential struct{ Username, Password string }

// maxCredentialsFile bounds the credentials file.
const maxCredentialsFile = 1 << 20

// ReadCredentials reads a camera credentials file: one line per camera, "NAME USERNAME PASSWORD" (the
// password is the rest of the line), "*" as NAME for every camera not named, # for comments. The file must
// not be readable by group or others: it holds secrets. Errors name the line, never its content.
func ReadCredentials(path string) (map[string]Credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credentials file %s is readable by group or others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	if st.Size() > maxCredentialsFile {
		return nil, fmt.Errorf("credentials file %s is larger than %d bytes", path, maxCredentialsFile)
	}
	out := map[string]Credential{}
	sc := bufio.NewScanner(io.LimitReader(f, maxCredentialsFile))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		rest = strings.TrimLeft(rest, " \t")
		user, pass, ok2 := strings.Cut(rest, " ")
		if !ok || !ok2 || name == "" || user == "" || pass == "" {
			return nil, fmt.Errorf("credentials file %s line %d: want NAME USERNAME PASSWORD", path, n)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("credentials file %s line %d: camera %s named twice", path, n, name)
		}
		out[name] = Credential{Username: user, Password: pass}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return out, nil
}

// For returns the credential for a camera: its own line, else the "*" line, else none.
func For(creds map[string]Credential, name string) (Credential, bool) {
	if c, ok := creds[name]; ok {
		return c, true
	}
	c, ok := creds["*"]
	return c, ok
}

// ParseTime reads a time argument: RFC 3339 (2026-11-23T10:00:00Z), Unix seconds (1763892000 or with a
// fraction), or a duration before now ("-90s", "-2h").
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("empty time")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if strings.HasPrefix(s, "-") {
		if d, err := time.ParseDuration(s[1:]); err == nil {
			return now.Add(-d), nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
	}
	return time.Time{}, fmt.Errorf("time %q: use RFC 3339, Unix seconds or -DURATION", s)
}

// StartCPUProfile writes a CPU profile to path until the returned function is called.
func StartCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// WriteHeapProfile writes the heap profile (in use and allocated) to path.
func WriteHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("heap profile: %w", err)
	}
	return f.Close()
}

// ReadCertificate reads the first certificate of a PEM file and returns its DER bytes.
func ReadCertificate(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("certificate %s: no CERTIFICATE block", path)
		}
		if blk.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
				return nil, fmt.Errorf("certificate %s: %w", path, err)
			}
			return blk.Bytes, nil
		}
	}
}
