package policyserver

import (
	"strings"
	"testing"
)

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("Passw0rd1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "pbkdf2-sha256$10000$") || strings.Count(h, "$") != 3 {
		t.Errorf("hash %q", h)
	}
	h2, _ := HashPassword("Passw0rd1")
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	for _, c := range []struct {
		pw   string
		want bool
	}{{"Passw0rd1", true}, {"passw0rd1", false}, {"", false}, {"Passw0rd1 ", false}} {
		if ok, err := CheckPassword(h, c.pw); err != nil || ok != c.want {
			t.Errorf("CheckPassword(%q) = %v, %v", c.pw, ok, err)
		}
	}
}

func TestCheckPasswordBadHash(t *testing.T) {
	for _, h := range []string{
		"",
		"Passw0rd1",
		"{PLAIN}x",
		"pbkdf2-sha1$10000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"pbkdf2-sha256$10$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"pbkdf2-sha256$99999999$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"pbkdf2-sha256$10000$!!$aGFzaGhhc2hoYXNoaGFzaA",
		"pbkdf2-sha256$10000$c2FsdHNhbHQ$aGFzaA",
		"pbkdf2-sha256$10000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA$x",
	} {
		if ok, err := CheckPassword(h, "x"); err == nil || ok {
			t.Errorf("CheckPassword(%q) = %v, %v; want an error", h, ok, err)
		}
	}
}

func TestSeedPasswords(t *testing.T) {
	// The clear passwords in the seed's comments are the hashed ones.
	s := seedStore(t)
	for user, pw := range map[string]string{"user1": "Passw0rd1", "user2": "Passw0rd2"} {
		if !s.users[user].hash.check(pw) {
			t.Errorf("%s: %s does not match", user, pw)
		}
	}
	if !s.admin.hash.check("siteminder") {
		t.Error("admin: siteminder does not match")
	}
}
