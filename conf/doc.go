// Package conf reads and writes the Web Agent's files on the agent host,
// WebAgent.conf and SmHost.conf, byte for byte as the vendor's tools write
// them, and defines the Policy Server objects (HCO, ACO) with their
// documented defaults.
//
// # File format
//
// Both files are lines of
//
//	key="value"
//	# a comment
//	key="value"   # a comment after the closing quote
//
// and blank lines, with CRLF endings when the vendor's tools wrote them and
// LF when a Unix editor did; the reader accepts both, and a rewrite keeps
// whichever the file has. SmHost.conf ends with a "# <EOF>" line, which new
// keys are inserted before. Keys are case-insensitive (the vendor writes
// HostConfigFile, smreghost writes hostconfigobject, users write either).
// policyserver and LoadPlugin lines repeat; for any other key the last line
// wins, so that a line appended by hand overrides the one above it. Values
// written by hand may lack quotes; there a '#' after a space or tab starts a
// comment. Values hold no escapes: a Windows path is written as is, and a
// value cannot contain a quote.
//
// File keeps every line, so a tool can change one value and write the file
// back with everything else (comments, spelling of keys, unknown keys,
// endings, a UTF-8 byte order mark) unchanged: an unmodified File gives back
// the bytes it was parsed from. Errors are *Error values naming the file and
// the 1-based line.
//
// # The shared secret
//
// The vendor's smreghost encrypts sharedsecret ({RC2}... or {AES}...) with a
// key bound to the host that registered, so that a copied SmHost.conf fails
// with "Shared secret incorrect". agentlab cannot read those values and
// writes its own form instead, with the same property:
//
//	sharedsecret="{AL1}base64(nonce || AES-256-GCM ciphertext)"
//
// The 12-byte nonce is random; the key is SHA-256("agentlab smhost v1\x00"
// || host identity) and the additional data is "sharedsecret". The host
// identity (HostIdentity) is $AGENTLAB_HOST_ID when set, otherwise
// /etc/machine-id (or /var/lib/dbus/machine-id), a slash and the host name.
// A lab plays its web server host with the variable, and writes the host's
// name in LabHost.conf next to the SmHost.conf (IdentityFor reads it), so
// that its folder's files check and probe as they are.
// This hides the secret from a casual reader and ties it to the host; it is
// not protection against someone who can read the machine id.
//
// Hand-written labs may instead write the secret in clear:
//
//	sharedsecret="{PLAIN}the secret"
//
// A value with no prefix is refused rather than taken as plain text, so that
// a vendor secret with a damaged prefix is not silently used as the secret.
package conf
