package policyserver

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// Password hashes are written pbkdf2-sha256$<iterations>$<salt>$<hash>, salt
// and hash in unpadded standard base64, so that a store file can be read and
// edited by hand and the parameters travel with every hash.
const (
	passwordScheme = "pbkdf2-sha256"

	// PasswordIterations is deliberately moderate: a Login runs one PBKDF2
	// on the Policy Server's request path, and a lab drives many logins per
	// second. 10000 rounds cost a few milliseconds; a production system
	// would choose far more, at the price of login latency.
	PasswordIterations = 10000

	passwordSaltLen = 16
	passwordKeyLen  = 32

	// Bounds for hashes read from a store: below the minimum the hash is a
	// mistake, above the maximum one login would stall a server for seconds.
	minPasswordIterations = 1000
	maxPasswordIterations = 2_000_000
)

// HashPassword returns a new salted hash of pw in the store's format.
func HashPassword(pw string) (string, error) {
	return hashPassword(pw, PasswordIterations)
}

func hashPassword(pw string, iter int) (string, error) {
	salt := make([]byte, passwordSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key, err := pbkdf2.Key(sha256.New, pw, salt, iter, passwordKeyLen)
	if err != nil {
		return "", fmt.Errorf("password hash: %w", err)
	}
	return passwordScheme + "$" + strconv.Itoa(iter) + "$" +
		base64.RawStdEncoding.EncodeToString(salt) + "$" +
		base64.RawStdEncoding.EncodeToString(key), nil
}

type passwordHash struct {
	iter int
	salt []byte
	key  []byte
}

func parsePasswordHash(h string) (passwordHash, error) {
	parts := strings.Split(h, "$")
	if len(parts) != 4 || parts[0] != passwordScheme {
		return passwordHash{}, errors.New("password hash is not in the form pbkdf2-sha256$<iterations>$<salt>$<hash>")
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < minPasswordIterations || iter > maxPasswordIterations {
		return passwordHash{}, fmt.Errorf("password hash: iterations %q must be a number from %d to %d", parts[1], minPasswordIterations, maxPasswordIterations)
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[2])
	if err != nil || len(salt) < 8 {
		return passwordHash{}, errors.New("password hash: salt must be at least 8 bytes of unpadded base64")
	}
	key, err := base64.RawStdEncoding.DecodeString(parts[3])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return passwordHash{}, errors.New("password hash: hash must be 16 to 64 bytes of unpadded base64")
	}
	return passwordHash{iter: iter, salt: salt, key: key}, nil
}

func (p passwordHash) check(pw string) bool {
	key, err := pbkdf2.Key(sha256.New, pw, p.salt, p.iter, len(p.key))
	if err != nil {
		return false
	}
	// Constant time, so that response timing does not reveal how much of a
	// guessed hash was right.
	return subtle.ConstantTimeCompare(key, p.key) == 1
}

// CheckPassword reports whether pw matches hash. The error is for a hash
// that cannot be read, never for a wrong password.
func CheckPassword(hash, pw string) (bool, error) {
	p, err := parsePasswordHash(hash)
	if err != nil {
		return false, err
	}
	return p.check(pw), nil
}

// dummyHash is checked against when the user does not exist, so that an
// unknown user costs the same time as a wrong password and timing does not
// tell which user names exist.
var dummyHash = sync.OnceValue(func() passwordHash {
	h, err := HashPassword("agentlab-no-such-user")
	if err != nil {
		panic(err)
	}
	p, _ := parsePasswordHash(h)
	return p
})
