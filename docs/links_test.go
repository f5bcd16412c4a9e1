// Package docs holds the project's documentation; its test checks that
// the README and every page here link only to what exists in the
// repository.
package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// link is a Markdown inline link or image target: [text](target).
var link = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// inlineCode is a code span, whose text is not a link.
var inlineCode = regexp.MustCompile("`[^`]*`")

// pages are the Markdown files whose links are checked: the README and
// every page of docs/, as paths relative to the repository root.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md"}
	for _, d := range docs {
		out = append(out, filepath.Join("docs", d))
	}
	return out
}

// lines returns the lines of a Markdown file outside fenced code blocks.
func lines(text string) []string {
	var out []string
	fence := false
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fence = !fence
			continue
		}
		if !fence {
			out = append(out, l)
		}
	}
	return out
}

// anchors are the fragment IDs GitHub gives a file's headings: lower
// case, punctuation other than '-' and '_' dropped, spaces as '-', and
// "-1", "-2" ... for repeats.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, l := range lines(text) {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(l, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		slug := b.String()
		if n := seen[slug]; n > 0 {
			out[slug+"-"+itoa(n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

// TestRelativeLinksResolve checks every relative link of the README and of
// docs/*.md: the file exists inside the repository, and a #fragment names
// a heading of the Markdown file it points to.
func TestRelativeLinksResolve(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{}
	read := func(rel string) (string, bool) {
		if s, ok := texts[rel]; ok {
			return s, true
		}
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			return "", false
		}
		texts[rel] = string(b)
		return string(b), true
	}
	checked := 0
	for _, page := range pages(t) {
		text, ok := read(page)
		if !ok {
			t.Fatalf("cannot read %s", page)
		}
		for n, l := range lines(text) {
			for _, m := range link.FindAllStringSubmatch(inlineCode.ReplaceAllString(l, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				file, frag, _ := strings.Cut(target, "#")
				rel := page
				if file != "" {
					rel = filepath.Join(filepath.Dir(page), file)
				}
				rel = filepath.Clean(rel)
				if rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(file) {
					t.Errorf("%s (line %d of its prose): %s points outside the repository", page, n+1, target)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
					t.Errorf("%s: link %s: %s does not exist", page, target, rel)
					continue
				}
				if frag == "" || !strings.HasSuffix(rel, ".md") {
					continue
				}
				dest, _ := read(rel)
				if !anchors(dest)[frag] {
					t.Errorf("%s: link %s: %s has no heading #%s", page, target, rel, frag)
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d relative links found: the link pattern is broken", checked)
	}
}

// TestNothingPointsOutsideTheRepository checks that no tracked file refers
// readers to files that are not in the repository: the design notes the
// project started from live outside it and are not shipped;
// docs/contract.md is the contract.
func TestNothingPointsOutsideTheRepository(t *testing.T) {
	out, err := exec.Command("git", "-C", "..", "ls-files").Output()
	if err != nil {
		t.Skipf("git ls-files: %v (not a git checkout)", err)
	}
	outside := regexp.MustCompile(`\.\./shared|DESIGN\.md|FIELD-NOTES|STYLE\.md`)
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(f, "third_party/") || f == "docs/links_test.go" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			continue // listed but removed in the work tree
		}
		for i, l := range strings.Split(string(b), "\n") {
			if outside.MatchString(l) {
				t.Errorf("%s:%d refers to a file outside the repository: %s", f, i+1, strings.TrimSpace(l))
			}
		}
	}
}
