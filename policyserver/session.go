package policyserver

// Session tokens are self-contained and signed with the store's session_key,
// so any Policy Server loading the same store accepts a session another one
// issued: the agent can fail over without sending the user back to the
// login page. That is the role of the vendor's shared key store.
//
// Layout before base64url (no padding), integers big endian:
//
//	version(1) id(16) issued(8) idle_until(8) expires(8)
//	len(1) realm  len(1) user  hmac-sha256(32) over everything before it
//
// Times are Unix seconds. Names are at most 255 bytes, which the store
// parser enforces.

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"
	"time"
)

const (
	tokenVersion  = 1
	tokenIDLen    = 16
	tokenMACLen   = 32
	tokenFixedLen = 1 + tokenIDLen + 3*8
	tokenMinLen   = tokenFixedLen + 2 + tokenMACLen
	tokenMaxLen   = tokenFixedLen + 2*(1+255) + tokenMACLen
	tokenMaxChars = (tokenMaxLen*8 + 5) / 6

	// SessionRefreshPeriod is how old the idle deadline in a token may get
	// before Authorize re-issues the token with a fresh one [our choice,
	// like the vendor's session update period]: refreshing on every request
	// would cost a signature and a new cookie each time.
	SessionRefreshPeriod = 30 * time.Second
)

// Session is the result of a successful Login.
type Session struct {
	Token       string // opaque to the agent; becomes the SMSESSION cookie
	ID          string // hex, for logs
	Agent       string
	Realm       string
	User        string
	UserDN      string
	Issued      time.Time
	IdleUntil   time.Time // the session ends here unless Authorize refreshes it
	Expires     time.Time // the realm's max timeout; never extended
	IdleTimeout time.Duration
}

// tokenScratch is pooled so that checking a token allocates nothing: the
// decoded bytes and the MAC state live here, not on the heap per request.
type tokenScratch struct {
	mac hash.Hash
	sum [tokenMACLen]byte
	buf [tokenMaxLen]byte
}

type tokenInfo struct {
	id        [tokenIDLen]byte
	realm     *realm
	user      *user
	issued    int64
	idleUntil int64
	expires   int64
}

// sessionState is the only per-server session state: the ids of logged-out
// sessions until they would have expired anyway. It is not shared between
// servers, so a token logged out on smps1 stays valid on smps2 until it
// expires (the vendor needs a session store for that; we do not emulate one).
type sessionState struct {
	mu      sync.RWMutex
	revoked map[[tokenIDLen]byte]int64 // id -> expires (Unix seconds)
	count   atomic.Int64               // len(revoked), read without the lock
	pruneAt int
}

// Login checks a user's password for a realm of an agent and opens a
// session. The error says why for the server log; agents get only FAILURE.
func (s *Store) Login(agentName, realmName, userName, password string, now time.Time) (Session, error) {
	a := s.agents[agentName]
	if a == nil {
		return Session{}, fmt.Errorf("login: %w %q", ErrUnknownAgent, agentName)
	}
	r := s.realms[realmName]
	if r == nil || r.agent != a {
		return Session{}, fmt.Errorf("login: %w %q for agent %q", ErrUnknownRealm, realmName, agentName)
	}
	if !r.Protected {
		return Session{}, fmt.Errorf("login: %w: %q has nothing to log in to", ErrNotProtected, realmName)
	}
	u := s.users[userName]
	if u == nil {
		dummyHash().check(password)
		return Session{}, fmt.Errorf("login to realm %q: %w %q", realmName, ErrUnknownUser, userName)
	}
	if !u.hash.check(password) {
		return Session{}, fmt.Errorf("login to realm %q: %w for user %q", realmName, ErrBadPassword, userName)
	}
	ti := tokenInfo{realm: r, user: u, issued: now.Unix()}
	if _, err := rand.Read(ti.id[:]); err != nil {
		return Session{}, fmt.Errorf("login: session id: %w", err)
	}
	ti.expires = ti.issued + int64(r.MaxTimeout.D()/time.Second)
	ti.idleUntil = min(ti.issued+int64(r.IdleTimeout.D()/time.Second), ti.expires)
	return s.session(ti, s.encodeToken(&ti)), nil
}

// ValidateSession checks a token for an agent the way Authorize does:
// signature, agent, expiry, idle timeout and logout.
func (s *Store) ValidateSession(agentName, token string, now time.Time) (Session, error) {
	a := s.agents[agentName]
	if a == nil {
		return Session{}, fmt.Errorf("%w %q", ErrUnknownAgent, agentName)
	}
	ti, err := s.checkToken(a, token, now.Unix())
	if err != nil {
		return Session{}, err
	}
	return s.session(ti, token), nil
}

// Logout revokes a session on this server. Logging out an expired or
// already logged-out session is not an error.
func (s *Store) Logout(token string) error {
	ti, err := s.parseToken(token)
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	now := time.Now().Unix()
	st := &s.sessions
	st.mu.Lock()
	defer st.mu.Unlock()
	// Entries are useless once their token has expired; pruning when the
	// set has doubled keeps the cost amortised and the set bounded by the
	// sessions still alive.
	if len(st.revoked) >= st.pruneAt {
		for id, exp := range st.revoked {
			if exp < now {
				delete(st.revoked, id)
			}
		}
		st.pruneAt = max(2*len(st.revoked), 1024)
	}
	st.revoked[ti.id] = ti.expires
	st.count.Store(int64(len(st.revoked)))
	return nil
}

func (s *Store) session(ti tokenInfo, token string) Session {
	return Session{
		Token:       token,
		ID:          hex.EncodeToString(ti.id[:]),
		Agent:       ti.realm.Agent,
		Realm:       ti.realm.Name,
		User:        ti.user.name,
		UserDN:      ti.user.dn,
		Issued:      time.Unix(ti.issued, 0),
		IdleUntil:   time.Unix(ti.idleUntil, 0),
		Expires:     time.Unix(ti.expires, 0),
		IdleTimeout: ti.realm.IdleTimeout.D(),
	}
}

func (s *Store) encodeToken(ti *tokenInfo) string {
	b := make([]byte, 0, tokenFixedLen+2+len(ti.realm.Name)+len(ti.user.name)+tokenMACLen)
	b = append(b, tokenVersion)
	b = append(b, ti.id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(ti.issued))
	b = binary.BigEndian.AppendUint64(b, uint64(ti.idleUntil))
	b = binary.BigEndian.AppendUint64(b, uint64(ti.expires))
	b = append(b, byte(len(ti.realm.Name)))
	b = append(b, ti.realm.Name...)
	b = append(b, byte(len(ti.user.name)))
	b = append(b, ti.user.name...)
	sc := s.scratch.Get().(*tokenScratch)
	sc.mac.Reset()
	sc.mac.Write(b)
	b = sc.mac.Sum(b)
	s.scratch.Put(sc)
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseToken checks the signature and structure of a token and resolves
// its realm and user; it does not look at the time.
func (s *Store) parseToken(token string) (tokenInfo, error) {
	var ti tokenInfo
	if len(token) < (tokenMinLen*8+5)/6 || len(token) > tokenMaxChars {
		return ti, fmt.Errorf("%w: wrong length (%d characters)", ErrBadToken, len(token))
	}
	sc := s.scratch.Get().(*tokenScratch)
	defer s.scratch.Put(sc)
	n, ok := decodeB64URL(sc.buf[:], token)
	if !ok {
		return ti, fmt.Errorf("%w: not base64url", ErrBadToken)
	}
	if n < tokenMinLen {
		return ti, fmt.Errorf("%w: truncated", ErrBadToken)
	}
	body, mac := sc.buf[:n-tokenMACLen], sc.buf[n-tokenMACLen:n]
	sc.mac.Reset()
	sc.mac.Write(body)
	if !hmac.Equal(sc.mac.Sum(sc.sum[:0]), mac) {
		return ti, fmt.Errorf("%w: the signature does not match (the token was altered, or signed with another store's session_key)", ErrBadToken)
	}
	if body[0] != tokenVersion {
		return ti, fmt.Errorf("%w: unsupported version %d", ErrBadToken, body[0])
	}
	copy(ti.id[:], body[1:])
	p := body[1+tokenIDLen:]
	ti.issued = int64(binary.BigEndian.Uint64(p))
	ti.idleUntil = int64(binary.BigEndian.Uint64(p[8:]))
	ti.expires = int64(binary.BigEndian.Uint64(p[16:]))
	p = p[24:]
	realmName, p, ok := lenPrefixed(p)
	if !ok {
		return ti, fmt.Errorf("%w: malformed realm", ErrBadToken)
	}
	userName, p, ok := lenPrefixed(p)
	if !ok || len(p) != 0 {
		return ti, fmt.Errorf("%w: malformed user", ErrBadToken)
	}
	// Indexing a map with string(bytes) does not allocate.
	if ti.realm = s.realms[string(realmName)]; ti.realm == nil {
		return ti, fmt.Errorf("%w: realm %q of the session is not in this store", ErrBadToken, realmName)
	}
	if ti.user = s.users[string(userName)]; ti.user == nil {
		return ti, fmt.Errorf("%w: user %q of the session is no longer in the store", ErrUnknownUser, userName)
	}
	return ti, nil
}

func lenPrefixed(p []byte) (field, rest []byte, ok bool) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return nil, nil, false
	}
	return p[1 : 1+int(p[0])], p[1+int(p[0]):], true
}

// checkToken is parseToken plus everything that depends on the agent and
// the time.
func (s *Store) checkToken(a *agent, token string, now int64) (tokenInfo, error) {
	ti, err := s.parseToken(token)
	if err != nil {
		return ti, err
	}
	if ti.realm.agent != a {
		return ti, fmt.Errorf("%w: the session was issued for agent %q, not %q", ErrBadToken, ti.realm.Agent, a.Name)
	}
	if now >= ti.expires {
		return ti, fmt.Errorf("%w: max timeout reached at %s", ErrSessionExpired, time.Unix(ti.expires, 0).UTC().Format(time.RFC3339))
	}
	if now >= ti.idleUntil {
		return ti, fmt.Errorf("%w: idle timeout reached at %s", ErrSessionExpired, time.Unix(ti.idleUntil, 0).UTC().Format(time.RFC3339))
	}
	if s.sessions.count.Load() > 0 {
		s.sessions.mu.RLock()
		_, revoked := s.sessions.revoked[ti.id]
		s.sessions.mu.RUnlock()
		if revoked {
			return ti, fmt.Errorf("%w: session %x", ErrSessionRevoked, ti.id)
		}
	}
	return ti, nil
}

// refreshed returns a re-signed token with a new idle deadline when the one
// in ti has aged by SessionRefreshPeriod, "" otherwise.
func (s *Store) refreshed(ti tokenInfo, now int64) string {
	idle := int64(ti.realm.IdleTimeout.D() / time.Second)
	next := min(now+idle, ti.expires)
	if next-ti.idleUntil < int64(SessionRefreshPeriod/time.Second) {
		return ""
	}
	ti.idleUntil = next
	return s.encodeToken(&ti)
}

const b64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

var b64URLDecode = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(b64URLAlphabet); i++ {
		t[b64URLAlphabet[i]] = byte(i)
	}
	return t
}()

// decodeB64URL decodes unpadded base64url from a string without the copy
// that []byte(token) would make. Non-canonical encodings (stray low bits in
// the last character) are rejected, so that every change to a token's text
// changes its bytes and is caught by the signature.
func decodeB64URL(dst []byte, s string) (int, bool) {
	var acc uint32
	var bits uint
	n := 0
	for i := 0; i < len(s); i++ {
		v := b64URLDecode[s[i]]
		if v == 0xff {
			return 0, false
		}
		acc = acc<<6 | uint32(v)
		bits += 6
		if bits >= 8 {
			bits -= 8
			if n >= len(dst) {
				return 0, false
			}
			dst[n] = byte(acc >> bits)
			n++
		}
	}
	if bits >= 6 || acc&(1<<bits-1) != 0 {
		return 0, false
	}
	return n, true
}
