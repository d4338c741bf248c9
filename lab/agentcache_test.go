package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/agentlab/yamlfile"

	"github.com/agentlab/agentlab/conf"
)

// storeACO reads the ACO named name back from a store's bytes.
func storeACO(t *testing.T, data []byte, name string) conf.ACO {
	t.Helper()
	f, err := yamlfile.Parse("written store", data)
	if err != nil {
		t.Fatalf("the written store does not parse: %v\n%s", err, data)
	}
	acos, i, err := findACO(f, name)
	if err != nil {
		t.Fatal(err)
	}
	var aco conf.ACO
	if err := f.Decode(acos.Values[i], &aco); err != nil {
		t.Fatal(err)
	}
	return aco
}

func TestAgentCacheStore(t *testing.T) {
	own := filepath.Join(t.TempDir(), "store.yaml")
	// A lab's own store, its ACO with a cache size and a poll of its own.
	if err := os.WriteFile(own, []byte("# kept\nacos:\n  - name: aco.mine\n    ps_poll_interval: 12\n    max_resource_cache_size: 50\n    max_session_cache_size: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, store, model, aco, cache string
		resources, sessions            int
		poll                           int // seconds, to show the rest of the ACO is kept
		err                            string
	}{
		{"seed store, off as it is", "", "iis", "aco.wa1", AgentCacheOff, -1, -1, 0, ""},
		{"seed store, on, IIS", "", "iis", "aco.wa1", AgentCacheOn, conf.DefaultCacheSizeIIS, conf.DefaultCacheSizeIIS, 30, ""},
		{"seed store, on, Apache", "", "apache", "aco.wa1", AgentCacheOn, conf.DefaultCacheSizeApache, conf.DefaultCacheSizeApache, 30, ""},
		{"own store, on keeps its size", own, "iis", "aco.mine", AgentCacheOn, 50, conf.DefaultCacheSizeIIS, 12, ""},
		{"own store, off", own, "iis", "aco.mine", AgentCacheOff, 0, 0, 12, ""},
		{"no such ACO", "", "iis", "aco.nope", AgentCacheOn, 0, 0, 0, `no ACO "aco.nope" in its acos`},
		{"no such store", filepath.Join(t.TempDir(), "missing.yaml"), "iis", "aco.wa1", AgentCacheOn, 0, 0, 0, "missing.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &Lab{Store: tt.store, WebServer: WebServer{Model: tt.model, AgentConfigObject: tt.aco, AgentCache: tt.cache}}
			data, from, err := agentCacheStore(l)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "agent_cache") {
					t.Fatalf("error %v, want one about agent_cache saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.resources < 0 {
				if data != nil {
					t.Errorf("the store was rewritten although its ACO has the setting already:\n%s", data)
				}
				return
			}
			if tt.store != "" && from != tt.store {
				t.Errorf("store named %q, want %q", from, tt.store)
			}
			aco := storeACO(t, data, tt.aco)
			if aco.MaxResourceCacheSize != tt.resources || aco.MaxSessionCacheSize != tt.sessions || int(aco.PSPollInterval.D().Seconds()) != tt.poll {
				t.Errorf("ACO %+v, want cache sizes %d and %d, PSPollInterval %ds", aco, tt.resources, tt.sessions, tt.poll)
			}
			if tt.store == "" && !strings.Contains(string(data), "hco.smps1") {
				t.Error("the rest of the seed store is gone")
			}
			if tt.store == own && !strings.Contains(string(data), "# kept") {
				t.Error("the store's comments are gone")
			}
		})
	}
}

func TestCheckAgentCache(t *testing.T) {
	for _, v := range []string{"", "on", "off"} {
		if err := CheckAgentCache(v); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	for _, v := range []string{"yes", "ON", "0"} {
		if err := CheckAgentCache(v); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}
