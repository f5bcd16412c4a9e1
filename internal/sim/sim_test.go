package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/testserver"

	"github.com/nr-bridge/nr-bridge/bridge"
)

func TestSimFleetLayout(t *testing.T) {
	tests := []struct {
		name          string
		orgs, nodes   int
		fraction      float64
		wantIDs       []string
		wantAnswering []bool
	}{
		{name: "one org all answer", orgs: 1, nodes: 3, fraction: 1,
			wantIDs: []string{"demo/n1", "demo/n2", "demo/n3"}, wantAnswering: []bool{true, true, true}},
		{name: "two orgs half answer", orgs: 2, nodes: 6, fraction: 0.5,
			wantIDs:       []string{"demo/n1", "demo2/n1", "demo/n2", "demo2/n2", "demo/n3", "demo2/n3"},
			wantAnswering: []bool{true, false, true, false, true, false}},
		{name: "none answer", orgs: 1, nodes: 2, fraction: 0,
			wantIDs: []string{"demo/n1", "demo/n2"}, wantAnswering: []bool{false, false}},
		{name: "tiny fraction still answers with node 0", orgs: 1, nodes: 4, fraction: 0.01,
			wantIDs: []string{"demo/n1", "demo/n2", "demo/n3", "demo/n4"}, wantAnswering: []bool{true, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Orgs, cfg.Nodes, cfg.ReplyFraction = tt.orgs, tt.nodes, tt.fraction
			for i, n := range cfg.fleet() {
				if got := n.org + "/" + n.id; got != tt.wantIDs[i] || n.answers != tt.wantAnswering[i] {
					t.Errorf("node %d = %s answers=%v, want %s answers=%v", i, got, n.answers, tt.wantIDs[i], tt.wantAnswering[i])
				}
				if n.topic != "org/"+n.org+"/node/"+n.id+"/events" {
					t.Errorf("node %d topic %s", i, n.topic)
				}
			}
		})
	}
}

func TestSimEventPayload(t *testing.T) {
	n := &node{org: "demo", id: "n7", index: 6}
	for _, size := range []int{0, 100, 256, 1000, 4096} {
		b := appendEvent(nil, "run1", n, 42, 1700000000123456789, size)
		var ev struct {
			Run, Org, Node string
			Seq            uint64
			TS             int64
			Type           string
			Pad            string
			Metrics        map[string]float64
		}
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatalf("size %d: invalid JSON %s: %v", size, b, err)
		}
		if ev.Run != "run1" || ev.Org != "demo" || ev.Node != "n7" || ev.Seq != 42 || ev.TS != 1700000000123456789 || ev.Type != "telemetry" || len(ev.Metrics) != 4 {
			t.Fatalf("size %d: decoded %+v", size, ev)
		}
		if size >= 256 && len(b) != size {
			t.Errorf("size %d: payload is %d bytes", size, len(b))
		}
	}
	if got := msgID("run1", n, 42); got != "run1.demo.n7.42" {
		t.Errorf("msgID = %s", got)
	}
}

func TestSimHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	l := h.snapshot().latency()
	check := func(name string, got, want time.Duration) {
		if got < want || float64(got) > float64(want)*1.04 {
			t.Errorf("%s = %v, want %v (+4%%)", name, got, want)
		}
	}
	if l.Count != 1000 || l.Max != time.Second {
		t.Fatalf("count %d max %v", l.Count, l.Max)
	}
	check("p50", l.P50, 500*time.Millisecond)
	check("p90", l.P90, 900*time.Millisecond)
	check("p99", l.P99, 990*time.Millisecond)
	check("p999", l.P999, 999*time.Millisecond)
	for _, d := range []time.Duration{0, 1, 31, 32, 33, 1000, 1 << 40} {
		if up := bucketUpper(bucketOf(d)); up < d || (d > 32 && float64(up-d) > float64(d)/32) {
			t.Errorf("bucket of %d has upper bound %d", d, up)
		}
	}
}

func TestSimConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"url", func(c *Config) { c.URL = "localhost" }, "-url"},
		{"scheme", func(c *Config) { c.URL = "http://x:1" }, "-url"},
		{"nodes below orgs", func(c *Config) { c.Orgs, c.Nodes = 3, 2 }, "-nodes"},
		{"qos", func(c *Config) { c.QoS = 2 }, "-qos"},
		{"fraction", func(c *Config) { c.ReplyFraction = 1.5 }, "-reply-fraction"},
		{"org prefix", func(c *Config) { c.OrgPrefix = "a/b" }, "-org-prefix"},
		{"rate", func(c *Config) { c.Rate = -1 }, "-rate"},
		{"run id", func(c *Config) { c.RunID = "a.b" }, "-run-id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			_, err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// startBridge builds and starts nr-bridge (normal mode) against the given
// broker and NATS server, and waits for /readyz.
func startBridge(t *testing.T, mqttURL, natsURL string) (httpAddr string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nr-bridge")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nr-bridge/nr-bridge/cmd/nr-bridge").CombinedOutput(); err != nil {
		t.Fatalf("go build nr-bridge: %v\n%s", err, out)
	}
	httpAddr = "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "MQTT_URL="+mqttURL, "NATS_URL="+natsURL, "HTTP_ADDR="+httpAddr,
		"MQTT_CLIENT_ID=sim-test-bridge", "LOG_LEVEL=warn")
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("nr-bridge output:\n%s", out.String())
			mu.Unlock()
		}
	})
	testserver.WaitFor(t, 60*time.Second, "nr-bridge /readyz 200", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	return httpAddr
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func postCommand(t *testing.T, url, correlationID string) {
	t.Helper()
	body := fmt.Sprintf(`{"type":"ping","version":1,"correlation_id":%q,"issued_at":%d,"ttl_sec":60,"payload":{}}`, correlationID, time.Now().Unix())
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
}

func streamMsgs(ctx context.Context, js jetstream.JetStream, name string) uint64 {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

func readAll(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) []jetstream.Msg {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	want := streamMsgs(ctx, js, name)
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < want {
		batch, err := c.Fetch(min(500, int(want-uint64(len(out)))), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if n == 0 {
			t.Fatalf("%s: read %d of %d", name, len(out), want)
		}
	}
	return out
}

// TestSimAgainstMosquittoAndBridge runs the simulator against a real
// Mosquitto and the nr-bridge binary writing to NATS JetStream: every event
// arrives once in NR_EVENTS with Nats-Msg-Id = msg_id; a command POSTed to
// an answering node and a broadcast get replies in NR_REPLIES with the
// command's correlation data; a silent node receives its command and does
// not answer.
func TestSimAgainstMosquittoAndBridge(t *testing.T) {
	mosq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	httpAddr := startBridge(t, mosq.URL(), ns.URL())

	const perNode = 50
	cfg := DefaultConfig()
	cfg.URL = mosq.URL()
	cfg.Orgs, cfg.Nodes, cfg.Conns = 2, 6, 3
	cfg.Rate = 100
	cfg.Count = perNode
	cfg.Duration = 5 * time.Minute // keeps answering after the last event until cancelled
	cfg.ReplyFraction = 0.5        // demo/n1..n3 answer, demo2/n1..n3 stay silent
	cfg.RunID = "simtest"
	cfg.Progress = 0
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		cfg.Progress = time.Second
	}
	ready := make(chan struct{})
	cfg.OnReady = func() { close(ready) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		s   Summary
		err error
	}
	res := make(chan result, 1)
	go func() {
		s, err := Run(ctx, cfg)
		res <- result{s, err}
	}()
	select {
	case <-ready:
	case r := <-res:
		t.Fatalf("Run returned before ready: %+v %v", r.s, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("fleet not ready")
	}

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	jctx, jcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer jcancel()
	total := cfg.Nodes * perNode
	testserver.WaitFor(t, 60*time.Second, fmt.Sprintf("%d events in NR_EVENTS", total), func() bool {
		return streamMsgs(jctx, js, "NR_EVENTS") >= uint64(total)
	})
	want := map[string]string{} // msg_id -> subject
	for _, n := range cfg.fleet() {
		for seq := 1; seq <= perNode; seq++ {
			want[fmt.Sprintf("simtest.%s.%s.%d", n.org, n.id, seq)] = "nr.org." + n.org + ".node." + n.id + ".events"
		}
	}
	events := readAll(t, jctx, js, "NR_EVENTS")
	if len(events) != total {
		t.Fatalf("NR_EVENTS has %d messages, want %d", len(events), total)
	}
	distinct := map[string]bool{}
	for _, m := range events {
		id := bridge.MsgIDOf(m.Headers().Get("Nats-Msg-Id"))
		if subj, ok := want[id]; !ok || m.Subject() != subj {
			t.Fatalf("event %q on %s not expected (want subject %q)", id, m.Subject(), subj)
		}
		var ev struct {
			Seq  int
			TS   int64
			Node string
		}
		if err := json.Unmarshal(m.Data(), &ev); err != nil || !strings.HasSuffix(id, "."+ev.Node+"."+strconv.Itoa(ev.Seq)) || ev.TS == 0 {
			t.Fatalf("event %s payload %s (%v)", id, m.Data(), err)
		}
		if len(m.Data()) != cfg.Size {
			t.Fatalf("event %s is %d bytes, want %d", id, len(m.Data()), cfg.Size)
		}
		distinct[id] = true
	}
	if len(distinct) != total {
		t.Fatalf("%d distinct Nats-Msg-Id, want %d", len(distinct), total)
	}

	// demo2/n2 (silent) shares the first connection with demo/n1 (answers):
	// its command is delivered first, so once demo/n1's reply is in
	// NR_REPLIES both commands have been received.
	base := "http://" + httpAddr
	postCommand(t, base+"/org/demo2/node/n2/cmd", "corr-silent")
	postCommand(t, base+"/org/demo/node/n1/cmd", "corr-node")
	testserver.WaitFor(t, 30*time.Second, "the node reply in NR_REPLIES", func() bool {
		return streamMsgs(jctx, js, "NR_REPLIES") >= 1
	})
	postCommand(t, base+"/org/demo/broadcast/cmd", "corr-bcast")
	testserver.WaitFor(t, 30*time.Second, "4 replies in NR_REPLIES", func() bool {
		return streamMsgs(jctx, js, "NR_REPLIES") >= 4
	})
	replies := readAll(t, jctx, js, "NR_REPLIES")
	got := map[string]string{}
	for _, m := range replies {
		var body struct {
			CorrelationID string `json:"correlation_id"`
		}
		_ = json.Unmarshal(m.Data(), &body)
		if m.Headers().Get("Content-Type") != "application/json" || m.Headers().Get("Nats-Msg-Id") == "" {
			t.Errorf("reply %s headers %v", m.Subject(), m.Headers())
		}
		got[m.Subject()+" "+m.Headers().Get("Nr-Correlation-Data")] = body.CorrelationID
	}
	wantReplies := map[string]string{
		"nr.org.demo.node.n1.reply corr-node":  "corr-node",
		"nr.org.demo.node.n1.reply corr-bcast": "corr-bcast",
		"nr.org.demo.node.n2.reply corr-bcast": "corr-bcast",
		"nr.org.demo.node.n3.reply corr-bcast": "corr-bcast",
	}
	if len(replies) != 4 || fmt.Sprint(got) != fmt.Sprint(wantReplies) {
		t.Fatalf("NR_REPLIES = %v, want %v", got, wantReplies)
	}

	cancel()
	var r result
	select {
	case r = <-res:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	s := r.s
	if r.err != nil {
		t.Fatalf("Run: %v", r.err)
	}
	if s.EventsSent != uint64(total) || s.EventsAcked != uint64(total) || s.EventsFailed != 0 || s.Latency.Count != uint64(total) {
		t.Errorf("events sent %d acked %d failed %d latency count %d, want %d acked", s.EventsSent, s.EventsAcked, s.EventsFailed, s.Latency.Count, total)
	}
	if s.CommandsReceived != 5 || s.RepliesSent != 4 || s.ReplyErrors != 0 {
		t.Errorf("commands %d replies %d reply errors %d, want 5, 4, 0", s.CommandsReceived, s.RepliesSent, s.ReplyErrors)
	}
	if s.Latency.P50 <= 0 || s.Latency.P50 > s.Latency.P99 || s.Latency.P99 > s.Latency.Max {
		t.Errorf("latency %+v", s.Latency)
	}
	t.Logf("summary: %+v", s)
}
