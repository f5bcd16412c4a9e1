//go:build faults

package faults

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// binaries are built once per test run, into binDir.
var (
	binDir   string
	binMu    sync.Mutex
	binPaths = map[bool]string{} // by race
)

// bridgeBinary builds nr-bridge (with the race detector when race is set)
// once per run and returns its path. The plain build is what the scenarios
// run: the race detector slows the bridge several times over, so it gets a
// scenario of its own (TestRaceUnderLoad).
func bridgeBinary(t testing.TB, race bool) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binPaths[race]; ok {
		return p
	}
	if binDir == "" {
		d, err := os.MkdirTemp("", "nr-bridge-faults")
		if err != nil {
			t.Fatal(err)
		}
		binDir = d
	}
	name, args := "nr-bridge", []string{"build"}
	if race {
		name, args = "nr-bridge-race", append(args, "-race")
	}
	p := filepath.Join(binDir, name)
	args = append(args, "-o", p, "../../cmd/nr-bridge")
	start := time.Now()
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built %s in %v", name, time.Since(start).Round(time.Millisecond))
	binPaths[race] = p
	return p
}

// bridgeProc is one nr-bridge replica: a binary run with a fixed
// environment (so a restart keeps its client ID and HTTP port), its output
// appended to a log file.
type bridgeProc struct {
	t       testing.TB
	name    string
	bin     string
	env     []string
	addr    string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	// carried holds the counters of the runs that ended (scraped just
	// before stop or kill), so total counts across restarts.
	carried map[string]float64
}

// startBridge runs bin with env plus HTTP_ADDR on a free port and waits
// for /readyz. A cleanup kills it and, when the test failed, logs the end of
// its output.
func startBridge(t testing.TB, bin, name string, env map[string]string) *bridgeProc {
	t.Helper()
	b := &bridgeProc{
		t:       t,
		name:    name,
		bin:     bin,
		addr:    fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t)),
		logPath: filepath.Join(t.TempDir(), name+".log"),
	}
	b.env = append(os.Environ(), "HTTP_ADDR="+b.addr)
	if _, ok := env["LOG_LEVEL"]; !ok {
		b.env = append(b.env, "LOG_LEVEL=info")
	}
	for k, v := range env {
		b.env = append(b.env, k+"="+v)
	}
	t.Cleanup(func() {
		b.kill()
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", b.logPath, tail(b.log(), 40))
			if d := os.Getenv("FAULTS_KEEP_LOGS"); d != "" {
				_ = os.WriteFile(filepath.Join(d, b.name+".log"), []byte(b.log()), 0o644)
			}
		}
	})
	b.start()
	return b
}

// start launches the process and waits until /readyz answers 200.
func (b *bridgeProc) start() {
	b.t.Helper()
	f, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	fmt.Fprintf(f, "==== faults: starting %s at %s\n", b.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(b.bin)
	cmd.Env = b.env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	f.Close()
	if err != nil {
		b.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.mu.Lock()
	b.cmd, b.exited = cmd, exited
	b.mu.Unlock()
	b.waitReady(60 * time.Second)
}

// waitReady polls /readyz until 200, failing the test after timeout or if
// the process exits.
func (b *bridgeProc) waitReady(timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if b.ready() {
			return
		}
		b.mu.Lock()
		exited := b.exited
		b.mu.Unlock()
		select {
		case <-exited:
			b.t.Fatalf("%s exited before it was ready:\n%s", b.name, tail(b.log(), 30))
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s not ready after %v:\n%s", b.name, timeout, tail(b.log(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bridgeProc) ready() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + b.addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop sends sig and waits (up to 30 s) for the exit; it returns the exit
// code (-1 for a process killed by a signal).
func (b *bridgeProc) stop(sig syscall.Signal) int {
	b.t.Helper()
	b.carry()
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		b.t.Fatalf("signal %s: %v", b.name, err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		b.t.Fatalf("%s did not exit within 30 s of %v", b.name, sig)
	}
	return cmd.ProcessState.ExitCode()
}

// kill sends SIGKILL if the process runs and waits for it.
func (b *bridgeProc) kill() {
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	b.carry()
	_ = cmd.Process.Kill()
	<-exited
}

// carry adds the counters of the running process to carried, just before
// it is stopped: a restarted bridge counts from 0 again. What a killed
// bridge counts between this scrape and its death is not carried.
func (b *bridgeProc) carry() {
	if !b.running() {
		return
	}
	m, err := b.metrics()
	if err != nil {
		return // not serving (yet): nothing counted that could be read
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.carried == nil {
		b.carried = map[string]float64{}
	}
	for k, v := range m {
		if strings.HasSuffix(k, "_total") {
			b.carried[k] += v
		}
	}
}

// total is a counter summed over every run of the process: the runs that
// ended plus the running one. A counter the bridge does not serve fails
// the test.
func (b *bridgeProc) total(name string) float64 {
	b.t.Helper()
	b.mu.Lock()
	v, seen := b.carried[name]
	b.mu.Unlock()
	if b.running() {
		return v + b.metric(name)
	}
	if !seen {
		b.t.Fatalf("%s: %s was never scraped before the bridge stopped", b.name, name)
	}
	return v
}

// running reports whether the process has not exited.
func (b *bridgeProc) running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

func (b *bridgeProc) pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd.Process.Pid
}

// rssBytes reads VmRSS from /proc/<pid>/status.
func (b *bridgeProc) rssBytes() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", b.pid()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest) // "12345 kB"
			if len(fields) < 1 {
				break
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", b.pid())
}

// metrics scrapes GET /metrics and returns every sample's value summed over
// its labels, by metric name (histograms by their _sum, _count, _bucket
// names).
func (b *bridgeProc) metrics() (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// metric returns one summed metric, failing the test when /metrics cannot
// be read or does not have it: a renamed metric must not read as 0 (and
// make "no ack while down" pass).
func (b *bridgeProc) metric(name string) float64 {
	b.t.Helper()
	m, err := b.metrics()
	if err != nil {
		b.t.Fatalf("%s: %v", b.name, err)
	}
	v, ok := m[name]
	if !ok {
		b.t.Fatalf("%s: /metrics has no %s", b.name, name)
	}
	return v
}

// log returns everything the process wrote so far (all runs).
func (b *bridgeProc) log() string {
	data, err := os.ReadFile(b.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", b.logPath, err)
	}
	return string(data)
}

// countLog counts the log lines containing s.
func (b *bridgeProc) countLog(s string) int {
	return strings.Count(b.log(), s)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// natsEnv is the environment of a bridge on the NATS backbone.
func natsEnv(mqttURL, natsURL, clientID string) map[string]string {
	return map[string]string{
		"BACKBONE":            "nats",
		"MQTT_URL":            mqttURL,
		"NATS_URL":            natsURL,
		"MQTT_CLIENT_ID":      clientID,
		"MQTT_SESSION_EXPIRY": "5m",
		"MQTT_RECONNECT_MIN":  "100ms",
		"MQTT_RECONNECT_MAX":  "1s",
	}
}

// kafkaEnv is the environment of a bridge on the Kafka backbone.
func kafkaEnv(mqttURL string, brokers []string, clientID string) map[string]string {
	return map[string]string{
		"BACKBONE":            "kafka",
		"KAFKA_BROKERS":       strings.Join(brokers, ","),
		"MQTT_URL":            mqttURL,
		"MQTT_CLIENT_ID":      clientID,
		"MQTT_SESSION_EXPIRY": "5m",
		"MQTT_RECONNECT_MIN":  "100ms",
		"MQTT_RECONNECT_MAX":  "1s",
	}
}
