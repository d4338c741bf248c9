package fault

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestClient(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get(ControlHeader))
		mu.Unlock()
		switch r.URL.Path {
		case "/faults/reset":
			json.NewEncoder(w).Encode(Result{Done: "reset 2 connections", Reset: 2, State: State{Accept: "accepting"}})
		case "/faults/resume":
			w.Write([]byte(`{"state": {}}`)) // no done: not what smps answers
		default:
			http.Error(w, "smps control: no", http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	c := Client{Addr: strings.TrimPrefix(srv.URL, "http://"), Name: "smps1 (pid 7)"}
	// A listener closed at once: nothing answers there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	cases := []struct {
		client Client
		action Action
		done   string
		err    string
		sent   string // the request the server saw; "" for none
	}{
		{c, Action{Kind: Reset}, "reset 2 connections", "", "POST /faults/reset 1"},
		{c, Action{Kind: StopAccepting, Queue: true}, "", `smps1 (pid 7) refused "stop-accepting queue": smps control: no`, "POST /faults/stop-accepting?mode=queue 1"},
		{c, Action{Kind: Resume}, "", `smps1 (pid 7): unreadable control answer "{\"state\": {}}"`, "POST /faults/resume 1"},
		// The lab's own actions never reach smps.
		{c, Action{Kind: Kill}, "", `smps1 (pid 7): unknown fault "kill"`, ""},
		{c, Action{Kind: Stall}, "", "smps1 (pid 7): stall 0s: want a positive duration", ""},
		{Client{Addr: closed, Name: "smps2 (pid 8)"}, Action{Kind: Reset}, "", "control API of smps2 (pid 8) at " + closed + ": ", ""},
	}
	for _, tc := range cases {
		mu.Lock()
		got = nil
		mu.Unlock()
		res, err := tc.client.Apply(context.Background(), tc.action)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error saying %q", tc.action, err, tc.err)
			}
		} else if err != nil || res.Done != tc.done {
			t.Errorf("%s: %+v, %v; want done %q", tc.action, res, err, tc.done)
		}
		mu.Lock()
		if sent := strings.Join(got, "\n"); sent != tc.sent {
			t.Errorf("%s: the server saw %q, want %q", tc.action, sent, tc.sent)
		}
		mu.Unlock()
	}
}
