package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListApplies: every mutation in the committed list is valid and its
// search text occurs exactly once in the current tree, so `go test ./...`
// already fails when a change of the code makes an entry rot, without
// running the (slow) mutation check.
func TestListApplies(t *testing.T) {
	if err := checkList(mutations); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "..")
	for _, m := range mutations {
		b, err := os.ReadFile(filepath.Join(root, m.File))
		if err != nil {
			t.Errorf("%s: %v", m.Name, err)
			continue
		}
		if n := strings.Count(string(b), m.Search); n != 1 {
			t.Errorf("%s: search text found %d times in %s, want 1", m.Name, n, m.File)
		}
		for _, tc := range m.Tests {
			if _, err := os.Stat(filepath.Join(root, tc.Pkg)); err != nil {
				t.Errorf("%s: test package %s: %v", m.Name, tc.Pkg, err)
			}
		}
	}
}

// TestApplyExactlyOnce: a search text found twice or not at all is an
// error, and the file is left as it was.
func TestApplyExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	const text = "a := 1\nb := 1\n"
	if err := os.WriteFile(filepath.Join(dir, "f.go"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, search := range []string{" := 1", "c := 1"} {
		err := apply(dir, Mutation{Name: "x", File: "f.go", Search: search, Replace: "y"})
		if err == nil {
			t.Errorf("search %q applied, want an error", search)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f.go")); string(b) != text {
		t.Fatalf("file changed to %q", b)
	}
	if err := apply(dir, Mutation{Name: "x", File: "f.go", Search: "b := 1", Replace: "b := 2"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f.go")); string(b) != "a := 1\nb := 2\n" {
		t.Fatalf("file %q after the mutation", b)
	}
}

// TestCheckListRefuses: a list entry that could never be a meaningful
// check is refused before anything runs.
func TestCheckListRefuses(t *testing.T) {
	ok := Mutation{Name: "a", File: "f.go", Search: "x", Replace: "y", Tests: []Test{{Pkg: "./bridge/"}}}
	noTests, same, unnamed := ok, ok, ok
	noTests.Tests = nil
	same.Replace = same.Search
	unnamed.Name = ""
	for name, list := range map[string][]Mutation{
		"duplicate": {ok, ok},
		"no tests":  {noTests},
		"no change": {same},
		"unnamed":   {unnamed},
	} {
		if err := checkList(list); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := checkList([]Mutation{ok}); err != nil {
		t.Errorf("valid list refused: %v", err)
	}
}

// TestFailedNames: the top-level failed tests are named, subtests are not;
// a run that failed without a FAIL line says so.
func TestFailedNames(t *testing.T) {
	out := "=== RUN   TestA\n--- FAIL: TestA (0.10s)\n    --- FAIL: TestA/sub (0.00s)\n--- FAIL: TestB (1.00s)\nFAIL\n"
	if got := failedNames([]byte(out)); got != " TestA, TestB" {
		t.Errorf("failedNames = %q", got)
	}
	if got := failedNames([]byte("panic: test timed out after 5m0s\n")); !strings.Contains(got, "timeout") {
		t.Errorf("failedNames of a timeout = %q", got)
	}
}
