package kafka_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/publisher"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
	kafkasource "github.com/nr-bridge/nr-bridge/sources/kafka"
)

// Issue 18.6: a replica is a static member of the group (instance ID: its
// publisher's MQTT client ID). One that crashes (no LeaveGroup) and comes
// back with the same client ID within the session timeout gets its
// partitions back when it joins, instead of the group waiting out the dead
// member's session (45 s) before it rebalances.
func TestStaticMemberResumesAfterCrash(t *testing.T) {
	k, cfg := setupKafka(t)
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/#")
	var leaves atomic.Int64
	k.Cluster().ControlKey(int16(kmsg.LeaveGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster().KeepControl()
		leaves.Add(1)
		return nil, nil, false
	})
	adm := newAdmin(t, k)
	// members maps instance IDs to their partition counts while the group
	// is stable.
	members := func() map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, kafkaconn.DefaultGroup)
		if err != nil || gs[kafkaconn.DefaultGroup].State != "Stable" {
			return nil
		}
		out := map[string]int{}
		for _, m := range gs[kafkaconn.DefaultGroup].Members {
			n := 0
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, tp := range a.Topics {
					n += len(tp.Partitions)
				}
			}
			if m.InstanceID != nil {
				out[*m.InstanceID] = n
			}
		}
		return out
	}
	start := func(clientID string) (*kafkasource.Source, *publisher.Publisher) {
		pub := startNamedPublisher(t, mq.URL(), clientID)
		testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return pub.Ready() == nil })
		return startSource(t, cfg, pub, 20), pub
	}
	a, aPub := start("bridge-a")
	start("bridge-b")
	testserver.WaitFor(t, 30*time.Second, "two static members with partitions", func() bool {
		m := members()
		return len(m) == 2 && m["bridge-a-pub"] > 0 && m["bridge-b-pub"] > 0
	})

	a.Crash()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := aPub.Close(ctx); err != nil { // the whole process is gone
		t.Fatal(err)
	}
	if n := leaves.Load(); n != 0 {
		t.Fatalf("%d LeaveGroup requests at the crash, want none", n)
	}
	// One command on each partition: those of the crashed member wait
	// for it.
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	var recs []*kgo.Record
	for p := range int32(3) {
		recs = append(recs, &kgo.Record{Topic: "nr.commands", Partition: p, Key: fmt.Appendf(nil, "org/acme/node/n%d", p), Value: command(fmt.Sprintf("c-%d", p), 300)})
	}
	produce(t, cl, recs...)
	restart := time.Now()
	start("bridge-a")
	testserver.WaitFor(t, 30*time.Second, "the 3 commands", func() bool { return len(byCorrelation(agent.Received())) >= 3 })
	t.Logf("all 3 commands published %v after the crashed replica came back", time.Since(restart).Round(time.Millisecond))
	testserver.WaitFor(t, 30*time.Second, "every offset committed", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })
	if m := members(); len(m) != 2 || m["bridge-a-pub"] == 0 || m["bridge-b-pub"] == 0 {
		t.Fatalf("members %v, want bridge-a-pub and bridge-b-pub with partitions", m)
	}
	for p := range 3 {
		if n := len(byCorrelation(agent.Received())[fmt.Sprintf("c-%d", p)]); n != 1 {
			t.Fatalf("c-%d published %d times, want once", p, n)
		}
	}
}
