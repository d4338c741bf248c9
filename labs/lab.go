package labs

import _ "embed"

// SeedLab is labs/seed.yaml, the default lab: the seed text's environment.
//
//go:embed seed.yaml
var SeedLab []byte
