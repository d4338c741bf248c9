package hla

import (
	"strings"

	"github.com/agentlab/agentlab/proto/tlipb"
)

// ManagementEvent is one management result relayed by the LLAWP.
type ManagementEvent struct {
	Code int
	Name string
	Arg  string
}

// Apply carries out a management event on the caches. The resource cache
// holds the realms' answers (IsProtected), the session cache the users'
// (Authorize), so a realm flush empties the first and a user flush the
// second. What the agent knows about each session (its user and its end)
// is kept: it grants nothing by itself, and without it no later decision
// for that session could be cached again.
func (a *Agent) Apply(cmd ManagementEvent) {
	ev := a.log.Info().Int("code", cmd.Code).Str("command", cmd.Name)
	switch tlipb.ManagementCode(cmd.Code) {
	case tlipb.ManagementCode_AFFILIATE_KEY, tlipb.ManagementCode_AGENT_KEY_NEXT, tlipb.ManagementCode_AGENT_KEY_LAST, tlipb.ManagementCode_AGENT_KEY_CURRENT, tlipb.ManagementCode_AGENT_KEY_PERSISTENT:
		// Agent keys encrypt the vendor's SMSESSION cookie; ours carries the
		// server's signed token as it is, so there is nothing to roll over.
		ev.Msg("Agent key command ignored: this agent does not encrypt cookies")
		return
	}
	a.flushGen.Add(1)
	switch tlipb.ManagementCode(cmd.Code) {
	case tlipb.ManagementCode_FLUSH_ALL:
		r, s := a.resources.Purge(), a.decisions.Purge()
		ev.Int("resources", r).Int("sessions", s).Msgf("Flushed all caches: %d resources, %d sessions.", r, s)
	case tlipb.ManagementCode_FLUSH_ALL_USERS:
		n := a.decisions.Purge()
		ev.Int("sessions", n).Msgf("Flushed the session cache: %d sessions.", n)
	case tlipb.ManagementCode_FLUSH_USER:
		dn := userDNOf(cmd.Arg)
		n := a.decisions.RemoveFunc(func(_ authzKey, d decision) bool { return d.userDN != "" && strings.EqualFold(d.userDN, dn) })
		ev.Str("user_dn", dn).Int("sessions", n).Msgf("Flushed user %s from the session cache: %d sessions.", dn, n)
	case tlipb.ManagementCode_FLUSH_ALL_REALMS:
		n := a.resources.Purge()
		ev.Int("resources", n).Msgf("Flushed the resource cache: %d resources.", n)
	case tlipb.ManagementCode_FLUSH_REALM:
		realm := cmd.Arg
		r := a.resources.RemoveFunc(func(_ resourceKey, res resourceInfo) bool { return res.realm == realm })
		// A decision was taken under the realm's rules, which may have
		// changed too.
		s := a.decisions.RemoveFunc(func(_ authzKey, d decision) bool { return d.realm == realm })
		ev.Str("realm", realm).Int("resources", r).Int("sessions", s).Msgf("Flushed realm %s: %d resources, %d sessions.", realm, r, s)
	default:
		a.log.Warn().Int("code", cmd.Code).Str("command", cmd.Name).Str("arg", cmd.Arg).Msgf("Unknown management command %s (%d) ignored.", cmd.Name, cmd.Code)
		return
	}
	a.c.flushes.Add(1)
}

// userDNOf takes the DN out of the vendor's "dirOid/userDN" argument. DNs
// have no '/' of their own in the stores we know, and a directory oid has
// no '=': so the prefix goes only when it cannot be part of a DN.
func userDNOf(arg string) string {
	if i := strings.IndexByte(arg, '/'); i >= 0 && !strings.Contains(arg[:i], "=") {
		return arg[i+1:]
	}
	return arg
}
