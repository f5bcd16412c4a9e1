//go:build faults

package faults

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// resultsDirEnv names the folder the suite writes its results file into
// (faults-<UTC date>.json, see writeResults; a relative path is from the
// module root); unset (as in CI), it writes none. The figures the docs quote come from such a committed file.
const resultsDirEnv = "FAULTS_RESULTS_DIR"

// resultsFile is the JSON the suite writes: enough to say where, with what
// and how the figures were made, and every scenario line.
type resultsFile struct {
	Date        string            `json:"date"`
	DurationSec float64           `json:"duration_sec"`
	Passed      bool              `json:"passed"`
	CommandLine []string          `json:"command_line"`
	Machine     machineInfo       `json:"machine"`
	Versions    map[string]string `json:"versions"`
	Scenarios   []scenarioResult  `json:"scenarios"`
}

type machineInfo struct {
	NProc       int    `json:"nproc"`
	MemoryBytes int64  `json:"memory_bytes"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
}

// scenarioResult is result in JSON, with the line the suite printed.
type scenarioResult struct {
	Name         string  `json:"name"`
	Sent         int     `json:"sent"`
	Arrived      int     `json:"arrived"`
	Lost         int     `json:"lost"`
	Duplicates   int     `json:"duplicates"`
	Deduplicated int     `json:"deduplicated"`
	WrittenTwice int     `json:"written_twice"`
	Bound        int     `json:"written_twice_bound"`
	BoundWhy     string  `json:"written_twice_bound_why"`
	TimeSec      float64 `json:"time_sec"`
	Note         string  `json:"note,omitempty"`
	Line         string  `json:"line"`
}

// writeResults writes the results of this run to
// $FAULTS_RESULTS_DIR/faults-<UTC date>.json when the variable is set, and
// returns the path ("" when unset or nothing ran).
func writeResults(start time.Time, total time.Duration, passed bool) (string, error) {
	dir := os.Getenv(resultsDirEnv)
	if dir == "" {
		return "", nil
	}
	if !filepath.IsAbs(dir) {
		// go test runs in the package directory; a relative folder is
		// taken from the module root, as on the command line.
		dir = filepath.Join("..", "..", dir)
	}
	resultsMu.Lock()
	rs := append([]result(nil), results...)
	resultsMu.Unlock()
	if len(rs) == 0 {
		return "", nil
	}
	f := resultsFile{
		Date:        start.UTC().Format(time.RFC3339),
		DurationSec: total.Round(time.Second).Seconds(),
		Passed:      passed,
		CommandLine: commandLine(),
		Machine:     machineInfo{NProc: runtime.NumCPU(), MemoryBytes: memTotal(), OS: runtime.GOOS, Arch: runtime.GOARCH},
		Versions:    versions(),
	}
	for _, r := range rs {
		f.Scenarios = append(f.Scenarios, scenarioResult{
			Name: r.Name, Sent: r.Sent, Arrived: r.Arrived, Lost: r.Lost,
			Duplicates: r.Duplicates, Deduplicated: r.Deduplicated, WrittenTwice: r.Duplicates + r.Deduplicated,
			Bound: r.Bound, BoundWhy: r.Why,
			TimeSec: r.Time.Round(100 * time.Millisecond).Seconds(), Note: r.Note, Line: r.line(),
		})
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode results: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results dir: %w", err)
	}
	path := filepath.Join(dir, "faults-"+start.UTC().Format("2006-01-02")+".json")
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("write results: %w", err)
	}
	return path, nil
}

// commandLine is how the suite was run: go test with the flags it was
// given (the test binary's own path says nothing), and the variable.
func commandLine() []string {
	args := []string{"go", "test", "-tags", "faults"}
	for _, a := range os.Args[1:] {
		args = append(args, strings.Replace(a, "test.", "", 1))
	}
	return append([]string{resultsDirEnv + "=" + os.Getenv(resultsDirEnv)}, append(args, "./internal/faults/")...)
}

// memTotal is MemTotal from /proc/meminfo in bytes, 0 when unreadable.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// versions are the servers' and the toolchain's: the mosquitto and
// nats-server binaries (their first output line), Go, and the modules
// that run in-process (nats-server, kfake) as the test binary has them.
func versions() map[string]string {
	v := map[string]string{"go": runtime.Version()}
	firstLine := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	v["mosquitto"] = firstLine("mosquitto", "-h")
	v["nats-server binary"] = firstLine("nats-server", "--version")
	// The test binary carries no module versions: ask the go command,
	// which reads go.mod as the build did.
	mods := map[string]string{
		"github.com/nats-io/nats-server/v2":  "nats-server in-process",
		"github.com/twmb/franz-go/pkg/kfake": "kfake",
		"github.com/nats-io/nats.go":         "nats.go",
		"github.com/twmb/franz-go":           "franz-go",
		"github.com/eclipse/paho.golang":     "paho.golang",
	}
	args := []string{"list", "-m", "-f", "{{.Path}} {{.Version}}"}
	for m := range mods {
		args = append(args, m)
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		v["modules"] = fmt.Sprintf("go list -m: %v", err)
		return v
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if path, version, ok := strings.Cut(line, " "); ok && mods[path] != "" {
			v[mods[path]] = version
		}
	}
	return v
}
