package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// startScopedPublisher starts a publisher scoped to orgID (ORG_ID), stopped
// at cleanup, and waits for its connection.
func startScopedPublisher(t *testing.T, brokerURL, clientID, orgID string) scopedPublisher {
	t.Helper()
	cfg := mqttConfig(brokerURL, clientID)
	cfg.OrgID = orgID
	pub := publisher.New(cfg, testLogger(), nil)
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pub.Close(ctx)
	})
	testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
	return scopedPublisher{pub, orgID}
}

// scopedPublisher is a publisher with the ORG_ID its intake is scoped to.
type scopedPublisher struct {
	*publisher.Publisher
	org string
}

func (p scopedPublisher) scope() string { return p.org }

// Issue 18.2: replicas with different ORG_ID and KAFKA_GROUP left empty
// join a group per scope (nr-bridge-acme, nr-bridge-globex); each publishes
// its own org's commands and skips the other's, so no command is
// dead-lettered as out of scope by the wrong replica.
func TestReplicasOfDifferentScopes(t *testing.T) {
	k, cfg := setupKafka(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/#")
	acme := startSource(t, cfg, startScopedPublisher(t, mq.URL(), "bridge-acme", "acme"), 20)
	globex := startSource(t, cfg, startScopedPublisher(t, mq.URL(), "bridge-globex", "globex"), 20)
	if acme.Group() != "nr-bridge-acme" || globex.Group() != "nr-bridge-globex" {
		t.Fatalf("groups %q and %q, want nr-bridge-acme and nr-bridge-globex", acme.Group(), globex.Group())
	}

	const perOrg = 30
	var recs []*kgo.Record
	for i := range perOrg {
		for _, org := range []string{"acme", "globex"} {
			recs = append(recs, &kgo.Record{Topic: "nr.commands", Key: fmt.Appendf(nil, "org/%s/node/n%d", org, i%7),
				Value: command(fmt.Sprintf("%s-%d", org, i), 300)})
		}
	}
	produce(t, producer(t, k), recs...)
	adm := newAdmin(t, k)
	testserver.WaitFor(t, 30*time.Second, "every command published", func() bool { return len(byCorrelation(agent.Received())) >= 2*perOrg })
	testserver.WaitFor(t, 30*time.Second, "both groups committed everything", func() bool {
		return allCommitted(adm, "nr-bridge-acme", "nr.commands") && allCommitted(adm, "nr-bridge-globex", "nr.commands")
	})
	got := byCorrelation(agent.Received())
	for i := range perOrg {
		for _, org := range []string{"acme", "globex"} {
			ps := got[fmt.Sprintf("%s-%d", org, i)]
			if want := fmt.Sprintf("org/%s/node/n%d/cmd", org, i%7); len(ps) != 1 || ps[0].Topic != want {
				t.Fatalf("%s-%d received %d times, want once on %s", org, i, len(ps), want)
			}
		}
	}
	if n := recordCount(adm, "nr.dlq"); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
	if n := len(agent.Received()); n != 2*perOrg {
		t.Fatalf("agent received %d messages, want %d", n, 2*perOrg)
	}
}

// A scoped replica whose derived group has no offsets yet (the upgrade from
// the shared nr-bridge group) starts where nr-bridge left off instead of
// reading the topic from the start and publishing every command again.
func TestScopedGroupStartsFromSharedOffsets(t *testing.T) {
	k, cfg := setupKafka(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/#")

	old := startSource(t, cfg, startPublisher(t, mq.URL()), 20)
	if old.Group() != kafkaconn.DefaultGroup {
		t.Fatalf("unscoped group %q, want %q", old.Group(), kafkaconn.DefaultGroup)
	}
	var recs []*kgo.Record
	for i := range 9 {
		recs = append(recs, &kgo.Record{Topic: "nr.commands", Key: fmt.Appendf(nil, "org/acme/node/n%d", i), Value: command(fmt.Sprintf("before-%d", i), 300)})
	}
	produce(t, producer(t, k), recs...)
	adm := newAdmin(t, k)
	testserver.WaitFor(t, 30*time.Second, "9 commands published", func() bool { return len(agent.Received()) >= 9 })
	testserver.WaitFor(t, 30*time.Second, "nr-bridge committed everything", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}

	scoped := startSource(t, cfg, startScopedPublisher(t, mq.URL(), "bridge-acme", "acme"), 20)
	if scoped.Group() != "nr-bridge-acme" {
		t.Fatalf("group %q", scoped.Group())
	}
	produce(t, producer(t, k), &kgo.Record{Topic: "nr.commands", Key: []byte("org/acme/node/n1"), Value: command("after", 300)})
	testserver.WaitFor(t, 30*time.Second, "the command after the upgrade", func() bool { return len(byCorrelation(agent.Received())["after"]) > 0 })
	testserver.WaitFor(t, 30*time.Second, "nr-bridge-acme committed everything", func() bool { return allCommitted(adm, "nr-bridge-acme", "nr.commands") })
	if n := len(agent.Received()); n != 10 {
		t.Fatalf("agent received %d messages, want the 9 before and the one after, each once", n)
	}
}
