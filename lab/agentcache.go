package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"

	"github.com/agentlab/agentlab/yamlfile"

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
	switch {
	case l.Store != "" && l.Embedded && !filepath.IsAbs(l.Store):
		storeName = "labs/" + l.Store + " (embedded)"
		if data, err = labs.Store(l.Store); err != nil {
			return nil, storeName, fmt.Errorf("web_server.agent_cache: %w", err)
		}
	case l.Store != "":
		storeName = l.Store
		if !filepath.IsAbs(storeName) {
			storeName = filepath.Join(l.Dir, storeName)
		}
		if data, err = os.ReadFile(storeName); err != nil {
			return nil, storeName, fmt.Errorf("web_server.agent_cache: %w", err)
		}
	}
	f, err := yamlfile.Parse(storeName, data)
	if err != nil {
		return nil, storeName, fmt.Errorf("web_server.agent_cache: %w", err)
	}
	acos, idx, err := findACO(f, w.AgentConfigObject)
	if err != nil {
		return nil, storeName, fmt.Errorf("web_server.agent_cache: store %s: %w", storeName, err)
	}
	var aco conf.ACO
	if err := f.Decode(acos.Values[idx], &aco); err != nil {
		return nil, storeName, fmt.Errorf("web_server.agent_cache: ACO %s: %w", w.AgentConfigObject, err)
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
	// Only the ACO's item changes: the rest of the store, its comments
	// included, is printed as it was written.
	changed, err := yaml.ValueToNode(aco)
	if err != nil {
		return nil, storeName, fmt.Errorf("web_server.agent_cache: ACO %s: %w", w.AgentConfigObject, err)
	}
	if err := acos.Replace(idx, changed); err != nil {
		return nil, storeName, fmt.Errorf("web_server.agent_cache: ACO %s: %w", w.AgentConfigObject, err)
	}
	if len(acos.ValueHeadComments) != len(acos.Values) {
		acos.ValueHeadComments = make([]*ast.CommentGroupNode, len(acos.Values))
	}
	note := fmt.Sprintf("# agent_cache: %s (written by agentlab run from %s)", w.AgentCache, storeName)
	acos.ValueHeadComments[idx] = ast.CommentGroup([]*token.Token{token.Comment(note[1:], note, &token.Position{})})
	return []byte(strings.TrimRight(f.AST.String(), "\n") + "\n"), storeName, nil
}

// findACO finds the store's list of ACOs and the index in it of the ACO
// named name.
func findACO(f *yamlfile.File, name string) (*ast.SequenceNode, int, error) {
	_, list := yamlfile.Lookup(f.Body, storeACOsKey)
	acos, ok := list.(*ast.SequenceNode)
	if !ok {
		return nil, 0, fmt.Errorf("no ACO %q in its %s", name, storeACOsKey)
	}
	for i, item := range acos.Values {
		_, n := yamlfile.Lookup(item, "name")
		if v, ok := yamlfile.Scalar(n); ok && v == name {
			return acos, i, nil
		}
	}
	return nil, 0, fmt.Errorf("no ACO %q in its %s", name, storeACOsKey)
}
