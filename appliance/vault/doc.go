// Package vault owns encryption at rest: the segment file format described in
// docs/segment-format.md, the per-segment data encryption key (DEK) and its
// wrapping to the TPM's vault key, sealing chunks as they are recorded,
// authenticating and decrypting them for playback, and crash repair.
//
// Writing needs only the vault *public* key ([Create]); no TPM call sits on
// the recording path. Reading needs an [Unwrapper] (the TPM) to recover the
// DEK through ECDH; the vault private key never exists in this process.
//
// The package is a leaf: it imports no other project package, and defines the
// [Unwrapper] interface that the tpm package satisfies. It must never expose a
// DEK or any other key to its callers, never write plaintext media to disk,
// never trust a length read from a file before checking it against a bound,
// and never acknowledge a chunk ([Writer.Append]) before it is on stable
// storage.
package vault
