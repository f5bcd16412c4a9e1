package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"

	"github.com/caarlos0/env/v11"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/kafkastatus"
	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/internal/tracker"
	kafkasink "github.com/nr-bridge/nr-bridge/sinks/kafka"
	"github.com/nr-bridge/nr-bridge/sinks/natsjs"
)

// trackLogger logs warnings and errors to the test output (franz-go is
// chatty at debug level).
func trackLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewJSONHandler(cmdTestWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// trackBackbone is one backbone for the tracking tests: open gives a
// replica its own sink and status store (own connection or clients), and
// replies counts the replies written to NR_REPLIES or nr.replies.
type trackBackbone struct {
	open    func(t *testing.T, name string) (bridge.Sink, bridge.StatusStore)
	replies func(t *testing.T) int
}

// trackBackbones starts each backbone's server for one test.
var trackBackbones = []struct {
	name  string
	start func(t *testing.T) trackBackbone
}{
	{"nats", startTrackNATS},
	{"kafka", startTrackKafka},
}

func startTrackNATS(t *testing.T) trackBackbone {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	_, js := testclient.ConnectNATS(t, ns.URL())
	cfg := natsjs.Config{Streams: natsconn.Streams{SubjectPrefix: "nr", DLQStream: "NR_DLQ", ManageStreams: true, Replicas: 1, MaxAge: time.Hour, DuplicateWindow: 10 * time.Minute}, EventsStream: "NR_EVENTS", RepliesStream: "NR_REPLIES", PublishWindow: 256, AckTimeout: 2 * time.Second}
	return trackBackbone{
		open: func(t *testing.T, name string) (bridge.Sink, bridge.StatusStore) {
			log := trackLogger(t)
			nc, err := natsconn.Connect(natsconn.Config{URL: ns.URL()}, name, log)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sink, err := bridgetest.StartNATSSink(ctx, nc, cfg, log, nil)
			if err != nil {
				t.Fatal(err)
			}
			store, err := natsstatus.New(ctx, mustJetStream(t, nc), natsstatus.Config{Bucket: "NR_COMMAND_STATUS"},
				natsstatus.Options{Manage: true, Replicas: 1, TTL: time.Hour}, log)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = sink.Close(context.Background())
				nc.Close()
			})
			return sink, store
		},
		replies: func(*testing.T) int { return testclient.StreamCount(js, "NR_REPLIES") },
	}
}

func startTrackKafka(t *testing.T) trackBackbone {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	var conn kafkaconn.Config
	environ := map[string]string{"KAFKA_BROKERS": strings.Join(k.Brokers(), ","), "KAFKA_TOPIC_PARTITIONS": "3"}
	if err := env.ParseWithOptions(&conn, env.Options{Environment: environ}); err != nil {
		t.Fatal(err)
	}
	return trackBackbone{
		open: func(t *testing.T, name string) (bridge.Sink, bridge.StatusStore) {
			log := trackLogger(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := conn
			c.ClientID = name
			sink, err := bridgetest.StartKafkaSink(ctx, c, kafkasink.Config{Window: 256}, log)
			if err != nil {
				t.Fatal(err)
			}
			store, err := kafkastatus.New(c, kafkastatus.Config{Topic: "nr.command-status", MaxCommands: 1000, MaxBytes: 64 << 20}, time.Hour, log)
			if err == nil {
				if err = store.Start(ctx); err != nil {
					_ = store.Close(ctx)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = sink.Close(context.Background())
				_ = store.Close(context.Background())
			})
			return sink, store
		},
		replies: func(t *testing.T) int {
			cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, conn.RepliesTopic)
			if err != nil {
				return -1
			}
			n := 0
			ends.Each(func(o kadm.ListedOffset) { n += int(o.Offset) })
			return n
		},
	}
}

// trackReplica is one bridge replica: workers writing through the tracker's
// sink decorator, a publisher reporting to the tracker, the HTTP API.
type trackReplica struct {
	h       http.Handler
	metrics *metrics.Metrics
	pub     *publisher.Publisher
	recv    *ingest.Receiver
}

func startTrackReplica(t *testing.T, bb trackBackbone, brokerURL, name string) *trackReplica {
	t.Helper()
	return startTrackReplicaWith(t, bb, brokerURL, name, nil)
}

// startTrackReplicaWith is startTrackReplica with set changing the API's
// dependencies (limits) before the handler is built.
func startTrackReplicaWith(t *testing.T, bb trackBackbone, brokerURL, name string, set func(*api.Deps)) *trackReplica {
	t.Helper()
	log := trackLogger(t).With("replica", name)
	sink, store := bb.open(t, name)
	m := metrics.New("test", "test")
	tr := tracker.New(tracker.Config{Grace: time.Hour}, log, m)
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr.Attach(store)
	t.Cleanup(func() {
		if err := tr.Close(context.Background()); err != nil {
			t.Errorf("close tracker: %v", err)
		}
	})
	cfg := cmdTestMQTTConfig(brokerURL, name, "")
	cfg.Workers = 2
	pub := publisher.New(cfg, log, nil)
	pub.Observe(tr)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	recv := ingest.NewReceiver(cfg, tr.WrapSink(sink), log, nil)
	if err := recv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = recv.Close(ctx)
	})
	testserver.WaitFor(t, 10*time.Second, name+" connected", func() bool { return pub.Ready() == nil && recv.Ready() == nil })
	deps := api.Deps{Log: log, Commands: bridge.NewIntake(pub, bridge.CommandLimits{}, "", nil), Statuses: tr, Metrics: m}
	if set != nil {
		set(&deps)
	}
	return &trackReplica{
		h:       api.NewHandler(deps),
		metrics: m,
		pub:     pub,
		recv:    recv,
	}
}

// completed reads nr_bridge_commands_completed_total{status}.
func (r *trackReplica) completed(t *testing.T, status string) int {
	t.Helper()
	mfs, err := r.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nr_bridge_commands_completed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "status" && l.GetValue() == status {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	t.Fatalf("no nr_bridge_commands_completed_total{status=%q}", status)
	return 0
}

// replyLatencies is the sample count of nr_bridge_command_reply_latency_seconds.
func (r *trackReplica) replyLatencies(t *testing.T) int {
	t.Helper()
	mfs, err := r.metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "nr_bridge_command_reply_latency_seconds" {
			return int(mf.GetMetric()[0].GetHistogram().GetSampleCount())
		}
	}
	return 0
}

type httpResult struct {
	code   int
	header http.Header
	raw    string
	body   map[string]any
}

func (r *trackReplica) do(t *testing.T, method, path string, body []byte) httpResult {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	r.h.ServeHTTP(rec, req)
	res := httpResult{code: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
		t.Fatalf("%s %s: %d %q is not a JSON object: %v", method, path, rec.Code, res.raw, err)
	}
	return res
}

// statusOf GETs a command's status document.
func (r *trackReplica) statusOf(t *testing.T, org, id string) (int, *bridge.CommandStatus) {
	t.Helper()
	res := r.do(t, http.MethodGet, "/org/"+org+"/commands/"+url.PathEscape(id), nil)
	if res.code != http.StatusOK {
		return res.code, nil
	}
	var s bridge.CommandStatus
	if err := json.Unmarshal([]byte(res.raw), &s); err != nil {
		t.Fatal(err)
	}
	return res.code, &s
}

// simNode is a simulated agent node: it subscribes to its command topic
// (and its org's broadcasts) and answers each command on its reply topic
// with the command's correlation data, once released.
type simNode struct {
	cm      *autopaho.ConnectionManager
	release chan struct{}
	wg      sync.WaitGroup // reply goroutines
	mu      sync.Mutex
	got     []string // correlation IDs of commands received
}

// startSimNode connects node; with hold set it answers only after
// Release.
func startSimNode(t *testing.T, brokerURL, org, node string, hold bool) *simNode {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	n := &simNode{release: make(chan struct{})}
	if !hold {
		close(n.release)
	}
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := make(chan error, 1)
	replyTopic := "org/" + org + "/node/" + node + "/reply"
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              func(int) time.Duration { return 200 * time.Millisecond },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
				defer scancel()
				_, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
					{Topic: "org/" + org + "/node/" + node + "/cmd", QoS: 1},
					{Topic: "org/" + org + "/broadcast/cmd", QoS: 1},
				}})
				select {
				case subscribed <- err:
				default:
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "sim-" + node + "-" + strings.ReplaceAll(t.Name(), "/", "-"),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				p := pr.Packet
				if p.Properties == nil || len(p.Properties.CorrelationData) == 0 {
					return true, nil
				}
				corr := append([]byte(nil), p.Properties.CorrelationData...)
				n.mu.Lock()
				n.got = append(n.got, string(corr))
				// Under the lock received() takes, so a test that saw the
				// command also saw the Add before the cleanup's Wait.
				n.wg.Add(1)
				n.mu.Unlock()
				go func() {
					defer n.wg.Done()
					select {
					case <-n.release:
					case <-ctx.Done():
						return
					}
					pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
					defer pcancel()
					_, _ = n.cm.Publish(pctx, &paho.Publish{
						QoS:     1,
						Topic:   replyTopic,
						Payload: fmt.Appendf(nil, `{"ok": true, "node": %q, "answer_to": %q}`, node, corr),
						Properties: &paho.PublishProperties{
							CorrelationData: corr,
							ContentType:     "application/json",
						},
					})
				}()
				return true, nil
			}},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	n.cm = cm
	t.Cleanup(func() {
		cancel()
		n.wg.Wait()
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
	})
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("node %s: subscribe: %v", node, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("node %s: not subscribed", node)
	}
	return n
}

// Release lets a holding node send its replies.
func (n *simNode) Release() { close(n.release) }

func (n *simNode) received() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.got)
}

// cmdWithTTL is a valid command document with ttl_sec set.
func cmdWithTTL(corr string, ttl int) []byte {
	return cmdBody(corr, map[string]string{"ttl_sec": fmt.Sprint(ttl), "payload": `{"action": "ping"}`})
}

func TestCommandTrackingReplied(t *testing.T) {
	for _, bbc := range trackBackbones {
		t.Run(bbc.name, func(t *testing.T) {
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
			bb := bbc.start(t)
			a := startTrackReplica(t, bb, mq.URL(), "track-a")
			node := startSimNode(t, mq.URL(), "acme", "n1", true)

			res := a.do(t, http.MethodPost, "/org/acme/node/n1/cmd", cmdWithTTL("corr-1", 60))
			want := map[string]any{"status": "published", "topic": "org/acme/node/n1/cmd", "correlation_id": "corr-1", "status_url": "/org/acme/commands/corr-1"}
			if res.code != http.StatusAccepted || fmt.Sprint(res.body) != fmt.Sprint(want) {
				t.Fatalf("POST: %d %s, want 202 %v", res.code, res.raw, want)
			}
			if loc := res.header.Get("Location"); loc != "/org/acme/commands/corr-1" {
				t.Errorf("Location %q", loc)
			}
			testserver.WaitFor(t, 10*time.Second, "the node got the command", func() bool { return node.received() == 1 })

			code, s := a.statusOf(t, "acme", "corr-1")
			if code != http.StatusOK || s.Status != bridge.StatusPublished || s.ReasonCode == nil || *s.ReasonCode != 0 || s.NoSubscribers ||
				s.Node != "n1" || s.Type != "reboot" || s.Source != bridge.SourceHTTP || s.AcceptedAt.IsZero() || s.PublishedAt.Before(s.AcceptedAt) || len(s.Replies) != 0 {
				t.Fatalf("before the reply: %d %+v, want published with reason code 0", code, s)
			}

			node.Release()
			testserver.WaitFor(t, 10*time.Second, "status replied", func() bool {
				_, s = a.statusOf(t, "acme", "corr-1")
				return s != nil && s.Status == bridge.StatusReplied
			})
			if len(s.Replies) != 1 || s.Replies[0].Node != "n1" || s.Replies[0].ContentType != "application/json" ||
				string(s.Replies[0].Payload) != `{"ok":true,"node":"n1","answer_to":"corr-1"}` || s.Replies[0].Size != 49 ||
				s.RepliedAt.Before(s.PublishedAt) || !s.RepliedAt.Equal(s.Replies[0].ReceivedAt) {
				t.Fatalf("replied status: %+v", s)
			}

			// Send and get the answer in one call.
			res = a.do(t, http.MethodPost, "/org/acme/node/n1/cmd?wait=5s", cmdWithTTL("corr-2", 60))
			if res.code != http.StatusOK || res.body["status"] != "replied" || res.body["correlation_id"] != "corr-2" {
				t.Fatalf("POST ?wait=5s: %d %s, want 200 replied", res.code, res.raw)
			}
			replies := res.body["replies"].([]any)
			if len(replies) != 1 || fmt.Sprint(replies[0].(map[string]any)["payload"]) != "map[answer_to:corr-2 node:n1 ok:true]" {
				t.Fatalf("POST ?wait=5s replies: %s", res.raw)
			}

			// The replies still reach the backbone, unchanged in number.
			testserver.WaitFor(t, 10*time.Second, "2 replies in the backbone", func() bool { return bb.replies(t) == 2 })
			testserver.WaitFor(t, 5*time.Second, "metrics", func() bool { return a.completed(t, bridge.StatusReplied) == 2 })
			if n := a.replyLatencies(t); n != 2 {
				t.Errorf("reply latency samples %d, want 2", n)
			}
			if a.completed(t, bridge.StatusExpired) != 0 || a.completed(t, bridge.StatusFailed) != 0 {
				t.Errorf("expired %d failed %d, want 0", a.completed(t, bridge.StatusExpired), a.completed(t, bridge.StatusFailed))
			}
		})
	}
}

func TestCommandTrackingNoSubscribers(t *testing.T) {
	for _, bbc := range trackBackbones {
		t.Run(bbc.name, func(t *testing.T) {
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
			bb := bbc.start(t)
			a := startTrackReplica(t, bb, mq.URL(), "track-a")

			res := a.do(t, http.MethodPost, "/org/acme/node/nobody/cmd", cmdWithTTL("lonely", 2))
			if res.code != http.StatusAccepted || res.body["no_subscribers"] != true || res.body["status"] != "published" {
				t.Fatalf("POST: %d %s, want 202 with no_subscribers", res.code, res.raw)
			}
			// Nobody will answer: a wait returns at once.
			res = a.do(t, http.MethodPost, "/org/acme/node/nobody/cmd?wait=30", cmdWithTTL("lonely-wait", 60))
			if res.code != http.StatusAccepted || res.body["no_subscribers"] != true {
				t.Fatalf("POST ?wait: %d %s, want 202 with no_subscribers", res.code, res.raw)
			}
			code, s := a.statusOf(t, "acme", "lonely")
			if code != http.StatusOK || s.Status != bridge.StatusPublished || !s.NoSubscribers || s.ReasonCode == nil || *s.ReasonCode != 0x10 {
				t.Fatalf("GET: %d %+v, want published, no_subscribers, reason code 16", code, s)
			}
			testserver.WaitFor(t, 10*time.Second, "status expired", func() bool {
				_, s = a.statusOf(t, "acme", "lonely")
				return s != nil && s.Status == bridge.StatusExpired && !s.ExpiredAt.IsZero()
			})
			if s.ExpiredAt.Before(s.ExpiresAt) {
				t.Errorf("expired_at %s before expires_at %s", s.ExpiredAt, s.ExpiresAt)
			}
			testserver.WaitFor(t, 5*time.Second, "expired counted", func() bool { return a.completed(t, bridge.StatusExpired) == 1 })

			// Errors of the status route.
			for _, tt := range []struct {
				path, wantError string
				wantCode        int
			}{
				{"/org/acme/commands/never-sent", `command "never-sent" of org "acme": command status not found (never sent through the bridge, or older than the command TTL plus COMMAND_STATUS_GRACE)`, 404},
				{"/org/ac%2Bme/commands/x", `org id "ac+me": must be 1 to 64 characters of A-Z a-z 0-9 _ -: invalid id`, 400},
			} {
				res := a.do(t, http.MethodGet, tt.path, nil)
				if res.code != tt.wantCode || res.body["error"] != tt.wantError {
					t.Errorf("GET %s: %d %s, want %d %q", tt.path, res.code, res.raw, tt.wantCode, tt.wantError)
				}
			}
			res = a.do(t, http.MethodPost, "/org/acme/node/nobody/cmd?wait=soon", cmdWithTTL("bad-wait", 60))
			if res.code != http.StatusBadRequest || res.body["field"] != "wait" {
				t.Errorf("POST ?wait=soon: %d %s, want 400 on field wait", res.code, res.raw)
			}
			if code, _ := a.statusOf(t, "acme", "bad-wait"); code != http.StatusNotFound {
				t.Errorf("a command refused for its wait parameter has status %d, want 404 (never published)", code)
			}
		})
	}
}

func TestCommandTrackingTwoReplicas(t *testing.T) {
	for _, bbc := range trackBackbones {
		t.Run(bbc.name, func(t *testing.T) {
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
			bb := bbc.start(t)
			a := startTrackReplica(t, bb, mq.URL(), "track-a")
			b := startTrackReplica(t, bb, mq.URL(), "track-b")
			startSimNode(t, mq.URL(), "acme", "n1", false)
			startSimNode(t, mq.URL(), "acme", "n2", false)

			// Every command is posted to a; the shared subscription hands
			// the replies to a's and b's workers in turn.
			const n = 8
			for i := range n {
				id := fmt.Sprintf("two-%d", i)
				res := a.do(t, http.MethodPost, "/org/acme/node/n1/cmd?wait=5s", cmdWithTTL(id, 60))
				if res.code != http.StatusOK || res.body["status"] != "replied" {
					t.Fatalf("POST %s ?wait on a: %d %s, want 200 replied", id, res.code, res.raw)
				}
			}
			for i := range n {
				id := fmt.Sprintf("two-%d", i)
				for name, r := range map[string]*trackReplica{"a": a, "b": b} {
					testserver.WaitFor(t, 10*time.Second, id+" replied on "+name, func() bool {
						_, s := r.statusOf(t, "acme", id)
						return s != nil && s.Status == bridge.StatusReplied && len(s.Replies) == 1 && s.Replies[0].Node == "n1"
					})
				}
			}
			testserver.WaitFor(t, 5*time.Second, "metrics", func() bool {
				return a.completed(t, bridge.StatusReplied)+b.completed(t, bridge.StatusReplied) == n
			})
			if a.completed(t, bridge.StatusReplied) == 0 || b.completed(t, bridge.StatusReplied) == 0 {
				t.Errorf("replies recorded by a %d, by b %d: want both replicas to have matched some", a.completed(t, bridge.StatusReplied), b.completed(t, bridge.StatusReplied))
			}

			// A broadcast collects one reply per node, whichever replica
			// gets each.
			res := a.do(t, http.MethodPost, "/org/acme/broadcast/cmd", cmdWithTTL("bcast", 60))
			if res.code != http.StatusAccepted || res.body["status_url"] != "/org/acme/commands/bcast" {
				t.Fatalf("broadcast: %d %s", res.code, res.raw)
			}
			testserver.WaitFor(t, 10*time.Second, "2 broadcast replies on b", func() bool {
				_, s := b.statusOf(t, "acme", "bcast")
				return s != nil && len(s.Replies) == 2
			})
			_, s := a.statusOf(t, "acme", "bcast")
			if s == nil || s.Status != bridge.StatusReplied || !s.Broadcast || len(s.Replies) != 2 || s.Replies[0].Node == s.Replies[1].Node {
				t.Fatalf("broadcast on a: %+v", s)
			}
			testserver.WaitFor(t, 10*time.Second, "replies in the backbone", func() bool { return bb.replies(t) == n+2 })
		})
	}
}

// TestCommandTrackingAcceptedAndFailed stops the broker: a stream command
// then stays accepted (its source retries), an HTTP command fails with the
// reason; once the broker is back the stream command's retry is published
// and answered.
func TestCommandTrackingAcceptedAndFailed(t *testing.T) {
	for _, bbc := range trackBackbones {
		t.Run(bbc.name, func(t *testing.T) {
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
			bb := bbc.start(t)
			a := startTrackReplica(t, bb, mq.URL(), "track-a")
			startSimNode(t, mq.URL(), "acme", "n1", false)

			mq.Stop()
			testserver.WaitFor(t, 10*time.Second, "publisher down", func() bool { return a.pub.Ready() != nil })
			cmd, err := bridge.ParseCommand(cmdWithTTL("from-stream", 60), time.Now(), bridge.CommandLimits{})
			if err != nil {
				t.Fatal(err)
			}
			target := bridge.Target{Org: "acme", Node: "n1"}
			if _, err := a.pub.Publish(context.Background(), target, cmd, bridge.SourceStream); !errors.Is(err, bridge.ErrNotConnected) {
				t.Fatalf("publish with the broker down: %v, want ErrNotConnected", err)
			}
			code, s := a.statusOf(t, "acme", "from-stream")
			if code != http.StatusOK || s.Status != bridge.StatusAccepted || s.Source != bridge.SourceStream || s.AcceptedAt.IsZero() || !s.PublishedAt.IsZero() || s.Error != "" {
				t.Fatalf("stream command with the broker down: %d %+v, want accepted", code, s)
			}

			res := a.do(t, http.MethodPost, "/org/acme/node/n1/cmd?wait=5s", cmdWithTTL("from-http", 60))
			if res.code != http.StatusServiceUnavailable {
				t.Fatalf("POST with the broker down: %d %s, want 503", res.code, res.raw)
			}
			code, s = a.statusOf(t, "acme", "from-http")
			if code != http.StatusOK || s.Status != bridge.StatusFailed || s.FailedAt.IsZero() || !strings.Contains(s.Error, "mqtt not connected") {
				t.Fatalf("HTTP command with the broker down: %d %+v, want failed with the reason", code, s)
			}
			if n := a.completed(t, bridge.StatusFailed); n != 1 {
				t.Errorf("failed counted %d times, want 1", n)
			}

			mq.Restart()
			testserver.WaitFor(t, 20*time.Second, "bridge reconnected", func() bool { return a.pub.Ready() == nil && a.recv.Ready() == nil })
			// The node resubscribes on its own; until then the broker says
			// no subscribers, and the source would retry.
			testserver.WaitFor(t, 20*time.Second, "stream command published to the node", func() bool {
				res, err := a.pub.Publish(context.Background(), target, cmd, bridge.SourceStream)
				return err == nil && res.ReasonCode == 0
			})
			testserver.WaitFor(t, 10*time.Second, "stream command replied", func() bool {
				_, s = a.statusOf(t, "acme", "from-stream")
				return s != nil && s.Status == bridge.StatusReplied
			})
			if s.PublishedAt.IsZero() || s.ReasonCode == nil || *s.ReasonCode != 0 || s.NoSubscribers {
				t.Errorf("after the retry: %+v, want published with reason code 0", s)
			}
		})
	}
}

// TestCommandStatusAuth: the status route takes the command routes'
// tokens and org scope.
func TestCommandStatusAuth(t *testing.T) {
	log := trackLogger(t)
	auth, err := api.NewAuth(api.AuthConfig{Tokens: "t-acme=acme"}, "", log)
	if err != nil {
		t.Fatal(err)
	}
	tr := tracker.New(tracker.Config{Grace: time.Hour}, log, nil)
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	cfg := cmdTestMQTTConfig("tcp://127.0.0.1:1", "auth-test", "")
	h := api.NewHandler(api.Deps{Log: log, Commands: bridge.NewIntake(publisher.New(cfg, log, nil), bridge.CommandLimits{}, "", nil), Statuses: tr, Auth: auth})
	for _, tt := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", "/org/acme/commands/c-1", "", http.StatusUnauthorized},
		{"wrong token", "/org/acme/commands/c-1", "nope", http.StatusUnauthorized},
		{"other org", "/org/other/commands/c-1", "t-acme", http.StatusForbidden},
		{"own org, store not open yet", "/org/acme/commands/c-1", "t-acme", http.StatusServiceUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("GET %s: %d %s, want %d", tt.path, rec.Code, rec.Body, tt.want)
			}
			if tt.want == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") != "5" {
				t.Errorf("503 without Retry-After")
			}
		})
	}
}

// mustJetStream is a JetStream context on nc, as the bridge gives the
// status bucket.
func mustJetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := natsconn.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
