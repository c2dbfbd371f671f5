// Package authz is the appliance's only gate: it owns the accounts (local users with argon2id password
// hashes, service accounts with API tokens), the roles and their rights per camera and per system function,
// weekly time schedules and the maximum age of recordings a role may see, the login flow (password, TOTP
// with single-use recovery codes, WebAuthn security keys, dual authorization by an approver), server-side
// sessions, progressive delays against guessing, the first-boot setup code, and the hash-chained audit log
// with its signed checkpoints, its verifier and its forwarding to a SIEM (syslog over TLS, RFC 5424/5425).
//
// Every access decision is taken by [Service.Decide], which denies by default and writes every decision,
// allowed or denied, to the audit log with subject, action, object, result, reason and source address.
// Handlers elsewhere never decide rights themselves.
//
// Persistence: authz opens its own bbolt file (DATA/auth.db) for users, roles and token hashes, and its own
// append-only audit file (DATA/audit.jsonl). Sessions live in memory only: a restart logs everybody out.
//
// The package must never log or return a secret: passwords, TOTP secrets and codes, recovery codes, setup
// codes, session and API tokens appear in no log line, error message or audit entry. It stores no secret
// in plain text except the TOTP seeds, which RFC 6238 requires the verifier to hold.
package authz
