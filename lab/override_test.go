package lab

import (
	"reflect"
	"testing"
	"time"
)

func TestOverride(t *testing.T) {
	seed := WebServer{Host: "wa1.shared.lab", Model: "iis", HTTPPort: 8080}
	apache := WebServer{Host: "wa1.shared.lab", Model: "apache", Workers: 2, MPM: "worker", HealthPoll: Duration(time.Second), AgentCache: AgentCacheOn}
	tests := []struct {
		name string
		lab  WebServer
		f    WebServerFlags
		want WebServer
	}{
		{"no flags: the lab's", seed, WebServerFlags{}, seed},
		{"--model apache gets 3 children", seed, WebServerFlags{Model: "apache"},
			WebServer{Host: "wa1.shared.lab", Model: "apache", Workers: 3, HTTPPort: 8080}},
		{"the lab's Apache children stay", apache, WebServerFlags{MaxRequestsPerChild: 100, ACOFromLLAWP: true}, func() WebServer {
			w := apache
			w.MaxRequestsPerChild, w.ACOFromLLAWP = 100, true
			return w
		}()},
		{"every flag", apache, WebServerFlags{Model: "apache", MPM: "prefork", Workers: 5, HealthPoll: 2 * time.Second, AgentCache: AgentCacheOff},
			WebServer{Host: "wa1.shared.lab", Model: "apache", Workers: 5, MPM: "prefork", HealthPoll: Duration(2 * time.Second), AgentCache: AgentCacheOff}},
		{"--model iis leaves the lab's workers alone", apache, WebServerFlags{Model: "iis"}, func() WebServer {
			w := apache
			w.Model = "iis"
			return w
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.lab
			w.Override(tt.f)
			if !reflect.DeepEqual(w, tt.want) {
				t.Errorf("got  %+v\nwant %+v", w, tt.want)
			}
		})
	}
}
