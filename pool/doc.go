// Package pool is an agent process's sockets to its Policy Servers, after
// bootstrap: one pool of sockets per server of the HCO, and the choice of
// server for each request (DOMAIN.md sections 2, 5 and 6).
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
//   - RequestTimeout bounds a request, queueing included. A request that
//     times out, or whose socket fails, leaves its socket reset (RST): a late
//     answer would otherwise answer the next request. The server becomes
//     Failed, and its idle sockets of the same age or older are closed (FIN);
//     busy ones close when their request is done. Younger sockets stay.
//   - EnableFailover=yes sends everything to the first available server in
//     HCO order, no spreads requests round robin over the available ones.
//     A request whose socket failed goes once to the next server if it is
//     safe to repeat. Disabled and Failed servers are retried when no server
//     is available, and by CheckServers.
//
// Sockets carry the trace phase of what they do: PhaseHCO during Start,
// then PhaseManagement for DoManagement and PhaseRequests for the rest.
package pool
