// Command nr-mutate is the mutation check (docs/mutations.md): for each
// deliberate mutation of the production code in its list (mutations.go) it
// copies the repository to a temporary directory, applies the mutation, an
// exact search/replace on one file, and runs the tests named to catch it,
// which must fail. A green suite proves the documented promises only if
// breaking a promise turns it red; this checks that it does.
//
// A mutation whose search text is not found exactly once, or whose mutated
// copy does not compile (tests included), is an error, not a catch: the
// list cannot silently rot as the code changes. It prints one line per
// mutation and exits 1 when any mutation is missed or does not apply.
//
//	go run ./cmd/nr-mutate              # every mutation
//	go run ./cmd/nr-mutate -run ORG_ID  # those whose name matches
//	go run ./cmd/nr-mutate -list        # the list, nothing run
//	go run ./cmd/nr-mutate -p 2         # two mutations at a time (what CI runs)
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Mutation is one deliberate break of a promise: Search is replaced by
// Replace in File (relative to the repository root), and at least one of
// Tests must then fail.
type Mutation struct {
	Name    string // short, unique; what the mutation breaks
	Promise string // the promise of README.md or docs/ it breaks
	File    string
	Search  string // must occur exactly once in File
	Replace string
	Tests   []Test
	// Pending names the change that makes Tests catch it when that change
	// has not landed yet: the mutation is still run and reported, and a
	// miss is reported as a known gap, not a failure of the check.
	Pending string
}

// Test is one `go test` run: the package, the -run pattern and the build
// tags it needs.
type Test struct {
	Pkg  string // ./bridge/
	Run  string // a -run pattern; "" runs the whole package
	Tags string // -tags, e.g. "faults"
}

// args is the `go test` command line of t.
func (t Test) args(timeout time.Duration) []string {
	a := []string{"test", "-count=1", "-failfast", "-timeout", timeout.String()}
	if t.Tags != "" {
		a = append(a, "-tags", t.Tags)
	}
	if t.Run != "" {
		a = append(a, "-run", t.Run)
	}
	return append(a, t.Pkg)
}

func (t Test) String() string {
	s := t.Pkg
	if t.Tags != "" {
		s = "-tags " + t.Tags + " " + s
	}
	if t.Run != "" {
		s += " -run " + t.Run
	}
	return s
}

// result is the outcome of one mutation.
type result int

const (
	caught   result = iota // a named test failed
	missed                 // every named test passed
	notApply               // the search text is not there exactly once, or the copy does not compile
)

func main() {
	var (
		runPat   = flag.String("run", "", "run only the mutations whose name matches this regular expression")
		list     = flag.Bool("list", false, "print the mutations and their tests, run nothing")
		keep     = flag.Bool("keep", false, "keep the temporary copies (their paths are printed)")
		verbose  = flag.Bool("v", false, "print the output of the test runs")
		timeout  = flag.Duration("timeout", 5*time.Minute, "go test -timeout of each test run")
		strictPd = flag.Bool("strict", false, "count a missed Pending mutation as a failure too")
		par      = flag.Int("p", 1, "mutations run at the same time (most of a run is tests waiting for servers, not CPU)")
		baseline = flag.Bool("baseline", false, "first run every named test on an unmutated copy: they must pass, or a catch proves nothing")
	)
	flag.Parse()
	root, err := repoRoot()
	if err != nil {
		fatal(err)
	}
	var sel *regexp.Regexp
	if *runPat != "" {
		if sel, err = regexp.Compile(*runPat); err != nil {
			fatal(fmt.Errorf("-run: %w", err))
		}
	}
	if err := checkList(mutations); err != nil {
		fatal(err)
	}
	var todo []Mutation
	for _, m := range mutations {
		if sel == nil || sel.MatchString(m.Name) {
			todo = append(todo, m)
		}
	}
	if len(todo) == 0 {
		fatal(errors.New("no mutation matches -run"))
	}
	if *list {
		for _, m := range todo {
			fmt.Printf("%-30s %-31s %s\n", m.Name, m.File, testsString(m.Tests))
		}
		return
	}
	files, err := trackedFiles(root)
	if err != nil {
		fatal(err)
	}

	if *baseline {
		if err := runBaseline(root, files, todo, *timeout); err != nil {
			fatal(err)
		}
	}

	start := time.Now()
	outcomes := make([]chan outcome, len(todo))
	sem := make(chan struct{}, max(*par, 1))
	for i, m := range todo {
		outcomes[i] = make(chan outcome, 1)
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			t0 := time.Now()
			res, detail, out := runOne(root, files, m, *timeout, *keep)
			outcomes[i] <- outcome{res, detail, out, time.Since(t0)}
		}()
	}
	var nMissed, nGap, nNotApply int
	for i, m := range todo {
		o := <-outcomes[i]
		label := map[result]string{caught: "caught", missed: "MISSED", notApply: "NOT-APPLIED"}[o.res]
		switch {
		case o.res == missed && m.Pending != "" && !*strictPd:
			label = "MISSED(pending)"
			nGap++
		case o.res == missed:
			nMissed++
		case o.res == notApply:
			nNotApply++
		}
		fmt.Printf("%-30s %-31s %-15s %6.1fs  %s\n", m.Name, m.File, label, o.took.Seconds(), o.detail)
		if m.Pending != "" && o.res == missed {
			fmt.Printf("%-30s pending: %s\n", "", m.Pending)
		}
		if *verbose || o.res == notApply {
			os.Stdout.Write(o.out)
		}
	}
	fmt.Printf("nr-mutate: %d mutations, %d caught, %d missed, %d missed with a pending fix, %d not applied, %s\n",
		len(todo), len(todo)-nMissed-nGap-nNotApply, nMissed, nGap, nNotApply, time.Since(start).Round(time.Second))
	if nMissed > 0 || nNotApply > 0 {
		os.Exit(1)
	}
}

// outcome is what runOne found for one mutation, and how long it took.
type outcome struct {
	res    result
	detail string
	out    []byte
	took   time.Duration
}

// runBaseline runs every test the mutations name, once each, on an
// unmutated copy; it fails when one of them fails.
func runBaseline(root string, files []string, ms []Mutation, timeout time.Duration) error {
	dir, err := os.MkdirTemp("", "nr-mutate-baseline-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := copyTree(root, dir, files); err != nil {
		return fmt.Errorf("baseline copy: %w", err)
	}
	seen := map[Test]bool{}
	for _, m := range ms {
		for _, t := range m.Tests {
			if seen[t] {
				continue
			}
			seen[t] = true
			t0 := time.Now()
			out, err := goCmd(dir, timeout+time.Minute, t.args(timeout)...)
			if err != nil {
				os.Stdout.Write(out)
				return fmt.Errorf("baseline: %s fails without any mutation%s", t, failedNames(out))
			}
			fmt.Printf("baseline %-60s ok %6.1fs\n", t, time.Since(t0).Seconds())
		}
	}
	return nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "nr-mutate:", err)
	os.Exit(2)
}

func testsString(ts []Test) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, "; ")
}

// checkList refuses a list with an unnamed, duplicate or test-less mutation.
func checkList(ms []Mutation) error {
	seen := map[string]bool{}
	for _, m := range ms {
		switch {
		case m.Name == "" || m.File == "" || m.Search == "":
			return fmt.Errorf("mutation %q: name, file and search text are required", m.Name)
		case seen[m.Name]:
			return fmt.Errorf("mutation %q listed twice", m.Name)
		case len(m.Tests) == 0:
			return fmt.Errorf("mutation %q names no test", m.Name)
		case m.Search == m.Replace:
			return fmt.Errorf("mutation %q changes nothing", m.Name)
		}
		seen[m.Name] = true
	}
	return nil
}

// repoRoot is the top of the git work tree nr-mutate runs in.
func repoRoot() (string, error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Errorf("find the repository root (run nr-mutate inside the repository): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// trackedFiles lists the files of the work tree that git tracks or would
// track (not ignored), as they are on disk: uncommitted edits are checked
// too.
func trackedFiles(root string) ([]string, error) {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files: %w", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	return files, nil
}

// copyTree copies files from root into dst, keeping modes; a file listed
// but deleted from the work tree is skipped.
func copyTree(root, dst string, files []string) error {
	for _, f := range files {
		src := filepath.Join(root, f)
		st, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			continue
		}
		to := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if err := copyFile(src, to, st.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// apply replaces m.Search by m.Replace in m.File under dir, failing unless
// the search text occurs exactly once.
func apply(dir string, m Mutation) error {
	path := filepath.Join(dir, m.File)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", m.File, err)
	}
	if n := bytes.Count(b, []byte(m.Search)); n != 1 {
		return fmt.Errorf("search text found %d times in %s, want exactly 1: update the mutation list", n, m.File)
	}
	b = bytes.Replace(b, []byte(m.Search), []byte(m.Replace), 1)
	return os.WriteFile(path, b, 0o644)
}

// runOne applies m to a fresh copy and runs its tests: caught on the first
// that fails. detail says which test caught it or why it did not apply.
func runOne(root string, files []string, m Mutation, timeout time.Duration, keep bool) (result, string, []byte) {
	dir, err := os.MkdirTemp("", "nr-mutate-")
	if err != nil {
		return notApply, err.Error(), nil
	}
	if keep {
		fmt.Fprintf(os.Stderr, "nr-mutate: %s in %s\n", m.Name, dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := copyTree(root, dir, files); err != nil {
		return notApply, "copy: " + err.Error(), nil
	}
	if err := apply(dir, m); err != nil {
		return notApply, err.Error(), nil
	}
	// The mutated copy, tests included, must compile: a mutation that
	// breaks the build would otherwise count as caught.
	var log bytes.Buffer
	for _, tags := range tagSets(m.Tests) {
		args := []string{"test", "-vet=off", "-c", "-o", filepath.Join(dir, ".nr-mutate-bin") + string(filepath.Separator)}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		args = append(args, packages(m.Tests, tags)...)
		if out, err := goCmd(dir, 0, args...); err != nil {
			log.Write(out)
			return notApply, "mutated copy does not compile (go " + strings.Join(args, " ") + ")", log.Bytes()
		}
	}
	for _, t := range m.Tests {
		out, err := goCmd(dir, timeout+time.Minute, t.args(timeout)...)
		log.Write(out)
		if err != nil {
			return caught, "by " + t.Pkg + failedNames(out), log.Bytes()
		}
	}
	return missed, "every named test passed: " + testsString(m.Tests), log.Bytes()
}

// failedNames lists the top-level tests go test reported as failed.
func failedNames(out []byte) string {
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(l, "--- FAIL: "); ok {
			if name, _, _ := strings.Cut(rest, " "); !strings.Contains(name, "/") {
				names = append(names, name)
			}
		}
	}
	if len(names) == 0 {
		return " (no test reported FAIL: a timeout or a crash)"
	}
	return " " + strings.Join(names, ", ")
}

func tagSets(ts []Test) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range ts {
		if !seen[t.Tags] {
			seen[t.Tags] = true
			out = append(out, t.Tags)
		}
	}
	return out
}

func packages(ts []Test, tags string) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range ts {
		if t.Tags == tags && !seen[t.Pkg] {
			seen[t.Pkg] = true
			out = append(out, t.Pkg)
		}
	}
	return out
}

// goCmd runs the go command in dir; timeout 0 means none.
func goCmd(dir string, timeout time.Duration, args ...string) ([]byte, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}
