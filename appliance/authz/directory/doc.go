// Package directory is the appliance's directory login: it checks users against an LDAP directory or
// Active Directory (LDAPS, or StartTLS, with a pinned CA) and a Kerberos realm (password through the KDC's
// AS exchange, single sign-on by SPNEGO with the appliance's keytab), and maps their directory groups,
// nested ones included, to appliance roles. It implements [authz.Negotiator], so authz stays the only
// gate: the second factor, schedules, dual authorization, sessions and the audit log are authz's.
//
// It owns the directory settings (DATA/directory.json, the bind password and keytab sealed by the TPM)
// through [Manager], which the configuration page edits at run time.
//
// It must never: send a password over an unencrypted connection unless the administrator explicitly
// allowed plaintext for a lab; accept an empty password (an LDAP "unauthenticated bind" succeeds without
// one); offer or accept NTLM; trust a KDC's answer to a password login without checking a service ticket
// against the keytab (a forged KDC could otherwise vouch for anyone); put a password, keytab or ticket in
// a log line, error or audit entry; or let a directory that cannot be reached look like a wrong password
// (it fails closed, and says so).
package directory
