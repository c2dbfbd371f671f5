// Package evidence makes recordings provable: it owns the append-only Merkle log of recorded segments (and
// of the audit log's anchors, audit.go) and its signed checkpoints, the device identity (the device
// certificate naming the log and export keys), the evidence export (a zip holding one ONVIF Export File
// Format file per camera — video.mp4 for one camera, video-<camera>.mp4 for several over one range — a
// manifest signed once, the certificate and the one checkpoint every camera is proven against) and the
// offline verification of such an export, camera by camera.
//
// The log is RFC 6962 / C2SP tlog over golang.org/x/mod/sumdb/tlog: each closed segment's leaf (camera,
// per-camera sequence and link to the previous segment, time range, chunk count, init hash, plaintext
// hash-chain head) is appended, and so is an audit leaf (entry count and chain head of the audit log) at
// every audit checkpoint; every few seconds one checkpoint (origin, size, root, time) is signed with the
// log key, whatever the number of cameras. docs/evidence-format.md specifies every byte.
//
// The package must never import the TPM, the index, the web server or the access-control service: keys
// come in as crypto.Signer, storage as the [LogStore] interface and recordings as the [Recordings]
// interface, so the verifier (in verify.go, zipread.go, mp4.go, manifest.go, checkpoint.go, leaf.go,
// identity.go, and ReadAuditAnchors in audit.go) can run anywhere, offline, years later. A test enforces
// the import rule. It must never put key material or passphrases in logs or errors, and never trust a byte
// of an export before checking it: every parser of export bytes is bounded in size and fuzzed.
package evidence
