package policyserver

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/agentlab/agentlab/proto/tlipb"
	"github.com/agentlab/agentlab/tli"
)

// Agent sessions may ask everything but administration; administrator
// sessions (smreghost, agentlab mgmt) may ask only administration, and each
// of their requests carries the admin's credentials.
func (s *Server) dispatch(ctx context.Context, sc *tli.ServerConn, req *tlipb.Request, log zerolog.Logger) *tlipb.Response {
	switch b := req.Body.(type) {
	case *tlipb.Request_RegisterHost:
		if !sc.Admin {
			return failure("RegisterHost needs an administrator session")
		}
		return s.registerHost(ctx, b.RegisterHost, log)
	case *tlipb.Request_QueueManagement:
		if !sc.Admin {
			return failure("QueueManagement needs an administrator session")
		}
		return s.queueManagement(b.QueueManagement, log)
	}
	if sc.Admin {
		return failure(tli.Describe(req) + " needs a trusted host session")
	}
	return Answer(s.cfg.Store, req, s.cfg.Now(), log)
}

// Answer is the Policy Server's answer to an agent's request (all but
// administration), from st at time now; log gets what the server logs.
// Server answers its trusted host sessions with it, and tests that stand
// in for a server answer with it too, so that they answer as it does.
func Answer(st *Store, req *tlipb.Request, now time.Time, log zerolog.Logger) *tlipb.Response {
	switch b := req.Body.(type) {
	case *tlipb.Request_GetHostConfig:
		hco, ok := st.HCO(b.GetHostConfig.Name)
		if !ok {
			log.Warn().Msgf("Unknown host configuration object '%s'", b.GetHostConfig.Name)
			return failure("unknown host configuration object " + quote(b.GetHostConfig.Name))
		}
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_HostConfig{HostConfig: hco.Proto()}}
	case *tlipb.Request_GetAgentConfig:
		aco, ok := st.ACO(b.GetAgentConfig.Name)
		if !ok {
			log.Warn().Msgf("Unknown agent configuration object '%s'", b.GetAgentConfig.Name)
			return failure("unknown agent configuration object " + quote(b.GetAgentConfig.Name))
		}
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_AgentConfig{AgentConfig: aco.Proto()}}
	case *tlipb.Request_SetAgentInfo:
		i := b.SetAgentInfo
		log.Info().Str("agent", i.AgentName).Uint32("agent_pid", i.Pid).Str("agent_role", i.Role).Msgf("Agent info: %s", i.Info)
		return &tlipb.Response{Result: tlipb.Result_SUCCESS}
	case *tlipb.Request_IsProtected:
		r := b.IsProtected
		realm, protected, err := st.IsProtected(r.AgentName, r.Resource, r.Action)
		if err != nil {
			return failure(err.Error())
		}
		if !protected {
			return &tlipb.Response{Result: tlipb.Result_NO}
		}
		return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_IsProtected{IsProtected: &tlipb.IsProtectedResponse{
			Realm: realm.Name, AuthScheme: realm.AuthScheme, LoginUrl: realm.LoginURL, RealmOid: realm.OID,
		}}}
	case *tlipb.Request_Login:
		r := b.Login
		sess, err := st.Login(r.AgentName, r.Realm, r.User, r.Password, now)
		if err != nil {
			// The reason goes to the server log only: telling a client
			// whether the user exists would help an attacker.
			log.Info().Str("user", r.User).Str("realm", r.Realm).Err(err).Msg("Login failed")
			return &tlipb.Response{Result: tlipb.Result_FAILURE, Message: "login failed"}
		}
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_Login{Login: &tlipb.LoginResponse{
			SessionToken: sess.Token, UserDn: sess.UserDN, ExpiresUnix: sess.Expires.Unix(),
			IdleTimeoutSeconds: uint32(sess.IdleTimeout.Seconds()),
		}}}
	case *tlipb.Request_Authorize:
		r := b.Authorize
		d, err := st.Authorize(r.AgentName, r.SessionToken, r.Resource, r.Action, now)
		// A request no session could pass is refused: a challenge would
		// send the user to a login that cannot fix it, again and again.
		if errors.Is(err, ErrBadResource) || errors.Is(err, ErrUnknownAgent) {
			return failure(err.Error())
		}
		if err != nil {
			// An invalid or expired session sends the user back to the
			// challenge, as the vendor's agent does.
			return &tlipb.Response{Result: tlipb.Result_CHALLENGE, Message: err.Error()}
		}
		if !d.Allowed {
			return &tlipb.Response{Result: tlipb.Result_NO, Message: d.Reason}
		}
		hs := make([]*tlipb.Header, len(d.Headers))
		for i, h := range d.Headers {
			hs[i] = &tlipb.Header{Name: h.Name, Value: h.Value}
		}
		return &tlipb.Response{Result: tlipb.Result_YES, Body: &tlipb.Response_Authorize{Authorize: &tlipb.AuthorizeResponse{Headers: hs, Policy: d.Policy, SessionToken: d.Token}}}
	case *tlipb.Request_Logout:
		st.Logout(b.Logout.SessionToken)
		return &tlipb.Response{Result: tlipb.Result_SUCCESS}
	case *tlipb.Request_DoManagement:
		cmds := st.Drain(b.DoManagement.AgentName)
		out := make([]*tlipb.ManagementCommand, len(cmds))
		for i, c := range cmds {
			out[i] = &tlipb.ManagementCommand{Code: uint32(c.Code), Name: c.Name, Arg: c.Arg}
		}
		if len(out) > 0 {
			log.Info().Str("agent", b.DoManagement.AgentName).Int("commands", len(out)).Msg("Management commands sent")
		}
		return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_DoManagement{DoManagement: &tlipb.DoManagementResponse{Commands: out}}}
	}
	return failure("unknown request")
}

func (s *Server) registerHost(ctx context.Context, r *tlipb.RegisterHostRequest, log zerolog.Logger) *tlipb.Response {
	if err := s.cfg.Store.CheckAdmin(r.AdminUser, r.AdminPassword); err != nil {
		log.Warn().Str("admin", r.AdminUser).Msg("Registration refused: bad administrator credentials")
		return failure("bad administrator credentials")
	}
	th, err := s.cfg.Store.RegisterHost(ctx, r.TrustedHost, r.HostConfigObject, r.Overwrite, r.SharedSecret)
	if err != nil {
		log.Warn().Err(err).Msgf("Registration of trusted host '%s' refused", r.TrustedHost)
		return failure(err.Error())
	}
	log.Info().Msgf("Registered trusted host '%s' with host configuration object '%s'", th.Name, th.HCO)
	return &tlipb.Response{Result: tlipb.Result_SUCCESS, Body: &tlipb.Response_RegisterHost{RegisterHost: &tlipb.RegisterHostResponse{
		SharedSecret: th.Secret, HostConfigObject: th.HCO,
	}}}
}

func (s *Server) queueManagement(r *tlipb.QueueManagementRequest, log zerolog.Logger) *tlipb.Response {
	if err := s.cfg.Store.CheckAdmin(r.AdminUser, r.AdminPassword); err != nil {
		return failure("bad administrator credentials")
	}
	if r.Command == nil {
		return failure("no management command")
	}
	cmd, err := NewManagementCommand(int(r.Command.Code), r.Command.Arg)
	if err != nil {
		return failure(err.Error())
	}
	if err := s.cfg.Store.Enqueue(r.AgentName, cmd); err != nil {
		return failure(err.Error())
	}
	log.Info().Str("agent", r.AgentName).Msgf("Queued management command %s", cmd.Name)
	return &tlipb.Response{Result: tlipb.Result_SUCCESS}
}

func failure(msg string) *tlipb.Response {
	return &tlipb.Response{Result: tlipb.Result_FAILURE, Message: msg}
}

func quote(s string) string { return "'" + s + "'" }
