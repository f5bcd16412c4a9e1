//go:build !nodev

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/testserver"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// lockedBuffer collects a child's output; safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// buildBridge builds this package into a temp dir.
func buildBridge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nr-bridge")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// devProcess is nr-bridge -dev running as a child process.
type devProcess struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	exited         chan struct{}
	waitErr        error
}

func startDevProcess(t *testing.T, bin string, env map[string]string) *devProcess {
	t.Helper()
	p := &devProcess{cmd: exec.Command(bin, "-dev"), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = os.Environ()
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start nr-bridge -dev: %v", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("nr-bridge stdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
		}
	})
	return p
}

// exitCode waits for the process to end.
func (p *devProcess) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("nr-bridge did not exit within %v", timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr != nil {
		t.Fatalf("wait: %v", p.waitErr)
	}
	return 0
}

// logLines returns the JSON log records on stdout.
func (p *devProcess) logLines() []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(p.stdout.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func (p *devProcess) findLog(msg string) map[string]any {
	for _, m := range p.logLines() {
		if m["msg"] == msg {
			return m
		}
	}
	return nil
}

func mqttClient(t *testing.T, addr, clientID string, onPublish func(*paho.Publish), topics ...string) *autopaho.ConnectionManager {
	t.Helper()
	u, _ := url.Parse("tcp://" + addr)
	subscribed := make(chan error, 1)
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              func(int) time.Duration { return 200 * time.Millisecond },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				var err error
				if len(topics) > 0 {
					sub := &paho.Subscribe{}
					for _, tp := range topics {
						sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: tp, QoS: 1})
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err = cm.Subscribe(ctx, sub)
					cancel()
				}
				select {
				case subscribed <- err:
				default:
				}
			}()
		},
		ClientConfig: paho.ClientConfig{ClientID: clientID},
	}
	if onPublish != nil {
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			onPublish(pr.Packet)
			return true, nil
		}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(ctx, cc)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
		cancel()
		<-cm.Done()
	})
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("%s: subscribe: %v", clientID, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: not connected to %s", clientID, addr)
	}
	return cm
}

// TestDevModeEndToEnd runs the binary with -dev on free ports: events
// published with an MQTT client land in NR_EVENTS with the right subjects,
// payloads and IDs; a command POSTed over HTTP reaches a node subscription
// and the node's reply lands in NR_REPLIES; SIGTERM stops everything with
// exit code 0 and frees every port.
//
// MQTT_MAX_INFLIGHT (the workers' Receive Maximum) is set small and the
// burst is far larger, with the default batched acks: the case that stalls
// an unpatched mochi broker (internal/devmode/quota.go).
func TestDevModeEndToEnd(t *testing.T) {
	bin := buildBridge(t)
	mqttAddr := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	natsAddr := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	httpAddr := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	dataDir := filepath.Join(t.TempDir(), "dev-data")
	p := startDevProcess(t, bin, map[string]string{
		"MQTT_URL":          "tcp://" + mqttAddr,
		"NATS_URL":          "nats://" + natsAddr,
		"HTTP_ADDR":         httpAddr,
		"DEV_DATA_DIR":      dataDir,
		"MQTT_CLIENT_ID":    "nr-dev-test",
		"MQTT_WORKERS":      "2",
		"MQTT_MAX_INFLIGHT": "8",
	})

	testserver.WaitFor(t, 60*time.Second, "GET /readyz 200", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	testserver.WaitFor(t, 10*time.Second, "the dev INFO lines", func() bool {
		return p.findLog("dev: send a command with") != nil
	})
	for msg, want := range map[string]string{
		"dev: MQTT broker listening": "tcp://" + mqttAddr,
		"dev: NATS server listening": "nats://" + natsAddr,
		"dev: HTTP API listening":    "http://" + httpAddr,
	} {
		if m := p.findLog(msg); m == nil || m["url"] != want || m["level"] != "INFO" {
			t.Errorf("log %q = %v, want url %s", msg, m, want)
		}
	}
	for msg, want := range map[string]string{
		"dev: ready; simulate a fleet with":  "go run ./cmd/nr-sim -nodes 100 -rate 10 -url tcp://" + mqttAddr,
		"dev: publish an event with":         "mosquitto_pub -V mqttv5 -h 127.0.0.1 -p " + strings.Split(mqttAddr, ":")[1],
		"dev: watch events and replies with": "nats --server nats://" + natsAddr + " sub 'nr.>'",
		"dev: send a command with":           "curl -sS -X POST http://" + httpAddr + "/org/demo/node/n1/cmd",
	} {
		if m := p.findLog(msg); m == nil || !strings.HasPrefix(fmt.Sprint(m["command"]), want) {
			t.Errorf("log %q = %v, want a command starting %q", msg, m, want)
		}
	}
	if strings.Contains(p.stderr.String(), "nr-bridge -dev is ready") {
		t.Error("banner printed although stderr is not a terminal")
	}

	// A burst of events from 4 nodes in 2 orgs.
	const nodes, perNode = 4, 500
	pub := mqttClient(t, mqttAddr, "test-pub", nil)
	type event struct{ org, node, payload string }
	want := map[string]event{}
	var jobs []string
	for i := range nodes * perNode {
		org, node := fmt.Sprintf("o%d", i%2), fmt.Sprintf("n%d", i%nodes)
		id := fmt.Sprintf("%s.%s.%d", org, node, i)
		want[id] = event{org, node, fmt.Sprintf(`{"seq":%d,"node":%q}`, i, node)}
		jobs = append(jobs, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	work := make(chan string)
	errs := make(chan error, len(jobs))
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for id := range work {
				e := want[id]
				_, err := pub.Publish(ctx, &paho.Publish{
					Topic: "org/" + e.org + "/node/" + e.node + "/events", QoS: 1, Payload: []byte(e.payload),
					Properties: &paho.PublishProperties{ContentType: "application/json", User: paho.UserProperties{{Key: "msg_id", Value: id}}},
				})
				if err != nil {
					errs <- fmt.Errorf("publish %s: %w", id, err)
				}
			}
		})
	}
	for _, id := range jobs {
		work <- id
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 60*time.Second, fmt.Sprintf("%d messages in NR_EVENTS", len(want)), func() bool {
		s, err := js.Stream(ctx, "NR_EVENTS")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= uint64(len(want))
	})
	got := readStream(t, ctx, js, "NR_EVENTS")
	if len(got) != len(want) {
		t.Fatalf("NR_EVENTS has %d messages, want %d", len(got), len(want))
	}
	seen := map[string]bool{}
	for _, m := range got {
		id := bridge.MsgIDOf(m.Headers().Get("Nats-Msg-Id"))
		e, ok := want[id]
		if !ok || seen[id] {
			t.Fatalf("unexpected or duplicate Nats-Msg-Id %q: subject %s headers %v payload %s", id, m.Subject(), m.Headers(), m.Data())
		}
		seen[id] = true
		if wantSubj := "nr.org." + e.org + ".node." + e.node + ".events"; m.Subject() != wantSubj || string(m.Data()) != e.payload ||
			m.Headers().Get("Nr-Org") != e.org || m.Headers().Get("Nr-Node") != e.node || m.Headers().Get("Content-Type") != "application/json" {
			t.Fatalf("message %s: subject %s payload %s headers %v; want subject %s payload %s", id, m.Subject(), m.Data(), m.Headers(), wantSubj, e.payload)
		}
	}

	// A command over HTTP reaches node demo/n1, whose reply reaches NR_REPLIES.
	cmds := make(chan *paho.Publish, 4)
	node := mqttClient(t, mqttAddr, "demo-n1", func(p *paho.Publish) { cmds <- p }, "org/demo/node/n1/cmd", "org/demo/broadcast/cmd")
	now := time.Now().Unix()
	body := fmt.Sprintf(`{"type":"ping","version":1,"correlation_id":"corr-e2e","issued_at":%d,"ttl_sec":60,"payload":{"x":1}}`, now)
	resp, err := http.Post("http://"+httpAddr+"/org/demo/node/n1/cmd", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST command: %v", err)
	}
	respBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The dev mode wires the command route: anything but 202 is a failure.
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST command: %d %s", resp.StatusCode, respBody)
	}
	var c *paho.Publish
	select {
	case c = <-cmds:
	case <-time.After(20 * time.Second):
		t.Fatal("command not received by the node")
	}
	if c.Topic != "org/demo/node/n1/cmd" || string(c.Payload) != body || c.Properties == nil ||
		string(c.Properties.CorrelationData) != "corr-e2e" || c.Properties.ContentType != "application/json" ||
		c.Properties.ResponseTopic != "org/demo/node/n1/reply" {
		t.Fatalf("command received: topic %s payload %s props %+v", c.Topic, c.Payload, c.Properties)
	}
	if _, err := node.Publish(ctx, &paho.Publish{
		Topic: c.Properties.ResponseTopic, QoS: 1, Payload: []byte(`{"ok":true}`),
		Properties: &paho.PublishProperties{CorrelationData: c.Properties.CorrelationData, ContentType: "application/json"},
	}); err != nil {
		t.Fatalf("publish reply: %v", err)
	}
	testserver.WaitFor(t, 30*time.Second, "the reply in NR_REPLIES", func() bool {
		s, err := js.Stream(ctx, "NR_REPLIES")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 1
	})
	replies := readStream(t, ctx, js, "NR_REPLIES")
	if len(replies) != 1 || replies[0].Subject() != "nr.org.demo.node.n1.reply" ||
		replies[0].Headers().Get("Nr-Correlation-Data") != "corr-e2e" || string(replies[0].Data()) != `{"ok":true}` {
		t.Fatalf("NR_REPLIES = %v", replies)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exitCode(t, 60*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if p.findLog("dev: embedded servers stopped") == nil || p.findLog("nr-bridge stopped") == nil {
		t.Error("missing stop log lines")
	}
	for _, a := range []string{mqttAddr, natsAddr, httpAddr} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("after exit, %s is still in use: %v", a, err)
			continue
		}
		ln.Close()
	}
	if _, err := os.Stat(filepath.Join(dataDir, "jetstream")); err != nil {
		t.Errorf("JetStream store not in DEV_DATA_DIR: %v", err)
	}
}

// readStream reads every message of a stream with an ordered consumer.
func readStream(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < info.State.Msgs {
		batch, err := c.Fetch(min(500, int(info.State.Msgs-uint64(len(out)))), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("fetch %s: %v", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if batch.Error() != nil {
			t.Fatalf("fetch %s: %v", stream, batch.Error())
		}
		if n == 0 {
			t.Fatalf("fetch %s: no messages after %d of %d", stream, len(out), info.State.Msgs)
		}
	}
	return out
}

// TestDevModePortInUse: a busy MQTT port stops -dev before anything starts,
// with exit code 1 and a message naming the address and MQTT_URL.
// TestDevModePortInUse checks that -dev reports every busy address in one
// run, naming each variable, and starts nothing.
func TestDevModePortInUse(t *testing.T) {
	bin := buildBridge(t)
	var busy []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		busy = append(busy, ln.Addr().String())
	}
	kafkaAddr := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	tests := []struct {
		name string
		env  map[string]string
		want map[string]string // variable -> busy address the error must name
		free string            // an address that must still be free afterwards
	}{
		{"nats: MQTT and HTTP busy", map[string]string{
			"MQTT_URL": "tcp://" + busy[0], "NATS_URL": "nats://" + kafkaAddr, "HTTP_ADDR": busy[2],
		}, map[string]string{"MQTT_URL": busy[0], "HTTP_ADDR": busy[2]}, kafkaAddr},
		{"nats: all three busy", map[string]string{
			"MQTT_URL": "tcp://" + busy[0], "NATS_URL": "nats://" + busy[1], "HTTP_ADDR": busy[2],
		}, map[string]string{"MQTT_URL": busy[0], "NATS_URL": busy[1], "HTTP_ADDR": busy[2]}, ""},
		{"kafka: all three busy", map[string]string{
			"BACKBONE": "kafka", "MQTT_URL": "tcp://" + busy[0], "KAFKA_BROKERS": busy[1], "HTTP_ADDR": busy[2],
		}, map[string]string{"MQTT_URL": busy[0], "KAFKA_BROKERS": busy[1], "HTTP_ADDR": busy[2]}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.env["DEV_DATA_DIR"] = t.TempDir()
			p := startDevProcess(t, bin, tt.env)
			if code := p.exitCode(t, 30*time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1", code)
			}
			m := p.findLog("nr-bridge stopped")
			if m == nil {
				t.Fatalf("no stop log line; stdout %s", p.stdout.String())
			}
			errMsg := fmt.Sprint(m["err"])
			if n := strings.Count(errMsg, "already in use"); n != len(tt.want) {
				t.Errorf("error names %d busy addresses, want %d: %s", n, len(tt.want), errMsg)
			}
			for v, addr := range tt.want {
				if !strings.Contains(errMsg, v+": "+addr+": address already in use") || !strings.Contains(errMsg, "set "+v+" to a free address") {
					t.Errorf("error does not name %s %s: %s", v, addr, errMsg)
				}
			}
			if p.findLog("dev: MQTT broker listening") != nil {
				t.Error("the broker started although addresses were busy")
			}
			if tt.free != "" {
				ln, err := net.Listen("tcp", tt.free)
				if err != nil {
					t.Fatalf("%s taken after a failed start: %v", tt.free, err)
				}
				ln.Close()
			}
		})
	}
}
