package labs

import (
	"embed"
	"fmt"
	"io/fs"
	"strings"
)

// scenarios are the lab files of this folder other than the seed, so that
// `agentlab run failover` works with no file on disk. Their stores are the
// embedded seed store, which holds the HCOs they name, or one of stores
// (buildup's).
//
//go:embed failover.yaml roundrobin.yaml cluster.yaml buildup.yaml
var scenarios embed.FS

// stores are the stores of the embedded labs that name one of their own
// (store: buildup-store.yaml), for the lab to write into a run's folder.
//
//go:embed buildup-store.yaml
var stores embed.FS

// Store is the embedded store file of that name.
func Store(name string) ([]byte, error) {
	data, err := stores.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("no embedded store %q", name)
	}
	return data, nil
}

// Scenario is the embedded lab file of that name (failover, roundrobin,
// cluster; with or without .yaml).
func Scenario(name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".yaml")
	data, err := scenarios.ReadFile(name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("no embedded lab %q: the embedded labs are seed, %s", name, strings.Join(ScenarioNames(), ", "))
	}
	return data, nil
}

// ScenarioNames lists the embedded labs other than the seed.
func ScenarioNames() []string {
	var out []string
	entries, _ := fs.ReadDir(scenarios, ".")
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return out
}
