package conf

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Prefixes of the sharedsecret value that agentlab reads.
const (
	SealedPrefix = "{AL1}"
	PlainPrefix  = "{PLAIN}"
)

// HostIDEnv overrides the host identity, so that tests and labs can play
// several hosts on one machine.
const HostIDEnv = "AGENTLAB_HOST_ID"

// ErrSecretIncorrect is wrapped by the error for an {AL1} secret sealed on
// another host: the emulator's counterpart of the vendor's "Shared secret
// incorrect".
var ErrSecretIncorrect = errors.New("Shared secret incorrect")

const (
	keyLabel  = "agentlab smhost v1\x00"
	secretAAD = "sharedsecret"
	nonceSize = 12
)

// HostIdentity names this host for sealing the shared secret: $AGENTLAB_HOST_ID
// when set and not empty, otherwise the machine id and the host name, so that
// an SmHost.conf copied to another machine (or to a clone renamed afterwards)
// stops working, as the vendor's does.
func HostIdentity() (string, error) {
	if id := os.Getenv(HostIDEnv); id != "" {
		return id, nil
	}
	var mid string
	for _, p := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(p); err == nil {
			if mid = strings.TrimSpace(string(b)); mid != "" {
				break
			}
		}
	}
	name, err := os.Hostname()
	if mid == "" {
		// A container may have no machine id: the host name alone still
		// binds the secret to this host, if more loosely.
		mid = "no-machine-id"
	}
	if err != nil {
		return "", fmt.Errorf("cannot identify this host: %w; set %s", err, HostIDEnv)
	}
	return mid + "/" + name, nil
}

func secretAEAD(hostID string) cipher.AEAD {
	key := sha256.Sum256([]byte(keyLabel + hostID))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// SealSecret encrypts secret for hostID and returns the {AL1} value to write
// as sharedsecret.
func SealSecret(secret []byte, hostID string) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("empty shared secret")
	}
	if hostID == "" {
		return "", errors.New("empty host identity")
	}
	nonce := make([]byte, nonceSize, nonceSize+len(secret)+16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	sealed := secretAEAD(hostID).Seal(nonce, nonce, secret, []byte(secretAAD))
	return SealedPrefix + base64.StdEncoding.EncodeToString(sealed), nil
}

// OpenSecret returns the shared secret from a sharedsecret value: {PLAIN}
// as written, {AL1} decrypted for hostID. The errors tell the user what to
// do, which is usually to register the host again.
func OpenSecret(value, hostID string) ([]byte, error) {
	if value == "" {
		return nil, errors.New("sharedsecret is empty; register this host with smreghost")
	}
	prefix, rest, ok := secretPrefix(value)
	switch {
	case !ok:
		return nil, fmt.Errorf("sharedsecret has no {...} prefix: a plain secret must be written %ssecret, and smreghost writes an encrypted %s value", PlainPrefix, SealedPrefix)
	case strings.EqualFold(prefix, PlainPrefix):
		if rest == "" {
			return nil, fmt.Errorf("sharedsecret %s is empty", PlainPrefix)
		}
		return []byte(rest), nil
	case strings.EqualFold(prefix, SealedPrefix):
		return openSealed(rest, hostID)
	case strings.EqualFold(prefix, "{RC2}"), strings.EqualFold(prefix, "{AES}"):
		return nil, fmt.Errorf("sharedsecret is in the vendor's %s format, which agentlab cannot decrypt; register this host again with smreghost", prefix)
	default:
		return nil, fmt.Errorf("sharedsecret is in an unknown %s format, which agentlab cannot decrypt; register this host again with smreghost", prefix)
	}
}

// secretPrefix splits "{XYZ}rest"; a prefix is a short word, so a secret
// that merely starts with "{" is not mistaken for one.
func secretPrefix(v string) (prefix, rest string, ok bool) {
	if !strings.HasPrefix(v, "{") {
		return "", v, false
	}
	i := strings.IndexByte(v, '}')
	if i < 2 || i > 16 {
		return "", v, false
	}
	for _, c := range v[1:i] {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return "", v, false
		}
	}
	return v[:i+1], v[i+1:], true
}

func openSealed(b64, hostID string) ([]byte, error) {
	again := "; register this host again with smreghost"
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("sharedsecret %s value is damaged (not base64: %v)%s", SealedPrefix, err, again)
	}
	aead := secretAEAD(hostID)
	if len(raw) < nonceSize+aead.Overhead()+1 {
		return nil, fmt.Errorf("sharedsecret %s value is damaged (too short)%s", SealedPrefix, again)
	}
	secret, err := aead.Open(nil, raw[:nonceSize], raw[nonceSize:], []byte(secretAAD))
	if err != nil {
		return nil, fmt.Errorf("%w: this SmHost.conf was registered on another host (its secret is bound to the host that ran smreghost)%s", ErrSecretIncorrect, again)
	}
	return secret, nil
}
