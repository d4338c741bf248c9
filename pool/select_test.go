package pool

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/agentlab/agentlab/proto/tlipb"
)

func cands(states ...State) []candidate {
	out := make([]candidate, len(states))
	for i, s := range states {
		out[i] = candidate{index: i, state: s}
	}
	return out
}

func TestFailoverOrder(t *testing.T) {
	tests := []struct {
		name   string
		states []State
		want   []int
	}{
		{"first server gets everything", []State{Active, Active, Active}, []int{0, 1, 2}},
		{"failed primary: next in HCO order", []State{Failed, Active, Active}, []int{1, 2, 0}},
		{"disabled primary: next in HCO order", []State{Disabled, Active}, []int{1, 0}},
		{"only the last available", []State{Failed, Disabled, Active}, []int{2, 0, 1}},
		{"none available: unavailable ones in HCO order", []State{Failed, Disabled}, []int{0, 1}},
		{"one server", []State{Active}, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sel failover
			for range 3 { // no state between requests
				if got := sel.order(cands(tt.states...)); !slices.Equal(got, tt.want) {
					t.Fatalf("order = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestRoundRobinOrder(t *testing.T) {
	tests := []struct {
		name   string
		states []State
		want   [][]int // successive requests
	}{
		{"two servers alternate", []State{Active, Active},
			[][]int{{0, 1}, {1, 0}, {0, 1}, {1, 0}}},
		{"three servers in turn", []State{Active, Active, Active},
			[][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 1, 2}}},
		{"an unavailable server is skipped, and tried last", []State{Active, Failed, Active},
			[][]int{{0, 2, 1}, {2, 0, 1}, {0, 2, 1}}},
		{"one available server gets everything", []State{Disabled, Active},
			[][]int{{1, 0}, {1, 0}}},
		{"none available: unavailable ones in HCO order", []State{Failed, Failed},
			[][]int{{0, 1}, {0, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel := &roundRobin{}
			for i, want := range tt.want {
				if got := sel.order(cands(tt.states...)); !slices.Equal(got, want) {
					t.Fatalf("request %d: order = %v, want %v", i+1, got, want)
				}
			}
		})
	}
}

func TestRetrySafe(t *testing.T) {
	tests := []struct {
		req  *tlipb.Request
		want bool
	}{
		{isProtected("/"), true},
		{&tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_DoManagement{DoManagement: &tlipb.DoManagementRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_GetAgentConfig{GetAgentConfig: &tlipb.GetAgentConfigRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_SetAgentInfo{SetAgentInfo: &tlipb.SetAgentInfoRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_Logout{Logout: &tlipb.LogoutRequest{}}}, true},
		{&tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{}}}, false},
		{&tlipb.Request{Body: &tlipb.Request_RegisterHost{RegisterHost: &tlipb.RegisterHostRequest{}}}, false},
		{&tlipb.Request{}, false},
	}
	for _, tt := range tests {
		if got := retrySafe(tt.req); got != tt.want {
			t.Errorf("retrySafe(%T) = %v, want %v", tt.req.GetBody(), got, tt.want)
		}
	}
}

func TestResult(t *testing.T) {
	tests := []struct {
		err  error
		want tlipb.Result
	}{
		{nil, tlipb.Result_SUCCESS},
		{newError("x", nil, ErrTimeout), tlipb.Result_TIMEOUT},
		{newError("x", nil, ErrQueueFull, ErrNoConnection), tlipb.Result_NOCONNECTION},
		{fmt.Errorf("wrapped: %w", errClosed), tlipb.Result_NOCONNECTION},
		{errors.New("encoding"), tlipb.Result_FAILURE},
	}
	for _, tt := range tests {
		if got := Result(tt.err); got != tt.want {
			t.Errorf("Result(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Active: "Active", Disabled: "Disabled", Failed: "Failed", State(7): "State(7)"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", int(s), s.String(), want)
		}
	}
}
