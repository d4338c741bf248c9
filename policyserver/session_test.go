package policyserver

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLogin(t *testing.T) {
	s := seedStore(t)
	now := time.Unix(1_800_000_000, 0)
	cases := []struct {
		name, agent, realm, user, pw string
		err                          error
		why                          string
	}{
		{"good", "wa1", "realm.protected", "user1", "Passw0rd1", nil, ""},
		{"forms realm", "wa1", "realm.forms", "user2", "Passw0rd2", nil, ""},
		{"bad password", "wa1", "realm.protected", "user1", "Passw0rd2", ErrBadPassword, `bad password for user "user1"`},
		{"unknown user", "wa1", "realm.protected", "user9", "Passw0rd1", ErrUnknownUser, `unknown user "user9"`},
		{"unknown realm", "wa1", "realm.nope", "user1", "Passw0rd1", ErrUnknownRealm, `realm.nope`},
		{"unprotected realm", "wa1", "realm.public", "user1", "Passw0rd1", ErrNotProtected, `realm.public`},
		{"unknown agent", "wa9", "realm.protected", "user1", "Passw0rd1", ErrUnknownAgent, `"wa9"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sess, err := s.Login(c.agent, c.realm, c.user, c.pw, now)
			if c.err != nil {
				if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.why) {
					t.Errorf("err = %v, want %v containing %q", err, c.err, c.why)
				}
				if sess.Token != "" {
					t.Error("a failed login returned a token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sess.Token == "" || len(sess.ID) != 32 || sess.User != c.user || sess.Realm != c.realm || sess.Agent != "wa1" {
				t.Errorf("session %+v", sess)
			}
			if sess.UserDN != "uid="+c.user+",ou=People,dc=shared,dc=lab" {
				t.Errorf("UserDN %q", sess.UserDN)
			}
			if !sess.Issued.Equal(now) || !sess.IdleUntil.Equal(now.Add(time.Hour)) || !sess.Expires.Equal(now.Add(2*time.Hour)) || sess.IdleTimeout != time.Hour {
				t.Errorf("session times %+v", sess)
			}
			v, err := s.ValidateSession("wa1", sess.Token, now.Add(time.Minute))
			if err != nil || v != sess {
				t.Errorf("ValidateSession = %+v, %v; want %+v", v, err, sess)
			}
		})
	}
}

func TestSessionsAreShared(t *testing.T) {
	// Two servers loading the same store accept each other's sessions.
	smps1, smps2 := seedStore(t), seedStore(t)
	now := time.Now()
	tok := login(t, smps1, "realm.protected", "user1", "Passw0rd1", now).Token
	d, err := smps2.Authorize("wa1", tok, "/protected/x", "GET", now)
	if err != nil || !d.Allowed {
		t.Errorf("smps2: %+v, %v", d, err)
	}
}

func TestLogout(t *testing.T) {
	s := seedStore(t)
	now := time.Now()
	a := login(t, s, "realm.protected", "user1", "Passw0rd1", now).Token
	b := login(t, s, "realm.protected", "user1", "Passw0rd1", now).Token
	if err := s.Logout(a); err != nil {
		t.Fatal(err)
	}
	if err := s.Logout(a); err != nil {
		t.Errorf("second logout: %v", err)
	}
	if _, err := s.ValidateSession("wa1", a, now); !errors.Is(err, ErrSessionRevoked) {
		t.Errorf("logged-out session: %v", err)
	}
	if _, err := s.ValidateSession("wa1", b, now); err != nil {
		t.Errorf("another session of the same user: %v", err)
	}
	if err := s.Logout("nonsense"); !errors.Is(err, ErrBadToken) {
		t.Errorf("logout of a bad token: %v", err)
	}
}

func TestLogoutPrunes(t *testing.T) {
	s := seedStore(t)
	// Sessions that expired long ago go when the set is pruned; the one
	// logged out last, still alive, stays.
	old := time.Now().Add(-10 * time.Hour)
	for range 1100 {
		ti := tokenInfo{realm: s.realms["realm.protected"], user: s.users["user1"], issued: old.Unix(), idleUntil: old.Unix() + 1, expires: old.Unix() + 2}
		ti.id[0], ti.id[1] = byte(len(s.sessions.revoked)), byte(len(s.sessions.revoked)>>8)
		if err := s.Logout(s.encodeToken(&ti)); err != nil {
			t.Fatal(err)
		}
	}
	live := login(t, s, "realm.protected", "user1", "Passw0rd1", time.Now()).Token
	if err := s.Logout(live); err != nil {
		t.Fatal(err)
	}
	if n := s.sessions.count.Load(); n >= 1100 {
		t.Errorf("revocation set not pruned: %d entries", n)
	}
	if _, err := s.ValidateSession("wa1", live, time.Now()); !errors.Is(err, ErrSessionRevoked) {
		t.Errorf("live logged-out session: %v", err)
	}
}

func TestDecodeB64URL(t *testing.T) {
	var buf [8]byte
	for _, c := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"", "", true},
		{"YQ", "a", true},
		{"YR", "", false}, // stray low bits
		{"YWI", "ab", true},
		{"YWJj", "abc", true},
		{"Y", "", false},
		{"YW=", "", false},
		{"YWJjZGVmZ2hpag", "", false}, // longer than the buffer
	} {
		n, ok := decodeB64URL(buf[:], c.in)
		if ok != c.ok || (ok && string(buf[:n]) != c.want) {
			t.Errorf("decode(%q) = %q, %v", c.in, buf[:n], ok)
		}
	}
}
