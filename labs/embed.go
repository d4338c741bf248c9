// Package labs holds the lab files that the binaries embed, so that a lab
// runs with no file on disk.
package labs

import _ "embed"

// SeedStore is seed-store.yaml: the Policy Servers' store for the seed's
// environment (see docs/store.md).
//
//go:embed seed-store.yaml
var SeedStore []byte
