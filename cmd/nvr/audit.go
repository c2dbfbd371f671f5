package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgenvr/nvr/appliance/authz"
)

const auditUsage = `usage:
  nvr audit verify [-data DIR | -file AUDIT.jsonl] [-pubkey KEY.pem]
Checks that no entry of the audit log was edited, deleted, inserted or reordered, and that its checkpoints
are signed. -pubkey pins the checkpoint key (PEM, PKIX); without it the key named in the log is taken and
the report says so.`

// audit runs the `nvr audit` subcommands.
func audit(args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, auditUsage)
		return 2, errors.New("audit: want a subcommand: verify")
	}
	fs := flag.NewFlagSet("nvr audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "/var/lib/nvr", "data directory holding audit.jsonl")
	file := fs.String("file", "", "an audit log file, such as an export (instead of -data)")
	pubFile := fs.String("pubkey", "", "PEM file of the checkpoint public key to pin")
	if err := fs.Parse(args[1:]); err != nil {
		return 2, err
	}
	path := *file
	if path == "" {
		path = filepath.Join(*dataDir, "audit.jsonl")
	}
	var pub any
	if *pubFile != "" {
		b, err := os.ReadFile(*pubFile)
		if err != nil {
			return 1, fmt.Errorf("public key: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return 1, fmt.Errorf("public key %s: no PEM block", *pubFile)
		}
		if pub, err = x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
			return 1, fmt.Errorf("public key %s: %w", *pubFile, err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return 1, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	rep, err := authz.VerifyLog(f, pub)
	if err != nil {
		return 1, fmt.Errorf("audit log %s: %w", path, err)
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, "PROBLEM:", p)
	}
	key := "pinned key"
	if !rep.KeyPinned {
		key = "the key named in the log (not pinned: give -pubkey to pin it)"
	}
	if !rep.OK() {
		fmt.Fprintf(stdout, "audit verify: %s: NOT intact: %d problems in %d entries\n", path, len(rep.Problems), rep.Entries)
		return 1, nil
	}
	fmt.Fprintf(stdout, "audit verify: %s: intact: %d entries, hash chain unbroken, %d checkpoints signed by %s; the first %d entries are covered by the last checkpoint, %d after it by the chain only\n",
		path, rep.Entries, rep.Checkpoints, key, rep.Anchored, rep.Entries-min(rep.Entries, rep.Anchored+1))
	return 0, nil
}
