package policyserver

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentlab/agentlab/proto/tlipb"
)

func TestDirectorySpec(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       Directory
	}{
		{"none", "", Directory{LoginLookups: 1, AuthorizeLookups: 1}},
		{"all", "directory:\n  latency: 800ms\n  jitter: 50ms\n  lookups_per_login: 2\n  lookups_per_authorize: 3\n",
			Directory{Latency: 800 * time.Millisecond, Jitter: 50 * time.Millisecond, LoginLookups: 2, AuthorizeLookups: 3}},
		{"no lookups", "directory:\n  latency: 5ms\n  lookups_per_authorize: 0\n",
			Directory{Latency: 5 * time.Millisecond, LoginLookups: 1, AuthorizeLookups: 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, err := ParseStore("store.yaml", []byte(strings.Replace(base, "realms:", c.yaml+"realms:", 1)))
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Directory(); got != c.want {
				t.Errorf("Directory() = %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestDirectoryWait: a Login waits its lookups times the latency, give or
// take the jitter per lookup; IsProtected waits nothing; a cancel ends the
// wait at once.
func TestDirectoryWait(t *testing.T) {
	login := &tlipb.Request{Body: &tlipb.Request_Login{Login: &tlipb.LoginRequest{}}}
	authz := &tlipb.Request{Body: &tlipb.Request_Authorize{Authorize: &tlipb.AuthorizeRequest{}}}
	isp := &tlipb.Request{Body: &tlipb.Request_IsProtected{IsProtected: &tlipb.IsProtectedRequest{}}}
	d := Directory{Jitter: 10 * time.Millisecond, LoginLookups: 2, AuthorizeLookups: 3}
	cases := []struct {
		req      *tlipb.Request
		lat      time.Duration
		min, max time.Duration
	}{
		{login, 100 * time.Millisecond, 180 * time.Millisecond, 220 * time.Millisecond},
		{authz, 100 * time.Millisecond, 270 * time.Millisecond, 330 * time.Millisecond},
		{isp, 100 * time.Millisecond, 0, 0},
		{login, 0, 0, 20 * time.Millisecond}, // jitter never goes below zero
	}
	for i, c := range cases {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			got, err := d.wait(t.Context(), d.lookups(c.req), c.lat)
			if err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); got < c.min || got > c.max || el != got {
				t.Errorf("case %d: waited %s (said %s), want %s to %s", i, el, got, c.min, c.max)
			}
		})
	}
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		got, err := d.wait(ctx, 2, time.Second)
		if err == nil || got != 50*time.Millisecond {
			t.Errorf("cancelled wait: %s, %v; want 50ms and an error", got, err)
		}
	})
}
