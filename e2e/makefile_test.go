package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEveryFuzzTargetRuns: `make test` fuzzes the targets its Makefile
// lists, so a fuzz test missing from the list would never run in CI.
func TestEveryFuzzTargetRuns(t *testing.T) {
	t.Parallel()
	root := ".."
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(\./[\w/]+:Fuzz\w+)`).FindAllStringSubmatch(string(makefile), -1) {
		listed[m[1]] = true
	}
	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(\w+ \*testing\.F\)`)
	found := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "testdata" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range fuzzFunc.FindAllStringSubmatch(string(src), -1) {
			found++
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			target := "./" + filepath.ToSlash(rel) + ":" + m[1]
			if !listed[target] {
				t.Errorf("%s: %s is not in the Makefile's FUZZ_TARGETS", path, target)
			}
			delete(listed, target)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("found no fuzz test in the repository")
	}
	for target := range listed {
		t.Errorf("FUZZ_TARGETS lists %s, which no _test.go defines", target)
	}
}
