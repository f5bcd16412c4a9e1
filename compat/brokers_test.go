package compat

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// The brokers' main packages. Each is built in a module of its own under
// brokers/ whose go.mod requires only that broker at its pinned version
// (gmqtt v0.5.0, Comqtt v2.6.0, Mochi v2.7.9), so it builds with the
// dependency versions the broker itself asks for, as a stock build does.
// (go install pkg@version would do the same, but the module proxy refuses
// the version list of comqtt/v2 that it reads for deprecations.)
const (
	gmqttPkg  = "github.com/DrmagicE/gmqtt/cmd/gmqttd"
	comqttPkg = "github.com/wind-c/comqtt/v2/cmd/single"
	mochiPkg  = "github.com/mochi-mqtt/server/v2/cmd"
)

// broker is one column of the matrix: how to start a fresh one.
type broker struct {
	name     string
	settings string // what docs/compatibility.md says was configured
	start    func(t *testing.T, bins *binaries) string
}

var brokers = []broker{
	{"mosquitto", "apt 2.0.x; max_inflight_messages 1000, max_queued_messages 100000 (deploy/mosquitto)", startMosquitto},
	{"gmqtt-defaults", "gmqtt v0.5.0 defaults: max_queued_messages 1000, max_inflight 100", startGmqtt(gmqttDefaults)},
	{"gmqtt-tuned", "gmqtt v0.5.0, deploy/gmqtt/gmqtt.yml: max_queued_messages 100000, max_inflight 1000", startGmqtt(gmqttDeploy)},
	{"mochi", "mochi v2.7.9 cmd, stock (no storage hook)", startMochi},
	{"comqtt", "comqtt v2.6.0 cmd/single -storage-way 0 (memory)", startComqtt},
}

// binaries are the executables the matrix runs, built once per test run.
type binaries struct {
	dir                               string
	bridge, sim, gmqtt, comqtt, mochi string
}

var (
	buildOnce sync.Once
	built     *binaries
	buildErr  error
)

// build compiles nr-bridge and nr-sim from the repository and the brokers
// from the module proxy into a temporary directory.
func build(t *testing.T) *binaries {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nr-compat-bin-")
		if err != nil {
			buildErr = err
			return
		}
		b := &binaries{dir: dir, bridge: filepath.Join(dir, "nr-bridge"), sim: filepath.Join(dir, "nr-sim"),
			gmqtt: filepath.Join(dir, "gmqttd"), comqtt: filepath.Join(dir, "single"), mochi: filepath.Join(dir, "cmd")}
		steps := [][]string{
			{"go", "build", "-C", "..", "-o", b.bridge, "./cmd/nr-bridge"},
			{"go", "build", "-C", "..", "-o", b.sim, "./cmd/nr-sim"},
			{"go", "build", "-C", "brokers/gmqtt", "-o", b.gmqtt, gmqttPkg},
			{"go", "build", "-C", "brokers/comqtt", "-o", b.comqtt, comqttPkg},
			{"go", "build", "-C", "brokers/mochi", "-o", b.mochi, mochiPkg},
		}
		for _, s := range steps {
			start := time.Now()
			cmd := exec.Command(s[0], s[1:]...)
			cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("%s: %w\n%s", strings.Join(s, " "), err, out)
				return
			}
			fmt.Printf("compat: %s (%s)\n", strings.Join(s, " "), time.Since(start).Round(100*time.Millisecond))
		}
		built = b
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// runProcess starts bin with args in dir, output to a log file there, and
// waits until addr accepts TCP. A cleanup kills it and, when the test
// failed, logs the end of its output.
func runProcess(t *testing.T, name, dir, addr, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log (end):\n%s", name, tailLines(string(b), 30))
		}
	})
	testserver.WaitFor(t, 15*time.Second, name+" listening on "+addr, func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited:\n%s", name, tailLines(string(b), 30))
		default:
		}
		return dialOK(addr)
	})
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func addr(t *testing.T) string { return "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)) }

func startMosquitto(t *testing.T, _ *binaries) string {
	m := testserver.StartMosquitto(t, testserver.MosquittoOptions{MaxInflightMessages: 1000, MaxQueuedMessages: 100000})
	return m.URL()
}

func startMochi(t *testing.T, b *binaries) string {
	a := addr(t)
	runProcess(t, "mochi", t.TempDir(), a, b.mochi, "-tcp", a, "-ws", addr(t), "-info", addr(t))
	return "tcp://" + a
}

func startComqtt(t *testing.T, b *binaries) string {
	a, dir := addr(t), t.TempDir()
	runProcess(t, "comqtt", dir, a, b.comqtt, "-storage-way", "0", "-tcp", a, "-ws", addr(t), "-http", addr(t),
		"-log-file", filepath.Join(dir, "comqtt-app.log"))
	return "tcp://" + a
}

// gmqttDefaults is gmqtt's default configuration (cmd/gmqttd's
// default_config.yml) listening on a, without its plugins (admin API,
// Prometheus, federation), which listen on fixed ports.
func gmqttDefaults(t *testing.T, a string) string {
	return fmt.Sprintf(`listeners:
  - address: %q
mqtt:
  session_expiry: 2h
  session_expiry_check_timer: 20s
  message_expiry: 2h
  inflight_expiry: 30s
  max_packet_size: 268435456
  server_receive_maximum: 100
  max_keepalive: 300
  topic_alias_maximum: 10
  subscription_identifier_available: true
  wildcard_subscription_available: true
  shared_subscription_available: true
  maximum_qos: 2
  retain_available: true
  max_queued_messages: 1000
  max_inflight: 100
  queue_qos0_messages: true
  delivery_mode: onlyonce
  allow_zero_length_clientid: true
persistence:
  type: memory
topic_alias_manager:
  type: fifo
plugin_order: []
log:
  level: warn
  format: text
`, a)
}

// gmqttDeploy is deploy/gmqtt/gmqtt.yml with its listener moved to a.
func gmqttDeploy(t *testing.T, a string) string {
	b, err := os.ReadFile(filepath.Join("..", "deploy", "gmqtt", "gmqtt.yml"))
	if err != nil {
		t.Fatal(err)
	}
	const listener = `- address: ":1883"`
	if !strings.Contains(string(b), listener) {
		t.Fatalf("deploy/gmqtt/gmqtt.yml has no line %s", listener)
	}
	return strings.Replace(string(b), listener, fmt.Sprintf("- address: %q", a), 1)
}

// startGmqtt runs gmqttd with the configuration conf returns for its
// listener address.
func startGmqtt(conf func(t *testing.T, a string) string) func(t *testing.T, b *binaries) string {
	return func(t *testing.T, b *binaries) string {
		a, dir := addr(t), t.TempDir()
		path := filepath.Join(dir, "gmqtt.yml")
		if err := os.WriteFile(path, []byte(conf(t, a)), 0o644); err != nil {
			t.Fatal(err)
		}
		runProcess(t, "gmqtt", dir, a, b.gmqtt, "start", "-c", path)
		return "tcp://" + a
	}
}
