package policyserver

import (
	"strings"
	"testing"
	"time"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
)

// TestDispatch walks the requests of the seed's scenario over real sessions,
// in order: later steps use the sessions and commands earlier ones made.
func TestDispatch(t *testing.T) {
	ls := runLiveServer(t, nil)
	agent := ls.dial(t)
	admin := ls.dialAdmin(t)

	req := func(body any) func() *tlipb.Request {
		return func() *tlipb.Request {
			r := &tlipb.Request{}
			switch b := body.(type) {
			case *tlipb.GetHostConfigRequest:
				r.Body = &tlipb.Request_GetHostConfig{GetHostConfig: b}
			case *tlipb.GetAgentConfigRequest:
				r.Body = &tlipb.Request_GetAgentConfig{GetAgentConfig: b}
			case *tlipb.SetAgentInfoRequest:
				r.Body = &tlipb.Request_SetAgentInfo{SetAgentInfo: b}
			case *tlipb.IsProtectedRequest:
				r.Body = &tlipb.Request_IsProtected{IsProtected: b}
			case *tlipb.LoginRequest:
				r.Body = &tlipb.Request_Login{Login: b}
			case *tlipb.DoManagementRequest:
				r.Body = &tlipb.Request_DoManagement{DoManagement: b}
			case *tlipb.RegisterHostRequest:
				r.Body = &tlipb.Request_RegisterHost{RegisterHost: b}
			case *tlipb.QueueManagementRequest:
				r.Body = &tlipb.Request_QueueManagement{QueueManagement: b}
			case nil:
			default:
				t.Fatalf("no request body for %T", body)
			}
			return r
		}
	}
	var token1, token2 string
	authorize := func(token *string, resource string) func() *tlipb.Request {
		return func() *tlipb.Request {
			return &tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{
				AgentName: "wa1", SessionToken: *token, Resource: resource, Action: "GET"}}}
		}
	}
	logout := func(token *string) func() *tlipb.Request {
		return func() *tlipb.Request {
			return &tlipb.Request{Body: &tlipb.Request_Logout{Logout: &tlipb.LogoutRequest{AgentName: "wa1", SessionToken: *token}}}
		}
	}
	garbage := strings.Repeat("A", 120)
	var badLoginMsg string
	mgmt := &tlipb.ManagementCommand{Code: uint32(tlipb.ManagementCode_FLUSH_ALL)}
	var newSecret []byte

	// message checks a FAILURE (or NO, CHALLENGE) reason.
	message := func(parts ...string) func(*testing.T, *tlipb.Response) {
		return func(t *testing.T, r *tlipb.Response) {
			for _, p := range parts {
				if !strings.Contains(r.Message, p) {
					t.Errorf("message %q does not say %q", r.Message, p)
				}
			}
		}
	}
	commands := func(want ...*tlipb.ManagementCommand) func(*testing.T, *tlipb.Response) {
		return func(t *testing.T, r *tlipb.Response) {
			got := r.GetDoManagement().GetCommands()
			if r.GetDoManagement() == nil || len(got) != len(want) {
				t.Fatalf("commands %v, want %v", got, want)
			}
			for i := range want {
				if got[i].Code != want[i].Code || got[i].Name != want[i].Name || got[i].Arg != want[i].Arg {
					t.Errorf("command %d = %v, want %v", i, got[i], want[i])
				}
			}
		}
	}
	login := func(user, pw string) func() *tlipb.Request {
		return req(&tlipb.LoginRequest{AgentName: "wa1", Realm: "realm.protected", User: user, Password: pw})
	}
	const needsAdmin = "needs an administrator session"
	const needsAgent = "needs a trusted host session"

	steps := []struct {
		name  string
		conn  *tli.Client
		req   func() *tlipb.Request
		want  tlipb.Result
		check func(*testing.T, *tlipb.Response)
	}{
		{"GetHostConfig hco.smps1", agent, req(&tlipb.GetHostConfigRequest{Name: "hco.smps1"}), tlipb.Result_SUCCESS,
			func(t *testing.T, r *tlipb.Response) {
				h := r.GetHostConfig()
				if h.GetName() != "hco.smps1" || !h.GetEnableFailover() || h.GetMinSocketsPerPort() != 2 || h.GetNewSocketStep() != 2 ||
					h.GetMaxSocketsPerPort() != 20 || h.GetRequestTimeoutSeconds() != 60 {
					t.Errorf("HCO %v", h)
				}
				ps := h.GetPolicyServers()
				if len(ps) != 1 || ps[0].Host != "smps1.shared.lab" || ps[0].AccountingPort != 44441 ||
					ps[0].AuthenticationPort != 44442 || ps[0].AuthorizationPort != 44443 {
					t.Errorf("policy servers %v, want smps1.shared.lab,44441,44442,44443 only", ps)
				}
			}},
		{"GetHostConfig unknown", agent, req(&tlipb.GetHostConfigRequest{Name: "hco.nowhere"}), tlipb.Result_FAILURE,
			message("unknown host configuration object 'hco.nowhere'")},
		{"GetAgentConfig aco.wa1", agent, req(&tlipb.GetAgentConfigRequest{Name: "aco.wa1"}), tlipb.Result_SUCCESS,
			func(t *testing.T, r *tlipb.Response) {
				a := r.GetAgentConfig()
				if a.GetName() != "aco.wa1" || a.GetDefaultAgentName() != "wa1" || a.GetPsPollIntervalSeconds() != 30 ||
					a.GetMaxResourceCacheSize() != 0 || a.GetMaxSessionCacheSize() != 0 {
					t.Errorf("ACO %v", a)
				}
			}},
		{"GetAgentConfig unknown", agent, req(&tlipb.GetAgentConfigRequest{Name: "aco.nowhere"}), tlipb.Result_FAILURE,
			message("unknown agent configuration object 'aco.nowhere'")},
		{"SetAgentInfo", agent, req(&tlipb.SetAgentInfoRequest{AgentName: "wa1", Info: "Product=WebAgent,Version=12.52", Pid: 4242, Role: "llawp"}), tlipb.Result_SUCCESS,
			func(t *testing.T, r *tlipb.Response) {
				e := ls.waitLog(t, agent.Conn().LocalAddr().String(), "Agent info: Product=WebAgent,Version=12.52")
				if e.str("agent") != "wa1" || e.num("agent_pid") != 4242 || e.str("agent_role") != "llawp" {
					t.Errorf("log %v", e)
				}
			}},
		{"IsProtected /", agent, req(&tlipb.IsProtectedRequest{AgentName: "wa1", Resource: "/", Action: "GET"}), tlipb.Result_NO,
			func(t *testing.T, r *tlipb.Response) {
				if r.Body != nil {
					t.Errorf("body %v for an unprotected resource", r.Body)
				}
			}},
		{"IsProtected /protected/index.html", agent, req(&tlipb.IsProtectedRequest{AgentName: "wa1", Resource: "/protected/index.html", Action: "GET"}), tlipb.Result_YES,
			func(t *testing.T, r *tlipb.Response) {
				p := r.GetIsProtected()
				realm, _ := ls.store.Realm("realm.protected")
				if p.GetRealm() != "realm.protected" || p.GetAuthScheme() != AuthBasic || p.GetLoginUrl() != "" || p.GetRealmOid() != realm.OID {
					t.Errorf("got %v, want realm.protected, basic, OID %s", p, realm.OID)
				}
			}},
		{"IsProtected /forms/x", agent, req(&tlipb.IsProtectedRequest{AgentName: "wa1", Resource: "/forms/x", Action: "POST"}), tlipb.Result_YES,
			func(t *testing.T, r *tlipb.Response) {
				p := r.GetIsProtected()
				if p.GetRealm() != "realm.forms" || p.GetAuthScheme() != AuthForms || p.GetLoginUrl() != "/siteminderagent/forms/login.fcc" {
					t.Errorf("got %v", p)
				}
			}},
		{"IsProtected path with ..", agent, req(&tlipb.IsProtectedRequest{AgentName: "wa1", Resource: "/public/../protected/x", Action: "GET"}), tlipb.Result_FAILURE,
			message("bad resource")},
		{"IsProtected unknown agent", agent, req(&tlipb.IsProtectedRequest{AgentName: "wa9", Resource: "/", Action: "GET"}), tlipb.Result_FAILURE,
			message("unknown agent", "wa9")},

		{"Login user1", agent, login("user1", "Passw0rd1"), tlipb.Result_SUCCESS,
			func(t *testing.T, r *tlipb.Response) {
				l := r.GetLogin()
				token1 = l.GetSessionToken()
				if token1 == "" || l.GetUserDn() != "uid=user1,ou=People,dc=shared,dc=lab" || l.GetIdleTimeoutSeconds() != 3600 ||
					time.Until(time.Unix(l.GetExpiresUnix(), 0)) < time.Hour {
					t.Errorf("login %v", l)
				}
			}},
		{"Login bad password", agent, login("user1", "Passw0rd2"), tlipb.Result_FAILURE,
			func(t *testing.T, r *tlipb.Response) {
				badLoginMsg = r.Message
				if r.Body != nil || strings.Contains(r.Message, "user1") || strings.Contains(r.Message, "password") {
					t.Errorf("response %v says too much", r)
				}
				// The reason goes to the server log.
				e := ls.waitLog(t, agent.Conn().LocalAddr().String(), "Login failed")
				if e.str("user") != "user1" || !strings.Contains(e.str("error"), "bad password") {
					t.Errorf("log %v", e)
				}
			}},
		// The same answer as a bad password: a client must not learn
		// which user names exist.
		{"Login unknown user", agent, login("mallory", "Passw0rd1"), tlipb.Result_FAILURE,
			func(t *testing.T, r *tlipb.Response) {
				if r.Message != badLoginMsg || r.Body != nil {
					t.Errorf("unknown user: %v; bad password said %q", r, badLoginMsg)
				}
			}},
		{"Login user2", agent, login("user2", "Passw0rd2"), tlipb.Result_SUCCESS,
			func(t *testing.T, r *tlipb.Response) { token2 = r.GetLogin().GetSessionToken() }},

		{"Authorize user1 /protected/", agent, authorize(&token1, "/protected/"), tlipb.Result_YES,
			func(t *testing.T, r *tlipb.Response) {
				a := r.GetAuthorize()
				hs := map[string]string{}
				for _, h := range a.GetHeaders() {
					hs[h.Name] = h.Value
				}
				if hs["SM_USER"] != "user1" || hs["SM_USERDN"] != "uid=user1,ou=People,dc=shared,dc=lab" || a.GetPolicy() != "policy.staff" {
					t.Errorf("authorize %v", a)
				}
			}},
		{"Authorize user2 /protected/", agent, authorize(&token2, "/protected/"), tlipb.Result_YES,
			func(t *testing.T, r *tlipb.Response) {
				if hs := r.GetAuthorize().GetHeaders(); len(hs) == 0 || hs[0].Name != "SM_USER" || hs[0].Value != "user2" {
					t.Errorf("headers %v", hs)
				}
			}},
		{"Authorize user2 /protected/admin/", agent, authorize(&token2, "/protected/admin/"), tlipb.Result_NO,
			func(t *testing.T, r *tlipb.Response) {
				if r.Body != nil {
					t.Errorf("a refusal carries %v", r.Body)
				}
			}},
		{"Authorize garbage token", agent, authorize(&garbage, "/protected/"), tlipb.Result_CHALLENGE, message("invalid session token")},
		// A valid session asking for a path that is not one must not be
		// sent back to the login page: logging in again cannot fix it.
		{"Authorize path with ..", agent, authorize(&token1, "/public/../protected/x"), tlipb.Result_FAILURE, message("bad resource")},
		{"Authorize unknown agent", agent, func() *tlipb.Request {
			return &tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{
				AgentName: "wa9", SessionToken: token1, Resource: "/protected/", Action: "GET"}}}
		}, tlipb.Result_FAILURE, message("unknown agent", "wa9")},
		{"Logout user1", agent, logout(&token1), tlipb.Result_SUCCESS, nil},
		{"Authorize after logout", agent, authorize(&token1, "/protected/"), tlipb.Result_CHALLENGE, message("logged out")},
		{"Authorize user2 after user1's logout", agent, authorize(&token2, "/protected/"), tlipb.Result_YES, nil},

		{"DoManagement empty", agent, req(&tlipb.DoManagementRequest{AgentName: "wa1", Command: "GET_AGENT_COMMANDS"}), tlipb.Result_SUCCESS, commands()},
		{"QueueManagement", admin, req(&tlipb.QueueManagementRequest{AdminUser: "siteminder", AdminPassword: "siteminder", AgentName: "wa1", Command: mgmt}), tlipb.Result_SUCCESS,
			func(t *testing.T, r *tlipb.Response) {
				ls.waitLog(t, admin.Conn().LocalAddr().String(), "Queued management command FLUSH_ALL")
			}},
		{"DoManagement gets the command", agent, req(&tlipb.DoManagementRequest{AgentName: "wa1"}), tlipb.Result_SUCCESS,
			commands(&tlipb.ManagementCommand{Code: uint32(tlipb.ManagementCode_FLUSH_ALL), Name: "FLUSH_ALL"})},
		{"DoManagement once only", agent, req(&tlipb.DoManagementRequest{AgentName: "wa1"}), tlipb.Result_SUCCESS, commands()},
		{"QueueManagement bad admin password", admin, req(&tlipb.QueueManagementRequest{AdminUser: "siteminder", AdminPassword: "guess", AgentName: "wa1", Command: mgmt}), tlipb.Result_FAILURE,
			message("bad administrator credentials")},
		{"QueueManagement unknown agent", admin, req(&tlipb.QueueManagementRequest{AdminUser: "siteminder", AdminPassword: "siteminder", AgentName: "wa9", Command: mgmt}), tlipb.Result_FAILURE,
			message("unknown agent", "wa9")},
		{"QueueManagement unknown code", admin, req(&tlipb.QueueManagementRequest{AdminUser: "siteminder", AdminPassword: "siteminder", AgentName: "wa1", Command: &tlipb.ManagementCommand{Code: 5}}), tlipb.Result_FAILURE,
			message("unknown management command")},
		{"QueueManagement over an agent session", agent, req(&tlipb.QueueManagementRequest{AdminUser: "siteminder", AdminPassword: "siteminder", AgentName: "wa1", Command: mgmt}), tlipb.Result_FAILURE,
			message("QueueManagement " + needsAdmin)},
		{"DoManagement after refused queueing", agent, req(&tlipb.DoManagementRequest{AgentName: "wa1"}), tlipb.Result_SUCCESS, commands()},

		{"RegisterHost bad admin", admin, req(&tlipb.RegisterHostRequest{AdminUser: "siteminder", AdminPassword: "guess", TrustedHost: "trust_wa2", HostConfigObject: "hco.smps1"}), tlipb.Result_FAILURE,
			func(t *testing.T, r *tlipb.Response) {
				message("bad administrator credentials")(t, r)
				ls.waitLog(t, admin.Conn().LocalAddr().String(), "Registration refused: bad administrator credentials")
				if _, ok := ls.store.TrustedHost("trust_wa2"); ok {
					t.Error("registered with bad credentials")
				}
			}},
		{"RegisterHost over an agent session", agent, req(&tlipb.RegisterHostRequest{AdminUser: "siteminder", AdminPassword: "siteminder", TrustedHost: "trust_wa2", HostConfigObject: "hco.smps1"}), tlipb.Result_FAILURE,
			func(t *testing.T, r *tlipb.Response) {
				message("RegisterHost "+needsAdmin)(t, r)
				if _, ok := ls.store.TrustedHost("trust_wa2"); ok {
					t.Error("registered over an agent session")
				}
			}},
		{"RegisterHost", admin, req(&tlipb.RegisterHostRequest{AdminUser: "siteminder", AdminPassword: "siteminder", TrustedHost: "trust_wa2", HostConfigObject: "hco.both"}), tlipb.Result_SUCCESS,
			func(t *testing.T, r *tlipb.Response) {
				rh := r.GetRegisterHost()
				newSecret = rh.GetSharedSecret()
				if len(newSecret) != SharedSecretLen || rh.GetHostConfigObject() != "hco.both" {
					t.Errorf("registration %v", rh)
				}
			}},
		{"RegisterHost again without overwrite", admin, req(&tlipb.RegisterHostRequest{AdminUser: "siteminder", AdminPassword: "siteminder", TrustedHost: "trust_wa2", HostConfigObject: "hco.smps1"}), tlipb.Result_FAILURE,
			message("already registered")},
		{"RegisterHost unknown HCO", admin, req(&tlipb.RegisterHostRequest{AdminUser: "siteminder", AdminPassword: "siteminder", TrustedHost: "trust_wa3", HostConfigObject: "hco.nowhere"}), tlipb.Result_FAILURE,
			message("hco.nowhere")},

		{"agent request over an admin session", admin, req(&tlipb.IsProtectedRequest{AgentName: "wa1", Resource: "/protected/", Action: "GET"}), tlipb.Result_FAILURE,
			message("IsProtected GET /protected/ " + needsAgent)},
		{"DoManagement over an admin session", admin, req(&tlipb.DoManagementRequest{AgentName: "wa1"}), tlipb.Result_FAILURE, message(needsAgent)},
		{"empty request", agent, req(nil), tlipb.Result_FAILURE, message("unknown request")},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			resp, err := liveDo(st.conn, st.req())
			if err != nil {
				t.Fatalf("%v", err)
			}
			if resp.Result != st.want {
				t.Fatalf("result %v %q, want %v", resp.Result, resp.Message, st.want)
			}
			if st.check != nil {
				st.check(t, resp)
			}
		})
	}

	// Refusals are answers, not protocol errors: both sessions are still
	// up, and the host registered over the wire can connect at once.
	mustPing(t, agent, "agent session after the whole walk")
	if n := ls.srv.Conns(); n != 2 {
		t.Errorf("Conns() = %d, want the 2 sessions", n)
	}
	if newSecret != nil {
		c := ls.dialWith(t, tli.ClientConfig{TrustedHost: "trust_wa2", Secret: newSecret, HandshakeTimeout: liveWait})
		mustPing(t, c, "trust_wa2 after its registration")
	}
	if hs := ls.log.find(t, "", "Handshake error"); len(hs) != 0 {
		t.Errorf("handshake errors: %v", hs)
	}
}
