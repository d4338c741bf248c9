package trace

import (
	"fmt"
	"strings"
)

// Events as the producers record them, for hand-made traces: each writes
// the note a person reads and the fields the renderers read, as tli, pool
// and Conn fill both. A fixture's arguments are in the producers' words.

// fxRequest is a Request event; request is as tli describes it, the call
// then what it names: "IsProtected GET /".
func fxRequest(request string) Event {
	call, subject, _ := strings.Cut(request, " ")
	return Event{Op: OpRequest, Note: request, Request: call, Subject: subject}
}

// fxResponse is the Response to request; answer is what tli writes after
// the request: "<RESULT>[ (<body>)][ - <message>]".
func fxResponse(request, answer string) Event {
	e := fxRequest(request)
	e.Op, e.Note = OpResponse, request+": "+answer
	rest, msg, _ := strings.Cut(answer, " - ")
	res, body, _ := strings.Cut(rest, " (")
	e.Result, e.Body, e.Message = res, strings.TrimSuffix(body, ")"), msg
	return e
}

// fxHandshake is a handshake message (a Handshake constant) and its note.
func fxHandshake(msg, note string) Event { return Event{Op: OpHandshake, Handshake: msg, Note: note} }

// fxRefused is a HandshakeError, sent or received.
func fxRefused(code int, message string) Event {
	return Event{Op: OpHandshake, Handshake: HandshakeError, Code: code, Message: message, Note: fmt.Sprintf("refused: %d %s", code, message)}
}

// fxFailed is a TCP Connect that failed with errText, as the system says
// it ("connect: connection refused").
func fxFailed(errText string) Event {
	return Event{Op: OpConnect, Note: "failed: " + errText, Error: strings.TrimPrefix(errText, "connect: ")}
}

// fxPeer is the peer's close, seen by this end: a FIN (TCP Disconnect) or
// an RST (TCP Reset).
func fxPeer(op string) Event {
	note := NoteClosedByPeer
	if op == OpReset {
		note = NoteResetByPeer
	}
	return Event{Op: op, Note: note, Peer: true}
}

// fxState is a pool's Server State event for server (host:port): from ""
// is the state it starts in; err the error that has it down at start.
func fxState(server, from, to, why, err string) Event {
	if err != "" {
		why = "down at start: " + err
	}
	note := fmt.Sprintf("%s %s -> %s: %s", server, from, to, why)
	if from == "" {
		note = fmt.Sprintf("%s %s: %s", server, to, why)
	}
	return Event{Op: OpServerState, Note: note, State: &ServerState{Server: server, From: from, To: to, Why: why, Err: err}}
}
