//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// commandDoc is a command document with the given correlation ID, issued
// at issuedAt with ttl.
func commandDoc(id string, issuedAt time.Time, ttl time.Duration) []byte {
	return fmt.Appendf(nil, `{"type":"faults.test","version":1,"correlation_id":%q,"issued_at":%d,"ttl_sec":%d,"payload":{"n":1}}`,
		id, issuedAt.Unix(), int(ttl/time.Second))
}

// cmdNode is an agent subscribed (persistent session) to the commands of
// every node of org o1; it counts deliveries by correlation data.
type cmdNode struct {
	mu    sync.Mutex
	got   map[string]int
	first map[string]time.Time // when each correlation ID was first delivered
}

func startCmdNode(t testing.TB, brokerURL, clientID string) *cmdNode {
	t.Helper()
	n := &cmdNode{got: map[string]int{}, first: map[string]time.Time{}}
	connectMQTT(t, brokerURL, clientID, mqttOptions{
		Persistent: true,
		Filters:    []string{"org/o1/node/+/cmd", "org/o1/broadcast/cmd"},
		OnMessage: func(p *paho.Publish) {
			id := ""
			if p.Properties != nil {
				id = string(p.Properties.CorrelationData)
			}
			now := time.Now()
			n.mu.Lock()
			n.got[id]++
			if _, ok := n.first[id]; !ok {
				n.first[id] = now
			}
			n.mu.Unlock()
		},
	})
	return n
}

// firstDelivery is when id was first delivered, zero if never.
func (n *cmdNode) firstDelivery(id string) time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.first[id]
}

func (n *cmdNode) delivered() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.got))
	for k, v := range n.got {
		out[k] = v
	}
	return out
}

// cmdLoad sends commands at a steady rate through the bridge's HTTP API
// (retrying a 503 or a refused connection with the same correlation_id, as
// a client should) and through NR_COMMANDS, and records what was accepted:
// a 202, or a JetStream PubAck.
type cmdLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu          sync.Mutex
	accepted    map[string]struct{} // HTTP 202 or stream PubAck, TTL long enough to outlive the faults
	retries503  int                 // HTTP attempts answered 503 (or not answered)
	httpExpired int                 // HTTP commands that expired while retrying: never accepted
	httpErrs    []string
}

// startCmdLoad sends rate commands per second over HTTP to addr and rate
// per second to NR_COMMANDS, each with a 120 s TTL, to nodes n000..n009.
func startCmdLoad(t testing.TB, addr string, js jetstream.JetStream, prefix string, rate int) *cmdLoad {
	l := &cmdLoad{stop: make(chan struct{}), accepted: map[string]struct{}{}}
	const posters = 4
	for p := range posters {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(time.Second * posters / time.Duration(rate))
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				id := fmt.Sprintf("%s-h%d-%d", prefix, p, i)
				code := l.post(addr, fmt.Sprintf("n%03d", i%10), id, time.Now(), 120*time.Second)
				if code == http.StatusAccepted {
					l.mu.Lock()
					l.accepted[id] = struct{}{}
					l.mu.Unlock()
				}
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("%s-s-%d", prefix, i)
			if streamCommand(js, fmt.Sprintf("nr.org.o1.node.n%03d.cmd", i%10), commandDoc(id, time.Now(), 120*time.Second)) == nil {
				l.mu.Lock()
				l.accepted[id] = struct{}{}
				l.mu.Unlock()
			}
		}
	}()
	return l
}

// post sends one command over HTTP, retrying every 250 ms while the answer
// is 503 or there is none, until the command's TTL has passed. It returns
// the final status code (0 when the TTL ran out without an answer).
func (l *cmdLoad) post(addr, node, id string, issued time.Time, ttl time.Duration) int {
	body := commandDoc(id, issued, ttl)
	url := fmt.Sprintf("http://%s/org/o1/node/%s/cmd", addr, node)
	client := http.Client{Timeout: 15 * time.Second}
	for {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		code := 0
		var msg []byte
		if err == nil {
			code = resp.StatusCode
			msg, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		switch {
		case code == http.StatusAccepted:
			return code
		case code == http.StatusUnprocessableEntity && bytes.Contains(msg, []byte("expired")):
			l.mu.Lock()
			l.httpExpired++
			l.mu.Unlock()
			return code
		case code != 0 && code != http.StatusServiceUnavailable:
			l.mu.Lock()
			l.httpErrs = append(l.httpErrs, fmt.Sprintf("%s: %d %s", id, code, msg))
			l.mu.Unlock()
			return code
		}
		l.mu.Lock()
		l.retries503++
		l.mu.Unlock()
		if time.Since(issued) > ttl+5*time.Second {
			return 0
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// streamCommand writes one command to NR_COMMANDS and waits for the PubAck.
func streamCommand(js jetstream.JetStream, subject string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := js.Publish(ctx, subject, body)
	return err
}

func (l *cmdLoad) Stop() {
	close(l.stop)
	l.wg.Wait()
}

func (l *cmdLoad) IDs() map[string]struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]struct{}, len(l.accepted))
	for k := range l.accepted {
		out[k] = struct{}{}
	}
	return out
}

func count422(codes []int) int {
	n := 0
	for _, c := range codes {
		if c == http.StatusUnprocessableEntity {
			n++
		}
	}
	return n
}

// waitStream polls until stream exists (the bridge creates it at start).
func waitStream(t testing.TB, js jetstream.JetStream, stream string) {
	t.Helper()
	testserver.WaitFor(t, 30*time.Second, "stream "+stream, func() bool { return streamCount(js, stream, "") >= 0 })
}

// dlqCommands reads nr.dlq.cmd and returns, by correlation_id (or the body
// when it has none), the reasons (Nr-Error) it was dead-lettered with.
func dlqCommands(t testing.TB, js jetstream.JetStream) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	if streamCount(js, "NR_DLQ", "nr.dlq.cmd") <= 0 {
		return out
	}
	for _, m := range readStream(t, js, "NR_DLQ", "nr.dlq.cmd") {
		var doc struct {
			CorrelationID string `json:"correlation_id"`
		}
		key := string(m.Data)
		if json.Unmarshal(m.Data, &doc) == nil && doc.CorrelationID != "" {
			key = doc.CorrelationID
		}
		out[key] = append(out[key], m.Header.Get("Nr-Error"))
	}
	return out
}

// TestCommandsBrokerRestart sends commands over HTTP and through
// NR_COMMANDS while Mosquitto (persistence on) is stopped for 10 s and
// started again. Every command accepted (202, PubAck) with a TTL that
// outlives the outage reaches the subscribed node; commands whose TTL runs
// out while the broker is down are dead-lettered as expired, or refused
// (422) over HTTP, never lost.
func TestCommandsBrokerRestart(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	env := natsEnv(mq.URL(), ns.URL(), "fi-cmd")
	// The default backoff (1 s to 30 s) would retry a command up to 30 s
	// after the broker is back; 4 s keeps the scenario short.
	env["NATS_COMMANDS_RETRY_MAX"] = "4s"
	b := startBridge(t, bridgeBinary(t, false), "bridge", env)
	node := startCmdNode(t, mq.URL(), "cmd-node")
	_, js := connectNATS(t, ns.URL())
	waitStream(t, js, "NR_COMMANDS")

	// Already expired when written: dead-lettered at once.
	var expired []string
	expiresAt := map[string]time.Time{} // issued_at (whole seconds) + ttl_sec
	for i := range 10 {
		id := fmt.Sprintf("cmd-preexpired-%d", i)
		issued := time.Now().Add(-2 * time.Minute)
		if err := streamCommand(js, "nr.org.o1.node.n001.cmd", commandDoc(id, issued, time.Minute)); err != nil {
			t.Fatal(err)
		}
		expired = append(expired, id)
		expiresAt[id] = time.Unix(issued.Unix(), 0).Add(time.Minute)
	}
	load := startCmdLoad(t, b.addr, js, "cmd", 20)
	time.Sleep(3 * time.Second)

	mq.Stop()
	// TTL 3 s, written while the broker is down: they expire while the
	// source retries them, and are dead-lettered as expired.
	var short []string
	for i := range 10 {
		id := fmt.Sprintf("cmd-short-%d", i)
		issued := time.Now()
		if err := streamCommand(js, "nr.org.o1.node.n002.cmd", commandDoc(id, issued, 3*time.Second)); err != nil {
			t.Fatal(err)
		}
		short = append(short, id)
		expiresAt[id] = time.Unix(issued.Unix(), 0).Add(3 * time.Second)
	}
	// Over HTTP they get 503 until they expire, then 422.
	var shortHTTP sync.WaitGroup
	shortCodes := make([]int, 5)
	for i := range shortCodes {
		shortHTTP.Add(1)
		go func() {
			defer shortHTTP.Done()
			shortCodes[i] = load.post(b.addr, "n003", fmt.Sprintf("cmd-short-h-%d", i), time.Now(), 3*time.Second)
		}()
	}
	time.Sleep(outage)
	mq.Restart()
	time.Sleep(4 * time.Second)
	load.Stop()
	shortHTTP.Wait()

	sent := load.IDs()
	var got map[string]int
	var dlq map[string][]string
	deadline := time.Now().Add(60 * time.Second)
	for {
		got = node.delivered()
		dlq = dlqCommands(t, js)
		settled := len(missing(sent, got, 1)) == 0
		for _, id := range append(append([]string(nil), expired...), short...) {
			if got[id] == 0 && len(dlq[id]) == 0 {
				settled = false
			}
		}
		if settled || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	r := count("commands-broker-restart-10s", start, sent, got)
	r.Note = "" // the node gets no other commands
	// A command the broker took but whose PUBACK the restart lost is
	// published again: at most those being published when it stopped.
	checkDuplicates(t, &r, writtenTwiceBound{20, "commands being published when the broker stopped: NATS_COMMANDS_CONCURRENCY 16 + 4 HTTP callers"}, b)
	lostExpired, shortDLQ, shortDelivered := 0, 0, 0
	for _, id := range append(append([]string(nil), expired...), short...) {
		switch {
		case got[id] > 0 && !node.firstDelivery(id).Before(expiresAt[id]):
			t.Errorf("%s delivered at %s, after its expiry at %s", id, node.firstDelivery(id).Format(time.RFC3339Nano), expiresAt[id].Format(time.RFC3339))
		case len(dlq[id]) > 0:
			if !strings.Contains(dlq[id][0], "expired") {
				t.Errorf("%s dead-lettered with %q, want an expiry", id, dlq[id][0])
			}
			shortDLQ++
		case got[id] > 0:
			shortDelivered++
		default:
			lostExpired++
		}
		if got[id] > 0 && len(dlq[id]) > 0 {
			t.Errorf("%s both delivered and dead-lettered: %v", id, dlq[id])
		}
	}
	for i, code := range shortCodes {
		if code != http.StatusUnprocessableEntity {
			t.Errorf("cmd-short-h-%d (TTL 3 s, posted while the broker was down): final answer %d, want 422 (expired)", i, code)
		}
	}
	for id := range sent {
		if len(dlq[id]) > 0 {
			t.Errorf("%s (TTL 120 s) dead-lettered: %v", id, dlq[id])
		}
	}
	load.mu.Lock()
	r.Note = fmt.Sprintf("%d expired ones dead-lettered, %d delivered before expiry, %d lost; HTTP: %d answers 503 retried, %d expired while retrying (422), %d of the 5 posted during the outage got 422",
		shortDLQ, shortDelivered, lostExpired, load.retries503, load.httpExpired, count422(shortCodes))
	if len(load.httpErrs) > 0 {
		t.Errorf("unexpected HTTP answers: %v", load.httpErrs[:min(5, len(load.httpErrs))])
	}
	load.mu.Unlock()
	mustNotLose(t, r, sent, got)
	if lostExpired > 0 {
		t.Errorf("%d expired commands neither delivered nor dead-lettered", lostExpired)
	}
	if n := streamCount(js, "NR_COMMANDS", ""); n != 0 {
		t.Errorf("%d commands left in NR_COMMANDS", n)
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code after SIGTERM = %d", code)
	}
}
