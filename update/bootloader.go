package update

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// Bootloader reads and writes the boot environment that chooses the root slot. RAUC writes it during an
// install and on mark-good; the agent reads it to know whether the booted slot is on trial, and tests and
// the image recipe use it to set up and inspect boot counting. Board profiles name which implementation a
// board uses.
type Bootloader interface {
	// Env returns every variable of the environment.
	Env(ctx context.Context) (map[string]string, error)
	// Set sets the given variables, leaving the others as they are.
	Set(ctx context.Context, vars map[string]string) error
	// Trial reports whether slot (a bootname such as "A") booted on trial, not yet marked good, and how
	// many boot attempts it has left.
	Trial(ctx context.Context, slot string) (onTrial bool, attemptsLeft int, err error)
}

// GRUBEnv is a GRUB environment block handled with grub-editenv, with RAUC's variables: ORDER (bootnames
// in the order to try), <slot>_OK (1 once the slot may be booted) and <slot>_TRY (boot attempts already
// made since the last mark-good; the image's grub.cfg gives up a slot when it reaches MaxTries).
type GRUBEnv struct {
	Path     string // the environment file, e.g. /boot/grub/grubenv
	MaxTries int    // attempts before grub.cfg falls back; default 3
}

// UBootEnv is a U-Boot environment handled with fw_printenv and fw_setenv, with RAUC's variables:
// BOOT_ORDER and BOOT_<slot>_LEFT (attempts left, counted down by the boot script).
type UBootEnv struct {
	Config   string // fw_env.config describing where the environment lives
	MaxTries int    // the value RAUC resets BOOT_<slot>_LEFT to; default 3
}

func tool(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = 1<<20, 8<<10
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", name, err, lastLines(stderr.String(), 2))
	}
	return stdout.Bytes(), nil
}

// ParseEnv parses NAME=VALUE lines as grub-editenv list and fw_printenv print them.
func ParseEnv(b []byte) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: environment line %q", ErrMalformed, clip(line))
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: environment: %v", ErrMalformed, err)
	}
	return env, nil
}

func setArgs(vars map[string]string) []string {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+vars[k])
	}
	return out
}

func validVars(vars map[string]string) error {
	for k, v := range vars {
		if k == "" || strings.ContainsAny(k, "= \n") || strings.ContainsAny(v, "\n") {
			return fmt.Errorf("%w: boot variable %q", ErrMalformed, clip(k))
		}
	}
	return nil
}

// Env lists the GRUB environment.
func (g GRUBEnv) Env(ctx context.Context) (map[string]string, error) {
	out, err := tool(ctx, "grub-editenv", g.Path, "list")
	if err != nil {
		return nil, err
	}
	return ParseEnv(out)
}

// Set writes variables into the GRUB environment, creating the file if it does not exist.
func (g GRUBEnv) Set(ctx context.Context, vars map[string]string) error {
	if err := validVars(vars); err != nil {
		return err
	}
	if _, err := tool(ctx, "grub-editenv", g.Path, "list"); err != nil {
		if _, err := tool(ctx, "grub-editenv", g.Path, "create"); err != nil {
			return err
		}
	}
	_, err := tool(ctx, "grub-editenv", append([]string{g.Path, "set"}, setArgs(vars)...)...)
	return err
}

// Trial: a GRUB slot is on trial while <slot>_TRY is above zero (grub.cfg counts attempts up, mark-good
// resets it to 0).
func (g GRUBEnv) Trial(ctx context.Context, slot string) (bool, int, error) {
	env, err := g.Env(ctx)
	if err != nil {
		return false, 0, err
	}
	max := g.MaxTries
	if max <= 0 {
		max = 3
	}
	tries := 0
	if v := env[slot+"_TRY"]; v != "" {
		if _, err := fmt.Sscanf(v, "%d", &tries); err != nil {
			return false, 0, fmt.Errorf("%w: %s_TRY=%q", ErrMalformed, slot, clip(v))
		}
	}
	return tries > 0, max - tries, nil
}

func (u UBootEnv) cfgArgs() []string {
	if u.Config == "" {
		return nil
	}
	return []string{"-c", u.Config}
}

// Env prints the U-Boot environment.
func (u UBootEnv) Env(ctx context.Context) (map[string]string, error) {
	out, err := tool(ctx, "fw_printenv", u.cfgArgs()...)
	if err != nil {
		return nil, err
	}
	return ParseEnv(out)
}

// Set writes variables into the U-Boot environment with one fw_setenv script, so they change together.
func (u UBootEnv) Set(ctx context.Context, vars map[string]string) error {
	if err := validVars(vars); err != nil {
		return err
	}
	var script strings.Builder
	for _, kv := range setArgs(vars) {
		fmt.Fprintf(&script, "%s\n", kv) // libubootenv's script format is NAME=VALUE per line
	}
	f, err := os.CreateTemp("", "fw_setenv-*")
	if err != nil {
		return fmt.Errorf("fw_setenv script: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script.String()); err != nil {
		f.Close()
		return fmt.Errorf("fw_setenv script: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("fw_setenv script: %w", err)
	}
	_, err = tool(ctx, "fw_setenv", append(u.cfgArgs(), "-s", f.Name())...)
	return err
}

// Trial: a U-Boot slot is on trial while BOOT_<slot>_LEFT is below MaxTries (the boot script counts it
// down, mark-good resets it).
func (u UBootEnv) Trial(ctx context.Context, slot string) (bool, int, error) {
	env, err := u.Env(ctx)
	if err != nil {
		return false, 0, err
	}
	max := u.MaxTries
	if max <= 0 {
		max = 3
	}
	left := max
	if v := env["BOOT_"+slot+"_LEFT"]; v != "" {
		if _, err := fmt.Sscanf(v, "%d", &left); err != nil {
			return false, 0, fmt.Errorf("%w: BOOT_%s_LEFT=%q", ErrMalformed, slot, clip(v))
		}
	}
	return left < max, left, nil
}
