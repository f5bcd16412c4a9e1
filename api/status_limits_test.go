package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nr-bridge/nr-bridge/api"
	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/kafkastatus"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/internal/tracker"
)

// replyProps are the properties of a node's reply to correlation ID id.
func replyProps(id string) *paho.PublishProperties {
	return &paho.PublishProperties{CorrelationData: []byte(id), ContentType: "application/json"}
}

// TestCommandStatusSurvivesNestedReply (issue 12.5): a node answers a
// broadcast with JSON nesting 10,000 arrays, another node then answers
// honestly: the status stays readable (200), the hostile payload is kept
// as base64, the honest one as JSON.
func TestCommandStatusSurvivesNestedReply(t *testing.T) {
	for _, bbc := range trackBackbones {
		t.Run(bbc.name, func(t *testing.T) {
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
			bb := bbc.start(t)
			a := startTrackReplica(t, bb, mq.URL(), "track-a")
			nodes := testclient.ConnectMQTT(t, mq.URL(), "nodes-"+bbc.name)

			res := a.do(t, http.MethodPost, "/org/acme/broadcast/cmd", cmdWithTTL("deep", 60))
			if res.code != http.StatusAccepted {
				t.Fatalf("POST: %d %s", res.code, res.raw)
			}
			hostile := []byte(strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000))
			nodes.Publish("org/acme/node/evil/reply", hostile, replyProps("deep"))
			testserver.WaitFor(t, 10*time.Second, "the nested reply recorded", func() bool {
				code, s := a.statusOf(t, "acme", "deep")
				return code == http.StatusOK && len(s.Replies) == 1
			})
			nodes.Publish("org/acme/node/n1/reply", []byte(`{"ok": true}`), replyProps("deep"))
			var s *bridge.CommandStatus
			testserver.WaitFor(t, 10*time.Second, "the honest reply recorded", func() bool {
				var code int
				code, s = a.statusOf(t, "acme", "deep")
				if code != http.StatusOK {
					t.Fatalf("GET after the nested reply: %d", code)
				}
				return len(s.Replies) == 2
			})
			byNode := map[string]bridge.Reply{}
			for _, r := range s.Replies {
				byNode[r.Node] = r
			}
			evil, n1 := byNode["evil"], byNode["n1"]
			if s.Status != bridge.StatusReplied || evil.Payload != nil || evil.PayloadBase64 == "" || evil.Size != 20_000 || evil.Truncated ||
				string(n1.Payload) != `{"ok":true}` || n1.Size != 12 {
				t.Fatalf("status %s, replies %+v", s.Status, s.Replies)
			}
			testserver.WaitFor(t, 10*time.Second, "both replies in the backbone", func() bool { return bb.replies(t) == 2 })
		})
	}
}

// TestCommandStatusLargeReply (issue 18.5): a 1.2 MB reply is over what
// NR_REPLIES (max_payload 1 MiB) and nr.replies (KAFKA_MAX_MESSAGE_BYTES
// 1,000,000) take, so it is dead-lettered; its command is still replied,
// the payload left out (truncated, dead_lettered).
func TestCommandStatusLargeReply(t *testing.T) {
	for _, bbc := range trackBackbones {
		t.Run(bbc.name, func(t *testing.T) {
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
			bb := bbc.start(t)
			a := startTrackReplica(t, bb, mq.URL(), "track-a")
			nodes := testclient.ConnectMQTT(t, mq.URL(), "nodes-"+bbc.name)

			res := a.do(t, http.MethodPost, "/org/acme/node/n1/cmd", cmdWithTTL("big", 60))
			if res.code != http.StatusAccepted {
				t.Fatalf("POST: %d %s", res.code, res.raw)
			}
			payload := []byte(`{"data":"` + strings.Repeat("x", 1_200_000) + `"}`)
			nodes.Publish("org/acme/node/n1/reply", payload, replyProps("big"))
			var s *bridge.CommandStatus
			testserver.WaitFor(t, 10*time.Second, "the large reply recorded", func() bool {
				_, s = a.statusOf(t, "acme", "big")
				return s != nil && s.Status == bridge.StatusReplied
			})
			r := s.Replies[0]
			if len(s.Replies) != 1 || r.Node != "n1" || r.Size != len(payload) || !r.Truncated || !r.DeadLettered || r.Payload != nil || r.PayloadBase64 != "" ||
				r.ContentType != "application/json" {
				t.Fatalf("replies %+v, want n1's, truncated and dead-lettered", s.Replies)
			}
			// A later small reply to another command shows the replies
			// stream works, and did not get the large one.
			res = a.do(t, http.MethodPost, "/org/acme/node/n1/cmd", cmdWithTTL("small", 60))
			if res.code != http.StatusAccepted {
				t.Fatalf("POST: %d %s", res.code, res.raw)
			}
			nodes.Publish("org/acme/node/n1/reply", []byte(`{"ok":true}`), replyProps("small"))
			testserver.WaitFor(t, 10*time.Second, "the small reply recorded", func() bool {
				_, s := a.statusOf(t, "acme", "small")
				return s != nil && s.Status == bridge.StatusReplied && !s.Replies[0].DeadLettered && string(s.Replies[0].Payload) == `{"ok":true}`
			})
			testserver.WaitFor(t, 10*time.Second, "one reply in the backbone", func() bool { return bb.replies(t) == 1 })
		})
	}
}

// TestCommandStatusEvicted: a command the Kafka view no longer holds
// answers 404 saying so, not "never sent".
func TestCommandStatusEvicted(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	conn := bridgetest.KafkaConfig(t, k.Brokers(), nil)
	log := trackLogger(t)
	open := func(max int) *kafkastatus.Store {
		st, err := kafkastatus.New(conn, kafkastatus.Config{Topic: "nr.command-status", MaxCommands: max, MaxBytes: 64 << 20}, time.Hour, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close(context.Background()) })
		if err := st.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return st
	}
	store, small := open(1000), open(1)
	ctx := context.Background()
	now := time.Now()
	for i, id := range []string{"old", "new"} {
		s := bridge.NewCommandStatus(bridge.Target{Org: "acme", Node: "n1"}, bridge.Command{Type: "reboot", CorrelationID: id, IssuedAt: now.Unix(), TTLSec: 60}, bridge.SourceHTTP, now.Add(time.Duration(i)*time.Millisecond))
		if _, err := store.Put(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	testserver.WaitFor(t, 10*time.Second, "the small view read both", func() bool {
		_, _, err := small.Get(ctx, "acme", "new")
		return err == nil
	})
	tr := tracker.New(tracker.Config{Grace: time.Hour}, log, nil)
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	tr.Attach(small)
	cfg := cmdTestMQTTConfig("tcp://127.0.0.1:1", "evict-test", "")
	r := &trackReplica{h: api.NewHandler(api.Deps{Log: log, Commands: bridge.NewIntake(publisher.New(cfg, log, nil), bridge.CommandLimits{}, "", nil), Statuses: tr})}
	for _, tt := range []struct{ id, want string }{
		{"old", `command "old" of org "acme": command status no longer held by this replica: command status not found (each replica keeps the newest KAFKA_STATUS_MAX_COMMANDS commands of an org; replies to it are still recorded)`},
		{"never", `command "never" of org "acme": command status not found (never sent through the bridge, or older than the command TTL plus COMMAND_STATUS_GRACE)`},
	} {
		res := r.do(t, http.MethodGet, "/org/acme/commands/"+tt.id, nil)
		if res.code != http.StatusNotFound || res.body["error"] != tt.want {
			t.Errorf("GET %s: %d %s, want 404 %q", tt.id, res.code, res.raw, tt.want)
		}
	}
	if code, s := r.statusOf(t, "acme", "new"); code != http.StatusOK || s.CorrelationID != "new" {
		t.Errorf("GET new: %d %+v", code, s)
	}
	if _, _, err := small.Get(ctx, "acme", "old"); !errors.Is(err, bridge.ErrStatusEvicted) {
		t.Errorf("store: %v", err)
	}
}
