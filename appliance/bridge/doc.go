// Package bridge is the appliance's RTSP and RTSPS server for external systems (another VMS, an analytics
// server): live streams per camera, re-packetized from the recorder's fMP4 fragments into RTP without
// transcoding, and recorded streams replayed at real time from the vault with ONVIF-style clock ranges
// (Range: clock=…, RFC 2326).
//
// It owns: the RTSP request handling on top of gortsplib (paths, Range, Scale and Require), the bridge's
// authentication (HTTP digest against per-account bridge credentials, and Basic with an API token or a
// bridge credential only over RTSPS; see docs/bridge.md), the bridge credential store (a TPM-sealed key from which each
// credential is derived, so no secret is stored in clear), the limits that bound what a hostile client can
// cost (connections, time to authenticate, request sizes, write queues), and the conversion of recorded
// fMP4 samples into RTP packets.
//
// It must never decide a right itself: every DESCRIBE and PLAY is put to authz.Service.Decide, which audits
// it. It must never accept Basic authentication over plain RTSP, never accept an interactive user's
// password (those logins need a second factor), never put a secret in a log line, an error message, a URL or
// the audit log, never write to the recordings, and never make the recording path wait: live viewers read
// the recorder's fan-out, which drops for them rather than block.
package bridge
