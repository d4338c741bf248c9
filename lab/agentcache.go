package lab

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/agentlab/agentlab/conf"
	"github.com/agentlab/agentlab/labs"
)

// StoreFile is the store a run writes, in its folder, when the lab sets
// the agent cache.
const StoreFile = "store.yaml"

// The agent cache settings a lab may ask for.
const (
	AgentCacheOn  = "on"
	AgentCacheOff = "off"
)

// CheckAgentCache checks an agent_cache value: on, off, or empty.
func CheckAgentCache(v string) error {
	switch v {
	case "", AgentCacheOn, AgentCacheOff:
		return nil
	}
	return fmt.Errorf("%q: want on or off", v)
}

// storeACOsKey is the store's list of ACOs (docs/store.md); its items are
// conf.ACO, which the lab reads and writes through conf's own type.
const storeACOsKey = "acos"

// agentCacheStore returns the store the Policy Servers load, with the web
// server's ACO turned to the lab's agent cache setting, or nil data when
// the store's ACO says so already: the agent learns the setting from the
// ACO, as the vendor's does, and the trace's ACO response shows what the
// agent was told. "on" gives the resource and session
// caches the vendor's default size for the model (700 entries on IIS, 750
// on Apache) unless the store gives them one; "off" sets both sizes to 0,
// which turns them off (DOMAIN.md section 2).
// The store is the lab's (store:) or the embedded seed store; storeName
// names it in errors.
func agentCacheStore(l *Lab) (data []byte, storeName string, err error) {
	w := l.WebServer
	storeName, data = "labs/seed-store.yaml (embedded)", labs.SeedStore
	if l.Store != "" {
		storeName = l.Store
		if !filepath.IsAbs(storeName) {
			storeName = filepath.Join(l.Dir, storeName)
		}
		if data, err = os.ReadFile(storeName); err != nil {
			return nil, storeName, fmt.Errorf("web_server.agent_cache: %w", err)
		}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, storeName, fmt.Errorf("web_server.agent_cache: store %s: %w", storeName, err)
	}
	item, err := findACO(&root, w.AgentConfigObject)
	if err != nil {
		return nil, storeName, fmt.Errorf("web_server.agent_cache: store %s: %w", storeName, err)
	}
	var aco conf.ACO
	if err := item.Decode(&aco); err != nil {
		return nil, storeName, fmt.Errorf("web_server.agent_cache: store %s: ACO %s: %w", storeName, w.AgentConfigObject, err)
	}
	already := aco.MaxResourceCacheSize == 0 && aco.MaxSessionCacheSize == 0
	if w.AgentCache == AgentCacheOn {
		already = aco.MaxResourceCacheSize > 0 && aco.MaxSessionCacheSize > 0 && aco.ResourceCacheTimeout > 0
	}
	if already {
		return nil, storeName, nil
	}
	switch w.AgentCache {
	case AgentCacheOff:
		aco.MaxResourceCacheSize, aco.MaxSessionCacheSize = 0, 0
	case AgentCacheOn:
		size := conf.DefaultCacheSizeIIS
		if w.Model == "apache" {
			size = conf.DefaultCacheSizeApache
		}
		if aco.MaxResourceCacheSize == 0 {
			aco.MaxResourceCacheSize = size
		}
		if aco.MaxSessionCacheSize == 0 {
			aco.MaxSessionCacheSize = size
		}
		if aco.ResourceCacheTimeout == 0 {
			aco.ResourceCacheTimeout = conf.DefaultACO().ResourceCacheTimeout
		}
	}
	var changed yaml.Node
	if err := changed.Encode(aco); err != nil {
		return nil, storeName, err
	}
	changed.HeadComment = fmt.Sprintf("agent_cache: %s (written by agentlab run from %s)", w.AgentCache, storeName)
	*item = changed
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, storeName, err
	}
	return b.Bytes(), storeName, enc.Close()
}

// findACO finds the item of the store's ACO list named name.
func findACO(root *yaml.Node, name string) (*yaml.Node, error) {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("not a mapping")
	}
	top := root.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value != storeACOsKey || top.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		for _, item := range top.Content[i+1].Content {
			var named struct {
				Name string `yaml:"name"`
			}
			if item.Decode(&named) == nil && named.Name == name {
				return item, nil
			}
		}
	}
	return nil, fmt.Errorf("no ACO %q in its %s", name, storeACOsKey)
}
