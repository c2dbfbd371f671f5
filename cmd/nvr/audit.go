package main

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/edgenvr/nvr/appliance"
	"github.com/edgenvr/nvr/appliance/authz"
	"github.com/edgenvr/nvr/appliance/evidence"
)

const auditUsage = `usage:
  nvr audit verify [-data DIR] [-file AUDIT.jsonl] [-device-cert CERT] [-pubkey KEY.pem]
Checks that no entry of the audit log was edited, deleted, inserted, reordered or cut off.

With -data (default /var/lib/nvr; the appliance stopped), it checks DIR/audit.jsonl against the audit
anchors of DIR's evidence log: every anchor must name an entry the file has, with the same hash, and every
anchor is proved included, byte for byte, under a checkpoint signed by the device's log key. An attacker
who rewrites the file and recomputes its whole hash chain is caught by the anchors. It then says which
entries are covered by a signed anchor, and which (the tail since the last anchor) by the chain only.

With -file, it checks that file (such as an audit export) instead; add -data DIR to check it against DIR's
anchors too (the file may end before the latest anchors: an earlier export).

-device-cert pins the device certificate (default DIR/device-cert.pem, which the report names as unpinned);
its log key also pins the checkpoints written into the audit log itself (-pubkey pins another key, PEM).`

// audit runs the `nvr audit` subcommands.
func audit(args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, auditUsage)
		return 2, errors.New("audit: want a subcommand: verify")
	}
	fs := flag.NewFlagSet("nvr audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "/var/lib/nvr", "data directory of a stopped appliance: audit.jsonl, index.db, device-cert.pem")
	file := fs.String("file", "", "an audit log file, such as an export (instead of DIR/audit.jsonl)")
	certFile := fs.String("device-cert", "", "the device certificate to pin (default DIR/device-cert.pem, unpinned)")
	pubFile := fs.String("pubkey", "", "PEM file of the key that signs the checkpoints written into the audit log")
	if err := fs.Parse(args[1:]); err != nil {
		return 2, err
	}
	dataGiven := false
	fs.Visit(func(f *flag.Flag) { dataGiven = dataGiven || f.Name == "data" })
	path := *file
	useAnchors := path == "" || dataGiven
	if path == "" {
		path = filepath.Join(*dataDir, "audit.jsonl")
	}

	// The device certificate: pinned when given, else the data directory's own.
	var id *evidence.Identity
	certPinned := *certFile != ""
	if !certPinned && useAnchors {
		*certFile = filepath.Join(*dataDir, appliance.DeviceCertFile)
	}
	if *certFile != "" {
		cert, err := os.ReadFile(*certFile)
		if err != nil {
			return 1, fmt.Errorf("device certificate: %w", err)
		}
		if id, err = evidence.ParseDeviceCert(cert); err != nil {
			return 1, fmt.Errorf("device certificate %s: %w", *certFile, err)
		}
	}
	var pub crypto.PublicKey
	keyName := ""
	switch {
	case *pubFile != "":
		k, err := readPublicKey(*pubFile)
		if err != nil {
			return 1, err
		}
		pub, keyName = k, "the key in "+*pubFile
	case id != nil:
		pub, keyName = id.LogKey, "the log key of "+id.Appliance
	}

	opts := authz.VerifyOptions{Key: pub, Prefix: *file != ""}
	var anchors evidence.AuditAnchors
	var logProblem error
	if useAnchors {
		db, err := openIndex(*dataDir)
		if err != nil {
			return 1, err
		}
		anchors, logProblem = evidence.ReadAuditAnchors(db, id)
		if cerr := db.Close(); cerr != nil {
			return 1, fmt.Errorf("close index: %w", cerr)
		}
		for _, a := range anchors.Anchors {
			opts.Anchors = append(opts.Anchors, authz.ExternalAnchor{Size: a.Size, Head: hex.EncodeToString(a.Head[:]), Time: a.Time,
				Where: fmt.Sprintf("evidence log leaf %d", a.Index), Signed: a.Signed()})
		}
	}

	f, err := os.Open(path)
	if err != nil {
		return 1, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	rep, err := authz.VerifyLogWith(f, opts)
	if err != nil {
		return 1, fmt.Errorf("audit log %s: %w", path, err)
	}
	if logProblem != nil {
		rep.Problems = append([]string{"evidence log: " + logProblem.Error()}, rep.Problems...)
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, "PROBLEM:", p)
	}
	if !rep.OK() {
		fmt.Fprintf(stdout, "audit verify: %s: NOT intact: %s in %d entries\n", path, plural(len(rep.Problems), "problem"), rep.Entries)
		return 1, nil
	}
	fmt.Fprintf(stdout, "audit verify: %s: intact: %d entries, hash chain unbroken\n", path, rep.Entries)
	if useAnchors {
		signed := 0
		for _, a := range anchors.Anchors {
			if a.Signed() {
				signed++
			}
		}
		certNote := "pinned device certificate " + *certFile
		if !certPinned {
			certNote = "device certificate from the data directory, not pinned: give -device-cert to pin it"
		}
		fmt.Fprintf(stdout, "evidence log: %d leaves, %s, the latest of %d leaves signed %s by the log key of %s (%s); %s, %d of them under a signed checkpoint, every one matching the file\n",
			anchors.LogSize, plural(anchors.Checkpoints, "signed checkpoint"), anchors.Latest.Size, anchors.Latest.Time.Format(time.RFC3339), id.Appliance, certNote,
			plural(len(anchors.Anchors), "audit anchor"), signed)
		if rep.BeyondEnd > 0 {
			fmt.Fprintf(stdout, "the file ends before %d later anchors: it is an earlier copy of the audit log (or was cut short)\n", rep.BeyondEnd)
		}
	} else {
		fmt.Fprintln(stdout, "evidence log anchors NOT checked: give -data DIR (the appliance stopped) to check them")
	}
	printCoverage(stdout, rep, keyName)
	return 0, nil
}

// printCoverage says which entries are covered by what, strongest first.
func printCoverage(w io.Writer, rep authz.VerifyReport, keyName string) {
	n := rep.Entries
	e := min(rep.SignedAnchored, n)
	u := min(max(e, rep.UnsignedAnchored), n)
	c := u
	if rep.Anchored > u {
		c = min(rep.Anchored+1, n) // the checkpoint entry itself is covered by its signature's position
	}
	span := func(from, to uint64) string {
		if from == to {
			return fmt.Sprintf("entry %d", from)
		}
		return fmt.Sprintf("entries %d–%d", from, to)
	}
	if e > 0 {
		a := rep.LastSigned
		fmt.Fprintf(w, "covered: %s by audit anchors under signed evidence checkpoints (the last anchored %s, %s): edits, deletions, reordering and truncation all show\n",
			span(1, e), a.Time.UTC().Format(time.RFC3339), a.Where)
	}
	if u > e {
		fmt.Fprintf(w, "covered: %s by audit anchors not yet under a signed checkpoint (the appliance stopped before signing one): as strong as the index that holds them\n", span(e+1, u))
	}
	if c > u {
		key := keyName
		if !rep.KeyPinned {
			key = "the key named in the log (not pinned: give -device-cert or -pubkey to pin it)"
		}
		fmt.Fprintf(w, "covered: %s by %d checkpoints signed into the audit log by %s: edits show, a cut back to an earlier checkpoint would not\n",
			span(u+1, c), rep.Checkpoints, key)
	}
	if n > c {
		fmt.Fprintf(w, "chain only: %s, since the last anchor: edits show, deleting them from the end would not\n", span(c+1, n))
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("public key %s: no PEM block", path)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return pub, nil
}
