package policyserver

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestIsProtected(t *testing.T) {
	s := seedStore(t)
	cases := []struct {
		agent, resource string
		realm           string
		protected       bool
		err             error
	}{
		{"wa1", "/", "realm.public", false, nil},
		{"wa1", "/index.html", "realm.public", false, nil},
		{"wa1", "/protected/", "realm.protected", true, nil},
		{"wa1", "/protected/admin/users.html?x=1", "realm.protected", true, nil},
		{"wa1", "/protected", "realm.public", false, nil}, // no trailing slash: the prefix does not match
		{"wa1", "/forms/page", "realm.forms", true, nil},
		{"wa1", "/formsx", "realm.public", false, nil},
		{"wa1", "/public/../protected/x", "", false, ErrBadResource},
		{"wa1", "/protected//x", "", false, ErrBadResource},
		{"wa1", "protected/x", "", false, ErrBadResource},
		{"wa1", "/q?a=/../b", "realm.public", false, nil}, // the query is not a path
		{"wa9", "/protected/", "", false, ErrUnknownAgent},
	}
	for _, c := range cases {
		r, p, err := s.IsProtected(c.agent, c.resource, "GET")
		if !errors.Is(err, c.err) || r.Name != c.realm || p != c.protected {
			t.Errorf("IsProtected(%q, %q) = %q, %v, %v; want %q, %v, %v", c.agent, c.resource, r.Name, p, err, c.realm, c.protected, c.err)
		}
	}
}

func TestIsProtectedNoRealm(t *testing.T) {
	text := strings.Replace(base, "resource_prefix: /protected/", "resource_prefix: /p/", 1)
	s, err := ParseStore("store.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	r, p, err := s.IsProtected("wa1", "/other", "GET")
	if err != nil || p || r.Name != "" {
		t.Errorf("no realm: got %+v, %v, %v", r, p, err)
	}
}

func login(t testing.TB, s *Store, realm, user, pw string, now time.Time) Session {
	t.Helper()
	sess, err := s.Login("wa1", realm, user, pw, now)
	if err != nil {
		t.Fatalf("Login(%s, %s): %v", realm, user, err)
	}
	return sess
}

func TestAuthorize(t *testing.T) {
	s := seedStore(t)
	now := time.Now()
	user1 := login(t, s, "realm.protected", "user1", "Passw0rd1", now).Token
	user2 := login(t, s, "realm.protected", "user2", "Passw0rd2", now).Token
	user1Forms := login(t, s, "realm.forms", "user1", "Passw0rd1", now).Token
	staffHeaders := []Header{{"SM_USER", "user1"}, {"SM_USERDN", "uid=user1,ou=People,dc=shared,dc=lab"}}
	cases := []struct {
		name            string
		token, resource string
		action          string
		allowed         bool
		policy, reason  string
		headers         []Header
	}{
		{"staff GET", user1, "/protected/index.html", "GET", true, "policy.staff", `allowed by policy "policy.staff"`, staffHeaders},
		{"staff POST admin", user1, "/protected/admin/x", "POST", true, "policy.staff", "", staffHeaders},
		{"staff forms", user1, "/forms/a", "GET", true, "policy.staff", "", staffHeaders},
		{"staff DELETE", user1, "/protected/x", "DELETE", false, "", "no policy allows user1 to DELETE /protected/x", nil},
		{"action case", user1, "/protected/x", "get", true, "policy.staff", "", staffHeaders},
		{"sso from forms realm", user1Forms, "/protected/x", "GET", true, "policy.staff", "", staffHeaders},
		{"contractor GET", user2, "/protected/x", "GET", true, "policy.contractors", "", []Header{{"SM_USER", "user2"}, {"SM_USERDN", "uid=user2,ou=People,dc=shared,dc=lab"}}},
		{"contractor POST", user2, "/protected/x", "POST", false, "", "no policy allows", nil},
		{"contractor admin denied", user2, "/protected/admin/index.html", "GET", false, "policy.contractors.no-admin", `denied by policy "policy.contractors.no-admin"`, nil},
		{"contractor forms", user2, "/forms/x", "GET", false, "", "no policy allows", nil},
		{"unprotected", user2, "/index.html", "GET", true, "", "resource is not protected", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := s.Authorize("wa1", c.token, c.resource, c.action, now)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != c.allowed || d.Policy != c.policy || !strings.Contains(d.Reason, c.reason) || !reflect.DeepEqual(d.Headers, c.headers) {
				t.Errorf("got %+v\nwant allowed=%v policy=%q reason~%q headers=%v", d, c.allowed, c.policy, c.reason, c.headers)
			}
			if d.Token != "" {
				t.Errorf("fresh token refreshed: %q", d.Token)
			}
		})
	}
}

func TestAuthorizeHeaders(t *testing.T) {
	text := strings.Replace(base, `      SM_USER: "%user"`, `      SM_USER: "cn=%user"
      X-Realm: "%realm is 100%% %userdn"`, 1)
	text += `  - name: policy.second
    users: ["*"]
    rules: [rule.all]
    responses:
      SM_USER: ignored
      X-Realm: ignored
      X-Second: "2"
`
	s, err := ParseStore("store.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := login(t, s, "realm.protected", "user1", "Passw0rd1", now).Token
	d, err := s.Authorize("wa1", tok, "/protected/x", "GET", now)
	if err != nil {
		t.Fatal(err)
	}
	want := []Header{
		{"SM_USER", "cn=user1"},
		{"X-Realm", "realm.protected is 100% uid=user1,ou=People,dc=shared,dc=lab"},
		{"X-Second", "2"},
	}
	if !d.Allowed || d.Policy != "policy.staff" || !reflect.DeepEqual(d.Headers, want) {
		t.Errorf("got %+v, want headers %v", d, want)
	}
}

func TestAuthorizeTokenErrors(t *testing.T) {
	s := seedStore(t)
	now := time.Now()
	sess := login(t, s, "realm.protected", "user1", "Passw0rd1", now)

	other, err := ParseStore("other.yaml", []byte(strings.Replace(base, "a064d02230", "b064d02230", 1)))
	if err != nil {
		t.Fatal(err)
	}
	foreign := login(t, other, "realm.protected", "user1", "Passw0rd1", now).Token

	tampered := []byte(sess.Token)
	mid := len(tampered) / 2
	tampered[mid] = map[bool]byte{true: 'B', false: 'A'}[tampered[mid] == 'A']

	loggedOut := login(t, s, "realm.protected", "user1", "Passw0rd1", now).Token
	if err := s.Logout(loggedOut); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, agent, token string
		at                 time.Time
		err                error
		reason             string
	}{
		{"tampered", "wa1", string(tampered), now, ErrBadToken, "signature does not match"},
		{"truncated", "wa1", sess.Token[:len(sess.Token)-8], now, ErrBadToken, ""},
		{"garbage", "wa1", strings.Repeat("!", 120), now, ErrBadToken, "not base64url"},
		{"empty", "wa1", "", now, ErrBadToken, "wrong length"},
		{"other store key", "wa1", foreign, now, ErrBadToken, "another store's session_key"},
		{"idle", "wa1", sess.Token, now.Add(time.Hour + time.Second), ErrSessionExpired, "idle timeout"},
		{"expired", "wa1", sess.Token, now.Add(3 * time.Hour), ErrSessionExpired, "max timeout"},
		{"logged out", "wa1", loggedOut, now, ErrSessionRevoked, "logged out"},
		{"unknown agent", "wa9", sess.Token, now, ErrUnknownAgent, "wa9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := s.Authorize(c.agent, c.token, "/protected/x", "GET", c.at)
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.reason) {
				t.Errorf("err = %v, want %v containing %q", err, c.err, c.reason)
			}
			if d.Allowed {
				t.Error("allowed")
			}
		})
	}
	// Every single-character change is caught, the last one included
	// (its low bits carry no data in unpadded base64).
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range sess.Token {
		for _, ch := range []byte{alphabet[(strings.IndexByte(alphabet, sess.Token[i])+1)%64]} {
			b := []byte(sess.Token)
			b[i] = ch
			if _, err := s.Authorize("wa1", string(b), "/protected/x", "GET", now); err == nil {
				t.Fatalf("changing character %d was not detected", i)
			}
		}
	}
	// The original still works: the failures above changed nothing.
	if d, err := s.Authorize("wa1", sess.Token, "/protected/x", "GET", now); err != nil || !d.Allowed {
		t.Errorf("good token after failures: %+v, %v", d, err)
	}
}

func TestAuthorizeWrongAgent(t *testing.T) {
	text := base + `  - name: policy.wa2
    users: ["*"]
    rules: [rule.wa2]
`
	text = strings.Replace(text, "agents:\n", "agents:\n  - name: wa2\n    aco: aco.wa1\n", 1)
	text = strings.Replace(text, "rules:\n  - name: rule.all", "rules:\n  - name: rule.wa2\n    realm: realm.wa2\n    resource: \"*\"\n    actions: [\"*\"]\n  - name: rule.all", 1)
	text = strings.Replace(text, "realms:\n", "realms:\n  - name: realm.wa2\n    agent: wa2\n    resource_prefix: /\n", 1)
	s, err := ParseStore("store.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := login(t, s, "realm.protected", "user1", "Passw0rd1", now).Token
	if _, err := s.Authorize("wa2", tok, "/x", "GET", now); !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), `issued for agent "wa1", not "wa2"`) {
		t.Errorf("err = %v", err)
	}
	if _, err := s.Login("wa2", "realm.protected", "user1", "Passw0rd1", now); !errors.Is(err, ErrUnknownRealm) {
		t.Errorf("login to another agent's realm: %v", err)
	}
}

func TestAuthorizeRefresh(t *testing.T) {
	s := seedStore(t)
	now := time.Now()
	sess := login(t, s, "realm.protected", "user1", "Passw0rd1", now)
	later := now.Add(50 * time.Minute)
	d, err := s.Authorize("wa1", sess.Token, "/protected/x", "GET", later)
	if err != nil || d.Token == "" {
		t.Fatalf("no refreshed token: %+v, %v", d, err)
	}
	// The old token dies at its idle deadline; the refreshed one lives on,
	// but never past the max timeout.
	at := now.Add(70 * time.Minute)
	if _, err := s.Authorize("wa1", sess.Token, "/protected/x", "GET", at); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("old token: %v", err)
	}
	if d, err := s.Authorize("wa1", d.Token, "/protected/x", "GET", at); err != nil || !d.Allowed {
		t.Errorf("refreshed token: %+v, %v", d, err)
	}
	v, err := s.ValidateSession("wa1", d.Token, at)
	if err != nil || v.Expires.Unix() != sess.Expires.Unix() || v.ID != sess.ID || v.User != "user1" {
		t.Errorf("refreshed session %+v, %v; want the same id and max timeout as %+v", v, err, sess)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"/a/*", "/a/", true},
		{"/a/*", "/a/b/c?d", true},
		{"/a/*", "/a", false},
		{"/a/*.html", "/a/b/c.html", true},
		{"/a/*.html", "/a/b/c.htm", false},
		{"*", "", true},
		{"/x", "/x", true},
		{"/x", "/xy", false},
		{"/*/b/*", "/a/b/c", true},
		{"/*/b/*", "/a/c/b", false},
		{"**a", "bbba", true},
	} {
		if got := globMatch(c.p, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

func BenchmarkIsProtected(b *testing.B) {
	s := seedStore(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, p, err := s.IsProtected("wa1", "/protected/index.html", "GET"); err != nil || !p {
				b.Fatal(p, err)
			}
		}
	})
}

func BenchmarkAuthorize(b *testing.B) {
	s := seedStore(b)
	now := time.Now()
	tok := login(b, s, "realm.protected", "user1", "Passw0rd1", now).Token
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d, err := s.Authorize("wa1", tok, "/protected/index.html", "GET", now); err != nil || !d.Allowed {
				b.Fatal(d, err)
			}
		}
	})
}

func BenchmarkLogin(b *testing.B) {
	s := seedStore(b)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		login(b, s, "realm.protected", "user1", "Passw0rd1", now)
	}
}
