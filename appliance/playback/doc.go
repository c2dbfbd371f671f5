// Package playback reads recorded video back for viewers: a camera's timeline from the index (what was
// recorded, where the gaps are), and streams of recorded fragments from any instant on, decrypted on the
// fly through the TPM with a short-lived in-memory key cache ([vault.KeyCache]). It also owns the small
// framing ([WriteFrame], [ReadFrame]) that carries init segments and fragments to the browser, for live
// view and playback alike.
//
// It serves only the bytes that were recorded: fragments leave byte for byte as the vault authenticated
// them, never remuxed or transcoded. It must never decide a right (the caller asks authz first and passes
// only an allowed camera and instant), never write plaintext media to disk, never keep a data key beyond
// the cache's time to live, and never serve a chunk that failed authentication or a file whose header
// names another segment or camera.
package playback
