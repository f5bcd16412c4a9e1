package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// inflightTotal sums nr_bridge_inflight_messages over the workers.
func inflightTotal(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "nr_bridge_inflight_messages{") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			n += int(v)
		}
	}
	return n
}

// logLine is one JSON log line of the bridge.
type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

// logLinesAfter parses the bridge's log and returns the lines after the
// first one whose msg is from.
func logLinesAfter(t *testing.T, out, from string) []logLine {
	t.Helper()
	var lines []logLine
	seen := false
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		if l.str("msg") == from {
			seen = true
		}
		if seen {
			lines = append(lines, l)
		}
	}
	if !seen {
		t.Fatalf("no %q line in the log", from)
	}
	return lines
}

// TestBinaryShutdownStuckMessage stops the bridge while one event is stuck
// in flight (the NATS server frozen with SIGSTOP, the PubAck never comes):
// the workers use their share of SHUTDOWN_TIMEOUT and leave the message
// un-acked for redelivery, the other stages still get theirs and are not
// blamed, the process exits 0 within SHUTDOWN_TIMEOUT plus shutdownMargin,
// and the only WARN or ERROR of the shutdown is the worker's.
func TestBinaryShutdownStuckMessage(t *testing.T) {
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATSProcess(t, testserver.NATSOptions{})
	const timeout = 4 * time.Second
	env := bridgeEnv(mq, ns.URL(), "stuck")
	env["SHUTDOWN_TIMEOUT"] = timeout.String()
	env["NATS_ACK_TIMEOUT"] = "1m" // the write stays pending: no retry, no error
	p := startBinary(t, env)

	ns.Pause()
	t.Cleanup(ns.Resume)
	pub := testclient.ConnectMQTT(t, mq.URL(), "stuck-node")
	pub.Publish("org/o1/node/n1/events", []byte(`{"stuck":true}`), testclient.MsgID("stuck-1"))
	testserver.WaitFor(t, 10*time.Second, "one message in flight", func() bool { return inflightTotal(t, p.addr) == 1 })

	start := time.Now()
	code := p.signal(t, syscall.SIGTERM)
	elapsed := time.Since(start)
	t.Logf("exit code %d after %v (SHUTDOWN_TIMEOUT %v)", code, elapsed, timeout)
	if testing.Verbose() {
		for _, l := range logLinesAfter(t, p.out.String(), "shutting down") {
			t.Log(l.str("time"), l.str("level"), l.str("msg"), l.str("component"))
		}
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0: a message left for redelivery is not a failure", code)
	}
	if limit := timeout + shutdownMargin; elapsed > limit {
		t.Errorf("shutdown took %v, want at most SHUTDOWN_TIMEOUT + shutdownMargin = %v", elapsed, limit)
	}
	checkShutdownOrder(t, logLinesAfter(t, p.out.String(), "shutting down"), 2)
	var problems []logLine
	for _, l := range logLinesAfter(t, p.out.String(), "shutting down") {
		if lvl := l.str("level"); lvl == "WARN" || lvl == "ERROR" {
			problems = append(problems, l)
		}
	}
	if len(problems) != 1 {
		t.Fatalf("%d WARN/ERROR lines during shutdown, want exactly the worker's: %v", len(problems), problems)
	}
	l := problems[0]
	if l.str("component") != "worker" || !strings.Contains(l.str("msg"), "left un-acked for redelivery") || l["inflight"] != float64(1) ||
		!strings.HasPrefix(l.str("client_id"), "stuck-w") {
		t.Fatalf("shutdown WARN %v, want the worker's with inflight 1", l)
	}
}

// checkShutdownOrder asserts the order of the shutdown stages in the log
// lines from "shutting down" on: the workers (each worker's "MQTT
// disconnected", workers of them) and the commands source, which stop in
// parallel, both before the publisher disconnects; the publisher before
// the tracker and the backbone, whose end is the last line, "nr-bridge
// stopped".
func checkShutdownOrder(t *testing.T, lines []logLine, workers int) {
	t.Helper()
	var workerDisc, lastWorker, commands, publisher, stopped []int
	for i, l := range lines {
		switch c, msg := l.str("component"), l.str("msg"); {
		case c == "worker" && msg == "MQTT disconnected":
			workerDisc = append(workerDisc, i)
			lastWorker = append(lastWorker, i)
		case c == "worker":
			lastWorker = append(lastWorker, i)
		case c == "commands" && msg == "commands source stopped":
			commands = append(commands, i)
		case c == "publisher" && msg == "MQTT disconnected":
			publisher = append(publisher, i)
		case msg == "nr-bridge stopped":
			stopped = append(stopped, i)
		}
	}
	var order []string
	for _, l := range lines {
		order = append(order, l.str("component")+": "+l.str("msg"))
	}
	if len(workerDisc) != workers || len(commands) != 1 || len(publisher) != 1 || len(stopped) != 1 {
		t.Fatalf("shutdown log: %d worker disconnects (want %d), %d commands stops, %d publisher disconnects, %d stop lines (want 1 each): %q",
			len(workerDisc), workers, len(commands), len(publisher), len(stopped), order)
	}
	if lastWorker[len(lastWorker)-1] > publisher[0] || commands[0] > publisher[0] ||
		publisher[0] > stopped[0] || stopped[0] != len(lines)-1 {
		t.Fatalf("shutdown stages out of order (want workers and commands source, then publisher, then the stop line last): %q", order)
	}
}

// TestShutdownPlan checks the split of SHUTDOWN_TIMEOUT: each stage's
// deadline with quick earlier stages, with an earlier stage that overran,
// and the cap at SHUTDOWN_TIMEOUT + shutdownMargin.
func TestShutdownPlan(t *testing.T) {
	start := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	p := &shutdownPlan{total: 10 * time.Second, end: start.Add(10 * time.Second)}
	at := func(d time.Duration) time.Time { return start.Add(d) }
	for _, tc := range []struct {
		name           string
		now            time.Duration // since the start of the shutdown
		share, reserve int
		want           time.Duration // deadline since the start
	}{
		{"HTTP", 0, shareHTTP, 100 - shareHTTP, time.Second},
		{"workers after a quick HTTP", 10 * time.Millisecond, shareWorkers, sharePublisher + shareTracker + shareBackbone, 7 * time.Second},
		{"workers after HTTP used its share", time.Second, shareWorkers, sharePublisher + shareTracker + shareBackbone, 7 * time.Second},
		{"workers after HTTP overran", 2 * time.Second, shareWorkers, sharePublisher + shareTracker + shareBackbone, 8 * time.Second},
		{"publisher after quick workers", time.Second, sharePublisher, shareTracker + shareBackbone, 8 * time.Second},
		{"publisher after stuck workers", 7 * time.Second, sharePublisher, shareTracker + shareBackbone, 8 * time.Second},
		{"tracker", 8 * time.Second, shareTracker, shareBackbone, 8500 * time.Millisecond},
		{"backbone", 8500 * time.Millisecond, shareBackbone, 0, 10 * time.Second},
		{"backbone after an overrun keeps its share", 9500 * time.Millisecond, shareBackbone, 0, 11 * time.Second},
		{"capped at the margin", 11 * time.Second, shareBackbone, 0, 10*time.Second + shutdownMargin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.deadlineAt(at(tc.now), tc.share, tc.reserve).Sub(start); got != tc.want {
				t.Errorf("deadline %v after the start, want %v", got, tc.want)
			}
		})
	}
	if shareHTTP+shareWorkers+sharePublisher+shareTracker+shareBackbone != 100 || shareWorkers < 50 {
		t.Fatalf("the shares do not add up to 100%% with the workers the largest")
	}
}
