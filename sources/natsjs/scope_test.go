package natsjs_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	"github.com/nr-bridge/nr-bridge/sources/natsjs"
)

// startScopedReplica is startReplica for a bridge scoped to orgID, with
// NATS_COMMANDS_CONSUMER set to consumer ("" = derived from the scope).
func startScopedReplica(t *testing.T, natsURL, brokerURL, clientID, orgID, consumer string) *countingPublisher {
	t.Helper()
	mqtt := mqttConfig(brokerURL, clientID)
	mqtt.OrgID = orgID
	log := testLogger(t).With("replica", clientID)
	nc, err := natsconn.Connect(natsconn.Config{URL: natsURL}, "test "+clientID, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sink, err := bridgetest.StartNATSSink(ctx, nc, streamsConfig(), log, nil)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	pub := &countingPublisher{Publisher: publisher.New(mqtt, log, nil), org: orgID}
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := sourceConfig()
	cfg.Consumer = consumer
	src := natsjs.New(mustJetStream(t, nc), cfg, streamsConfig().Streams, intakeOf(pub), log)
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := src.Close(sctx); err != nil {
			t.Errorf("source Stop: %v", err)
		}
		if err := pub.Close(sctx); err != nil {
			t.Errorf("publisher Stop: %v", err)
		}
		_ = sink.Close(sctx)
		_ = nc.Drain()
		testserver.WaitFor(t, 10*time.Second, "NATS connection closed", nc.IsClosed)
	})
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	return pub
}

// consumerNames lists the durable consumers on NR_COMMANDS.
func consumerNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "NR_COMMANDS")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	lister := stream.ConsumerNames(ctx)
	for name := range lister.Name() {
		names = append(names, name)
	}
	if err := lister.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// Issue 18.2 on NATS: replicas with different ORG_ID and
// NATS_COMMANDS_CONSUMER left empty bind a consumer per scope
// (nr-bridge-acme, nr-bridge-globex), each filtered to its org's subjects,
// so neither is handed the other's commands and none is dead-lettered as
// out of scope.
func TestReplicasOfDifferentScopes(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	acme := startScopedReplica(t, ns.URL(), broker.URL(), "bridge-acme", "acme", "")
	globex := startScopedReplica(t, ns.URL(), broker.URL(), "bridge-globex", "globex", "")
	_, js := testclient.ConnectNATS(t, ns.URL())
	if got := consumerNames(t, js); !slices.Equal(got, []string{"nr-bridge-acme", "nr-bridge-globex"}) {
		t.Fatalf("consumers %v, want nr-bridge-acme and nr-bridge-globex", got)
	}

	const perOrg = 30
	now := time.Now().Unix()
	for i := range perOrg {
		for _, org := range []string{"acme", "globex"} {
			publish(t, js, fmt.Sprintf("nr.org.%s.node.n%d.cmd", org, i%7), command(fmt.Sprintf("%s-%d", org, i), now, 300))
		}
		publish(t, js, "nr.org.acme.broadcast.cmd", command(fmt.Sprintf("acme-all-%d", i), now, 300))
	}
	const total = 3 * perOrg
	testserver.WaitFor(t, 20*time.Second, "every command published", func() bool { return len(sub.received()) >= total })
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
	seen := map[string]string{}
	for _, m := range sub.received() {
		seen[string(m.Properties.CorrelationData)] = m.Topic
	}
	for i := range perOrg {
		for _, org := range []string{"acme", "globex"} {
			if got, want := seen[fmt.Sprintf("%s-%d", org, i)], fmt.Sprintf("org/%s/node/n%d/cmd", org, i%7); got != want {
				t.Fatalf("%s-%d on %q, want %q", org, i, got, want)
			}
		}
	}
	if n := len(sub.received()); n != total {
		t.Errorf("received %d messages, want %d", n, total)
	}
	if a, g := acme.published.Load(), globex.published.Load(); a != 2*perOrg || g != perOrg {
		t.Errorf("acme published %d, globex %d; want %d and %d", a, g, 2*perOrg, perOrg)
	}
	if n := testclient.StreamCount(js, "NR_DLQ"); n != 0 {
		t.Errorf("NR_DLQ has %d messages, want 0", n)
	}
}

// A scoped replica started where the shared unfiltered consumer nr-bridge
// already exists (an earlier version's): the work queue takes no other
// consumer, so the replica keeps using nr-bridge, as before, and works.
func TestScopedReplicaKeepsTheSharedConsumer(t *testing.T) {
	broker := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	sub := subscribe(t, broker.URL(), "sub")
	startScopedReplica(t, ns.URL(), broker.URL(), "bridge-old", "", "") // unscoped: nr-bridge
	_, js := testclient.ConnectNATS(t, ns.URL())
	if got := consumerNames(t, js); !slices.Equal(got, []string{"nr-bridge"}) {
		t.Fatalf("consumers %v, want nr-bridge", got)
	}
	pub := startScopedReplica(t, ns.URL(), broker.URL(), "bridge-acme", "acme", "")
	if got := consumerNames(t, js); !slices.Equal(got, []string{"nr-bridge"}) {
		t.Fatalf("consumers %v, want only nr-bridge", got)
	}
	now := time.Now().Unix()
	for i := range 20 {
		publish(t, js, "nr.org.acme.node.n1.cmd", command(fmt.Sprintf("c-%d", i), now, 300))
	}
	testserver.WaitFor(t, 20*time.Second, "20 commands", func() bool { return len(sub.received()) >= 20 })
	testserver.WaitFor(t, 10*time.Second, "NR_COMMANDS empty", func() bool { return testclient.StreamCount(js, "NR_COMMANDS") == 0 })
	if pub.published.Load() == 0 {
		t.Errorf("the scoped replica published nothing: it is not on the shared consumer")
	}
}
