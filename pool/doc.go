// Package pool is an agent process's sockets to its Policy Servers, after
// bootstrap: one pool of sockets per server of the HCO, the choice of
// server for each request, and the servers' states (DOMAIN.md sections 2,
// 5 and 6).
//
// The vendor's rules it follows, because they are what a learner watches in
// a capture:
//
//   - Start opens MinSocketsPerPort sockets to every server, each with its
//     own handshake (the trusted host name shows in clear every time), and
//     fetches the ACO over the first one.
//   - One request at a time per socket. A request takes the lowest-numbered
//     idle socket, so traffic keeps to the oldest sockets. When none is idle,
//     NewSocketStep more are opened at once, never beyond MaxSocketsPerPort;
//     past that, up to MaxQueue requests wait in line and the next one fails
//     at once (ErrQueueFull).
//   - RequestTimeout bounds each try of a request on one server, queueing
//     included. A request that times out, or whose socket fails, leaves its
//     socket reset (RST): a late answer would otherwise answer the next
//     request. The server becomes Failed, and its idle sockets of the same
//     age or older are closed (FIN); busy ones close when their request is
//     done. Younger sockets stay.
//   - A request that got no answer within RequestTimeout is sent again on
//     a new connection, MaxResends times at most (DOMAIN.md section 9):
//     to the next server up, else to the same server, whose retry is a
//     new socket. With a slow server this is the build-up: every resend
//     leaves a request behind in the server's queue and adds a socket.
//     The trace tells it: the timed-out socket's TCP Reset carries
//     Event.Timeout, the resend's Request Event.Resend.
//
// # Selection
//
// The rule is a pure function of the servers' states and response times
// (select.go), one of:
//
//   - EnableFailover=yes: every request to the first server that is up, in
//     HCO order.
//   - EnableFailover=no: round robin over the servers that are up, one turn
//     per request.
//   - Clusters (the HCO lists any): they replace the PolicyServer entries,
//     which are not used at all, and EnableFailover does not apply. The
//     cluster in use is the first, in HCO order, whose servers that are up
//     number at least ceil(FailoverThreshold% x its size), and at least
//     one: with 0 % a cluster is used while any of its servers is up, with
//     100 % only while all are. When every cluster is below, the first with
//     any server up is used. Inside it, the request goes to the server with
//     the lowest response time, an EWMA of its answers (weight 0.3 for the
//     latest); a server not measured yet comes first so that it gets
//     measured, and its measure starts again each time it comes back up.
//     A server that gets no requests keeps its last measure.
//
// When a try fails, the request goes to the next choice the rule gives
// (the rule is asked again: the failed server is no longer up), each server
// once at most. IsProtected, Authorize, DoManagement, Logout and the HCO
// phase's requests are safe to send again; a Login is sent again only if
// it never left the agent: no socket could be opened, the server failed
// while it queued, or its socket was found closed by the server before the
// request was written (a Login looks at the socket first, without reading
// it, so that a server stopped or killed since the last request does not
// swallow it). A Login written to a socket that then fails or times out is
// never sent again: it may have opened a session. Servers that are not up
// come last in every order: they are retried by a request only when no
// server that is up is left.
//
// CallTimeout is the longest a request can then take: RequestTimeout for
// each try. hla and llawp bound their calls with it, not with
// RequestTimeout, or a request would not live to see its retry.
//
// # States
//
// The vendor's four (DOMAIN.md section 6), as Stats and the trace give them:
//
//   - Active: up, and the selection gives it new requests (the first server
//     up under failover; every server up under round robin; every server
//     up in the cluster in use).
//   - Inactive: up, and another server gets the new requests (a backup
//     while the primary is up; the servers of a cluster not in use). Its
//     sockets stay open and idle; it is the next choice for a retry.
//   - Disabled: down at start (no socket could be opened). It is retried,
//     unlike in older agents that kept such a server Failed for good.
//   - Failed: it was up, then a socket to it broke (reset, closed, refused
//     at a new socket with none left), or it did not answer within
//     RequestTimeout.
//
// Transitions: Active <-> Inactive as the selection changes its mind
// (another server goes down or comes back). Active or Inactive -> Failed
// on an error or a RequestTimeout. Disabled or Failed -> Active or
// Inactive when a new socket to it completes its handshake; an answer on
// an old socket does not count, it may answer a request sent before the
// failure. Disabled stays Disabled when a retry fails, Failed stays Failed.
//
// # Health poll
//
// Start runs CheckServers every Config.HealthPollInterval (30 s by default,
// the vendor's "about every 30 s") on a goroutine that Close stops and
// waits for. The interval is a setting of the process (hla and llawp
// --health-poll), not of the HCO or the ACO: the vendor documents no
// object parameter for it, and PSPollInterval, the ACO's poll, is the
// management poll, a different thing; a lab that wants a quick recovery
// passes the flag, and a negative value shows the older agents that never
// retried. For a server that is Disabled or Failed it closes the sockets
// from before the failure and opens new ones, up to MinSocketsPerPort; the
// first that completes its handshake makes the server up again. For a
// server that is up it closes the idle sockets the server has closed (its
// idle timeout, or it went away) and opens new ones up to
// MinSocketsPerPort (sockets above that were the pool's growth under load,
// and come back only when the load does); if the server refuses them all,
// it is Failed: that is how a server that dies
// while it takes no request (a backup, a cluster not in use) is found.
// Between polls, a request that finds no server up retries the others
// itself.
//
// Recovery, precisely: the recovered server's new sockets take the new
// requests as soon as the selection prefers it (with EnableFailover=yes, a
// recovered primary at once). Requests already in flight on other servers
// finish there; the sockets to those servers stay open and idle (Inactive)
// or go on sharing the traffic (round robin), and are closed only by the
// usual rules: an error, Close, or the server's own idle timeout (then the
// next health poll replaces them). An Apache prefork child is a pool of
// its own: each finds the recovery by its own poll.
//
// # Trace
//
// Every state change is a trace event (trace.OpServerState, "Server
// State") on no connection, naming the server as a connection's remote
// end does (remote: its address, remote_host: its lab name) and saying
// what changed and why in its note:
//
//	smps1.shared.lab:44443 Active -> Failed: no answer within RequestTimeout 60s
//	smps2.shared.lab:44443 Inactive -> Active: new requests go to smps2.shared.lab:44443, the first server up in HCO order
//	smps1.shared.lab:44443 Failed -> Active: socket 5 connected (health poll)
//	smps2.shared.lab:44443 Active -> Inactive: new requests go to smps1.shared.lab:44443, the first server up in HCO order
//
// At the end of Start, one event per server gives the state it starts in,
// without an arrow ("smps1.shared.lab:44443 Disabled: down at start: ...",
// "smps2.shared.lab:44443 Active: up at start; new requests go to ...");
// these are in phase hco, the later ones in phase requests. A server's
// health changes come first, in the order they happened, then the changes
// the selection makes of them. The same changes go to the log at info
// (warn for Failed and Disabled).
//
// Sockets carry the trace phase of what they do: PhaseHCO during Start,
// then PhaseManagement for DoManagement and PhaseRequests for the rest.
package pool
