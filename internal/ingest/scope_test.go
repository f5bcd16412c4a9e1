package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/ingest"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// doneCounter counts the messages the workers finished (written or
// dead-lettered, then acknowledged), so a test knows every delivery has
// its outcome before it counts what the streams hold.
type doneCounter struct {
	bridge.NopMetrics
	forwarded, deadLettered atomic.Int64
}

func (c *doneCounter) MessageForwarded(bridge.Kind, time.Duration) { c.forwarded.Add(1) }
func (c *doneCounter) DeadLettered(string)                         { c.deadLettered.Add(1) }

// logCounter is a slog handler target that counts lines containing a text.
type logCounter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCounter) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// runScoped runs a receiver with client ID clientID scoped to orgID until
// the returned stop is called.
func runScoped(t *testing.T, mqURL, natsURL, clientID, orgID string, m bridge.Metrics, log *slog.Logger) (stop func()) {
	t.Helper()
	cfg := mqttConfig(mqURL, clientID)
	cfg.OrgID = orgID
	nc, err := natsconn.Connect(natsconn.Config{URL: natsURL}, "test-"+clientID, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sink, err := bridgetest.StartNATSSink(ctx, nc, natsjsConfig(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := ingest.NewReceiver(cfg, sink, log, m)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := r.Close(ctx); err != nil {
				t.Errorf("stop receiver: %v", err)
			}
			if err := sink.Close(ctx); err != nil {
				t.Errorf("close sink: %v", err)
			}
			nc.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// A persistent session keeps the subscriptions of an earlier scope. After
// ORG_ID changes, in either direction, no event of another org is
// forwarded and no event is written twice: the worker checks every topic
// against its scope and removes the earlier scope's subscriptions.
func TestScopeChange(t *testing.T) {
	tests := []struct {
		name, before, after string
		// staleRemovals is how many "removed from the session" lines the
		// change gives: one per worker and filter (events, reply).
		staleRemovals int
	}{
		{name: "unscoped then acme", before: "", after: "acme", staleRemovals: 2 * 2},
		{name: "acme then unscoped", before: "acme", after: "", staleRemovals: 2 * 2},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
			ns := testserver.StartNATS(t, testserver.NATSOptions{})
			_, js := testclient.ConnectNATS(t, ns.URL())
			clientID := fmt.Sprintf("scope%d", i)
			var logs logCounter
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))

			first := &doneCounter{}
			runScoped(t, mq.URL(), ns.URL(), clientID, tc.before, first, log)()

			// Queued in the sessions while the bridge is down, through
			// the earlier scope's subscription only.
			pub := testclient.ConnectMQTT(t, mq.URL(), "node")
			const queued, live = 10, 300
			for n := range queued {
				pub.Publish("org/acme/node/q/events", fmt.Appendf(nil, "acme-queued-%d", n), nil)
				pub.Publish("org/other/node/q/events", fmt.Appendf(nil, "other-queued-%d", n), nil)
			}

			after := &doneCounter{}
			runScoped(t, mq.URL(), ns.URL(), clientID, tc.after, after, log)
			var wantStored, wantDead int64 = queued, 0 // the acme ones
			if tc.before == "" {
				// other's were queued too: out of scope now
				wantDead += queued
			}
			testserver.WaitFor(t, 20*time.Second, "queued messages handled", func() bool {
				return after.forwarded.Load() == wantStored && after.deadLettered.Load() == wantDead
			})
			testserver.WaitFor(t, 10*time.Second, "earlier scope's subscriptions removed", func() bool {
				return logs.count("subscription of an earlier scope removed") == tc.staleRemovals
			})

			for n := range live {
				pub.Publish("org/acme/node/l/events", fmt.Appendf(nil, "acme-live-%d", n), nil)
				pub.Publish("org/other/node/l/events", fmt.Appendf(nil, "other-live-%d", n), nil)
			}
			wantStored += live
			if tc.after == "" {
				wantStored += live
			}
			// Out of scope live events have no subscription any more and
			// never reach the bridge.
			testserver.WaitFor(t, 20*time.Second, "live messages handled", func() bool {
				return after.forwarded.Load() >= wantStored
			})
			// A last event per worker session would not prove more: both
			// copies of a duplicated publish are queued by the broker in
			// the same routing pass, before the publisher's PUBACK.
			if got := after.forwarded.Load(); got != wantStored {
				t.Errorf("forwarded %d, want %d", got, wantStored)
			}
			if got := after.deadLettered.Load(); got != wantDead {
				t.Errorf("dead-lettered %d, want %d", got, wantDead)
			}
			payloads := map[string]int{}
			for _, m := range testclient.ReadStream(t, js, "NR_EVENTS") {
				payloads[string(m.Data)]++
				if tc.after == "acme" && m.Header.Get("Nr-Org") != "acme" {
					t.Errorf("out-of-scope event %q forwarded", m.Data)
				}
			}
			for p, n := range payloads {
				if n != 1 {
					t.Errorf("event %q written %d times", p, n)
				}
			}
			if len(payloads) != int(wantStored) {
				t.Errorf("NR_EVENTS holds %d distinct events, want %d", len(payloads), wantStored)
			}
			dead := testclient.ReadStream(t, js, "NR_DLQ")
			if len(dead) != int(wantDead) {
				t.Fatalf("NR_DLQ holds %d, want %d", len(dead), wantDead)
			}
			for _, m := range dead {
				if !strings.HasPrefix(string(m.Data), "other-queued-") || !strings.Contains(m.Header.Get("Nr-Error"), "outside ORG_ID acme") {
					t.Errorf("dead letter %q with Nr-Error %q", m.Data, m.Header.Get("Nr-Error"))
				}
			}
		})
	}
}

// A bridge scoped to an org dead-letters a message of another org that its
// session still delivers, with reason out_of_scope, and never forwards it.
func TestInScope(t *testing.T) {
	for _, tc := range []struct {
		topic, org string
		want       bool
	}{
		{"org/acme/node/n/events", "", true},
		{"org/acme/node/n/events", "acme", true},
		{"org/acmex/node/n/events", "acme", false},
		{"org/other/node/n/events", "acme", false},
		{"org/acme", "acme", false},
		{"x/acme/node/n/events", "acme", false},
	} {
		if got := bridge.InScope(tc.topic, tc.org); got != tc.want {
			t.Errorf("InScope(%q, %q) = %v", tc.topic, tc.org, got)
		}
	}
	if bridge.ScopeSubscriptionID("") != 1 || bridge.ScopeSubscriptionID("acme") == 1 ||
		bridge.ScopeSubscriptionID("acme") != bridge.ScopeSubscriptionID("acme") || bridge.ScopeSubscriptionID("acme") > 268_435_455 {
		t.Error("ScopeSubscriptionID")
	}
	got := bridge.StaleFilters("g", "acme", "org/other/node/n/events")
	want := []string{"$share/g/org/+/node/+/events", "$share/g/org/+/node/+/reply", "$share/g/org/other/node/+/events", "$share/g/org/other/node/+/reply"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("StaleFilters = %v, want %v", got, want)
	}
	if got := bridge.StaleFilters("g", "", "org/acme/node/n/events"); fmt.Sprint(got) != "[$share/g/org/acme/node/+/events $share/g/org/acme/node/+/reply]" {
		t.Errorf("StaleFilters unscoped = %v", got)
	}
}
