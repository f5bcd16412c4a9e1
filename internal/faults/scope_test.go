//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestScopeChange restarts a bridge on Kafka with ORG_ID changed, in both
// directions, and the same MQTT_CLIENT_ID, so its persistent sessions still
// hold the earlier scope's subscriptions: no event of another org is
// forwarded and no event is written twice.
func TestScopeChange(t *testing.T) {
	for _, tc := range []struct{ before, after string }{{"", "o1"}, {"o1", ""}} {
		name := fmt.Sprintf("org-id-%q-to-%q", tc.before, tc.after)
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
			k := testserver.StartKafka(t, testserver.KafkaOptions{})
			bin := bridgeBinary(t, false)
			env := func(org string) map[string]string {
				e := kafkaEnv(mq.URL(), k.Brokers(), "fi-scope")
				e["MQTT_WORKERS"] = "2"
				e["ORG_ID"] = org
				return e
			}
			first := startBridge(t, bin, "before", env(tc.before))
			if code := first.stop(syscall.SIGTERM); code != 0 {
				t.Fatalf("exit code after SIGTERM = %d", code)
			}

			node := connectMQTT(t, mq.URL(), "fi-scope-nodes", mqttOptions{})
			// An event no subscription takes (another org's, once the
			// bridge is scoped) gets PUBACK 0x10: that is the point.
			publish := func(org, what string, n int) {
				t.Helper()
				for i := range n {
					topic := fmt.Sprintf("org/%s/node/n1/events", org)
					if err := node.publishOnce(topic, fmt.Appendf(nil, "%s-%s-%d", org, what, i), nil); err != nil && !errors.Is(err, errNoSubscribers) {
						t.Fatal(err)
					}
				}
			}
			// While the bridge is down: queued in its sessions through
			// the earlier scope's subscriptions.
			const queued, live = 20, 200
			publish("o1", "queued", queued)
			publish("other", "queued", queued)

			b := startBridge(t, bin, "after", env(tc.after))
			wantStored, wantDead, received := queued, 0, queued
			if tc.before == "" {
				wantDead, received = queued, 2*queued // other's, now out of scope
			}
			// Each worker removes the earlier scope's two filters from its
			// session (events, reply): 2 workers, 2 filters.
			testserver.WaitFor(t, 30*time.Second, "earlier scope's subscriptions removed", func() bool {
				return b.countLog("subscription of an earlier scope removed") == 4
			})
			publish("o1", "live", live)
			publish("other", "live", live)
			wantStored += live
			received += live
			if tc.after == "" {
				wantStored += live
				received += live
			}
			testserver.WaitFor(t, 60*time.Second, "every delivery handled", func() bool {
				return kafkaEnd(k.Brokers(), "nr.events") >= int64(wantStored) && kafkaEnd(k.Brokers(), "nr.dlq") >= int64(wantDead) &&
					int(b.metric("nr_bridge_messages_received_total")) >= received && b.metric("nr_bridge_inflight_messages") == 0
			})
			if got := int(b.metric("nr_bridge_messages_received_total")); got != received {
				t.Errorf("the bridge received %d messages, want %d (a second copy through a stale subscription?)", got, received)
			}
			stored := map[string]int{}
			for _, r := range kafkaRecords(t, k.Brokers(), "nr.events") {
				stored[string(r.Value)]++
				if tc.after != "" && !strings.HasPrefix(string(r.Value), tc.after+"-") {
					t.Errorf("out-of-scope event %q forwarded", r.Value)
				}
			}
			twice := 0
			for v, n := range stored {
				if n > 1 {
					twice++
					t.Errorf("event %q written %d times", v, n)
				}
			}
			if len(stored) != wantStored {
				t.Errorf("nr.events holds %d distinct events, want %d", len(stored), wantStored)
			}
			dead := kafkaRecords(t, k.Brokers(), "nr.dlq")
			for _, r := range dead {
				if !strings.HasPrefix(string(r.Value), "other-queued-") || !strings.Contains(recordHeader(r, "Nr-Error"), "outside ORG_ID o1") {
					t.Errorf("dead letter %q with Nr-Error %q", r.Value, recordHeader(r, "Nr-Error"))
				}
			}
			if len(dead) != wantDead {
				t.Errorf("nr.dlq holds %d, want %d", len(dead), wantDead)
			}
			r := result{Name: "scope-change-" + name, Sent: received, Arrived: len(stored) + len(dead), Duplicates: twice, Time: time.Since(start)}
			r.Note = fmt.Sprintf("%d stored, %d dead-lettered out_of_scope", len(stored), len(dead))
			checkDuplicates(t, &r, exactlyOnce, b)
			record(t, r)
			if code := b.stop(syscall.SIGTERM); code != 0 {
				t.Errorf("exit code after SIGTERM = %d", code)
			}
		})
	}
}

// TestKafkaCommandReplicaCrash runs two replicas consuming nr.commands
// while commands flow, kill -9s one and starts it again at once with the
// same client ID: with static group membership it resumes its partitions
// without waiting for the group's session timeout. The scenario reports the
// longest time a command waited from its write to its delivery (the
// handover) and the duplicates; it requires every command delivered.
func TestKafkaCommandReplicaCrash(t *testing.T) {
	start := time.Now()
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{Persistence: true})
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	bin := bridgeBinary(t, false)
	r1 := startBridge(t, bin, "replica-1", kafkaEnv(mq.URL(), k.Brokers(), "fi-cmdcrash-1"))
	r2 := startBridge(t, bin, "replica-2", kafkaEnv(mq.URL(), k.Brokers(), "fi-cmdcrash-2"))

	var mu sync.Mutex
	delivered := map[string][]time.Time{}
	connectMQTT(t, mq.URL(), "fi-cmdcrash-node", mqttOptions{
		Persistent: true,
		Filters:    []string{"org/o1/node/+/cmd"},
		OnMessage: func(p *paho.Publish) {
			if p.Properties == nil {
				return
			}
			mu.Lock()
			delivered[string(p.Properties.CorrelationData)] = append(delivered[string(p.Properties.CorrelationData)], time.Now())
			mu.Unlock()
		},
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	written := map[string]time.Time{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond) // 50 commands/s over 10 nodes
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("crash-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			at := time.Now()
			err := cl.ProduceSync(ctx, &kgo.Record{Topic: "nr.commands", Key: fmt.Appendf(nil, "org/o1/node/n%d", i%10),
				Value: commandDoc(id, at, 2*time.Minute)}).FirstErr()
			cancel()
			if err != nil {
				t.Errorf("produce %s: %v", id, err)
				return
			}
			mu.Lock()
			written[id] = at
			mu.Unlock()
		}
	}()
	time.Sleep(3 * time.Second)
	if code := r2.stop(syscall.SIGKILL); code != -1 {
		t.Errorf("exit code after SIGKILL = %d", code)
	}
	killed := time.Now()
	r2.start()
	time.Sleep(outage)
	close(stop)
	<-done

	mu.Lock()
	ids := make([]string, 0, len(written))
	for id := range written {
		ids = append(ids, id)
	}
	mu.Unlock()
	testserver.WaitFor(t, 90*time.Second, "every command delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if len(delivered[id]) == 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	var handover time.Duration
	dups := 0
	for _, id := range ids {
		d := delivered[id]
		dups += len(d) - 1
		if written[id].After(killed.Add(-time.Second)) {
			handover = max(handover, d[0].Sub(written[id]))
		}
	}
	mu.Unlock()
	r := result{Name: "kafka-command-replica-kill9", Sent: len(ids), Arrived: len(ids), Duplicates: dups, Time: time.Since(start)}
	r.Note = fmt.Sprintf("longest wait of a command written from 1 s before the kill: %v (static membership; the group session timeout is 45 s)", handover.Round(10*time.Millisecond))
	// The killed replica commits a poll's offsets once its commands are
	// published: what it published and had not committed is consumed and
	// published again by its successor, at most one poll.
	checkDuplicates(t, &r, writtenTwiceBound{500, "one poll of the killed replica published and not committed (KAFKA_COMMAND_POLL_RECORDS 500)"}, r1, r2)
	record(t, r)
	for _, b := range []*bridgeProc{r1, r2} {
		if code := b.stop(syscall.SIGTERM); code != 0 {
			t.Errorf("%s: exit code after SIGTERM = %d", b.name, code)
		}
	}
}
