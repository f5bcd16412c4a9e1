package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// crashSessionTimeout replaces the members' 45 s session in the JoinGroup
// requests kfake sees, so that the group notices a crashed member in a
// few seconds. It must stay above kgo's 3 s heartbeat interval.
const crashSessionTimeout = 8 * time.Second

// groupLog records, from the requests kfake receives, each generation's
// assignment of nr.commands (the leader's SyncGroup) and every offset
// commit, so that a test can check each commit against the assignment of
// the generation it was sent in.
type groupLog struct {
	mu      sync.Mutex
	assign  map[int32]map[string][]int32 // generation -> member ID -> partitions
	commits []commitReq
	leaves  int
}

type commitReq struct {
	generation int32
	member     string
	partitions []int32
	at         time.Time
}

func watchGroup(c *kfake.Cluster, group, topic string) *groupLog {
	g := &groupLog{assign: map[int32]map[string][]int32{}}
	c.ControlKey(int16(kmsg.JoinGroup), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r.(*kmsg.JoinGroupRequest).SessionTimeoutMillis = int32(crashSessionTimeout / time.Millisecond)
		return nil, nil, false
	})
	c.ControlKey(int16(kmsg.LeaveGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		g.mu.Lock()
		g.leaves++
		g.mu.Unlock()
		return nil, nil, false
	})
	c.ControlKey(int16(kmsg.SyncGroup), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.SyncGroupRequest)
		if req.Group != group || len(req.GroupAssignment) == 0 {
			return nil, nil, false
		}
		gen := map[string][]int32{}
		for _, a := range req.GroupAssignment {
			var ca kmsg.ConsumerMemberAssignment
			if err := ca.ReadFrom(a.MemberAssignment); err != nil {
				continue
			}
			gen[a.MemberID] = nil
			for _, tp := range ca.Topics {
				if tp.Topic == topic {
					gen[a.MemberID] = append(gen[a.MemberID], tp.Partitions...)
				}
			}
		}
		g.mu.Lock()
		g.assign[req.Generation] = gen
		g.mu.Unlock()
		return nil, nil, false
	})
	c.ControlKey(int16(kmsg.OffsetCommit), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.OffsetCommitRequest)
		if req.Group != group {
			return nil, nil, false
		}
		cr := commitReq{generation: req.Generation, member: req.MemberID, at: time.Now()}
		for _, tp := range req.Topics {
			for _, p := range tp.Partitions {
				cr.partitions = append(cr.partitions, p.Partition)
			}
		}
		g.mu.Lock()
		g.commits = append(g.commits, cr)
		g.mu.Unlock()
		return nil, nil, false
	})
	return g
}

// commandID is the correlation_id of a command body made by command.
func commandID(body []byte) []byte {
	var c struct {
		CorrelationID string `json:"correlation_id"`
	}
	_ = json.Unmarshal(body, &c)
	return []byte(c.CorrelationID)
}

// owners returns the member owning each partition in the latest
// generation, and that generation.
func (g *groupLog) owners() (int32, map[int32]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var latest int32 = -1
	for gen := range g.assign {
		latest = max(latest, gen)
	}
	out := map[int32]string{}
	for m, ps := range g.assign[latest] {
		for _, p := range ps {
			out[p] = m
		}
	}
	return latest, out
}

// A replica crashes (no LeaveGroup, no commit of what it had not finished)
// while commands of ten keys are flowing through three replicas: the others
// take its partitions once its session ends (a third member joined
// mid-stream before, so partitions also moved away from live members) and every command reaches
// MQTT, the commands of each key in the order they were produced (a
// redelivery only ever replays from an earlier point, it never skips
// ahead), and every offset commit the group coordinator receives is for
// partitions the committing member owns in the generation it sends.
func TestCrashedMemberKeepsOrderAndCommitsOnlyOwned(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{Extra: []kfake.Opt{kfake.GroupMinSessionTimeout(time.Second)}})
	cfg := bridgetest.KafkaConfig(t, k.Brokers(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkaconn.EnsureTopics(ctx, newAdmin(t, k), cfg); err != nil {
		t.Fatal(err)
	}
	glog := watchGroup(k.Cluster(), kafkaconn.DefaultGroup, "nr.commands")
	mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
	agent := testclient.ConnectMQTT(t, mq.URL(), "agent", "org/acme/#")
	adm := newAdmin(t, k)

	const (
		keys        = 10
		perKey      = 60
		total       = keys * perKey
		pollRecords = 5
	)
	slow := func(clientID string) slowPublisher {
		p := startNamedPublisher(t, mq.URL(), clientID)
		testserver.WaitFor(t, 10*time.Second, "publisher connected", func() bool { return p.Ready() == nil })
		return slowPublisher{Publisher: p, delay: 30 * time.Millisecond}
	}
	aPub := slow("bridge-a")
	a := startSource(t, cfg, aPub, pollRecords)
	startSource(t, cfg, slow("bridge-b"), pollRecords)
	var aMember string
	testserver.WaitFor(t, 30*time.Second, "two members sharing the 3 partitions", func() bool {
		_, own := glog.owners()
		members := map[string]bool{}
		for _, m := range own {
			members[m] = true
		}
		if len(own) != 3 || len(members) != 2 {
			return false
		}
		gs, err := adm.DescribeGroups(context.Background(), kafkaconn.DefaultGroup)
		if err != nil || gs[kafkaconn.DefaultGroup].State != "Stable" {
			return false
		}
		for _, m := range gs[kafkaconn.DefaultGroup].Members {
			if m.InstanceID != nil && *m.InstanceID == "bridge-a-pub" {
				aMember = m.MemberID
			}
		}
		return aMember != "" && members[aMember]
	})
	_, before := glog.owners()
	var aParts []int32
	for p, m := range before {
		if m == aMember {
			aParts = append(aParts, p)
		}
	}

	// Ten keys, produced in order; each key stays on one partition.
	var recs []*kgo.Record
	for seq := range perKey {
		for key := range keys {
			recs = append(recs, &kgo.Record{Topic: "nr.commands", Key: fmt.Appendf(nil, "org/acme/node/n%d", key),
				Value: command(fmt.Sprintf("n%d-%d", key, seq), 600)})
		}
	}
	produce(t, producer(t, k), recs...)

	testserver.WaitFor(t, 30*time.Second, "commands flowing", func() bool { return len(byCorrelation(agent.Received())) >= 30 })
	// A third member joins mid-stream: partitions move away from live
	// members, which must not commit them afterwards.
	genBefore, _ := glog.owners()
	startSource(t, cfg, slow("bridge-c"), pollRecords)
	testserver.WaitFor(t, 30*time.Second, "three members with a partition each", func() bool {
		gen, own := glog.owners()
		members := map[string]bool{}
		for _, m := range own {
			members[m] = true
		}
		return gen > genBefore && len(own) == 3 && len(members) == 3 && members[aMember]
	})
	_, three := glog.owners()
	aParts = aParts[:0]
	for p, m := range three {
		if m == aMember {
			aParts = append(aParts, p)
		}
	}
	delivered := len(byCorrelation(agent.Received()))
	testserver.WaitFor(t, 30*time.Second, "commands flowing to three members", func() bool {
		return len(byCorrelation(agent.Received())) >= delivered+20
	})
	a.Crash()
	crashed := time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := aPub.Close(sctx); err != nil { // the whole process is gone
		t.Fatal(err)
	}
	// The crashed member's partitions still held commands it had not
	// delivered.
	got := byCorrelation(agent.Received())
	undelivered := 0
	for _, r := range recs {
		for _, p := range aParts {
			if r.Partition == p && len(got[string(commandID(r.Value))]) == 0 {
				undelivered++
			}
		}
	}
	if undelivered == 0 {
		t.Fatalf("nothing left on the crashed member's partitions %v; the test proves nothing", aParts)
	}

	testserver.WaitFor(t, 60*time.Second, "the survivors owning every partition", func() bool {
		_, own := glog.owners()
		return len(own) == 3 && own[0] != aMember && own[1] != aMember && own[2] != aMember
	})
	takeover := time.Since(crashed)
	testserver.WaitFor(t, 60*time.Second, "every command delivered", func() bool { return len(byCorrelation(agent.Received())) >= total })
	testserver.WaitFor(t, 30*time.Second, "every offset committed", func() bool { return allCommitted(adm, kafkaconn.DefaultGroup, "nr.commands") })

	// Order per key: each delivery is at most one past the highest
	// sequence delivered so far for its key.
	high := map[int]int{}
	for key := range keys {
		high[key] = -1
	}
	dups := 0
	seen := map[string]bool{}
	for _, p := range agent.Received() {
		id := string(p.Properties.CorrelationData)
		ks, ss, ok := strings.Cut(strings.TrimPrefix(id, "n"), "-")
		key, err1 := strconv.Atoi(ks)
		seq, err2 := strconv.Atoi(ss)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("unexpected command %q on %s", id, p.Topic)
		}
		if want := fmt.Sprintf("org/acme/node/n%d/cmd", key); p.Topic != want {
			t.Fatalf("%s on %s, want %s", id, p.Topic, want)
		}
		if seq > high[key]+1 {
			t.Fatalf("key n%d: %s delivered while the highest before it was n%d-%d (out of order)", key, id, key, high[key])
		}
		high[key] = max(high[key], seq)
		if seen[id] {
			dups++
		}
		seen[id] = true
	}
	if len(seen) != total {
		t.Fatalf("%d distinct commands delivered, want %d", len(seen), total)
	}
	// What the crashed member had published in its last round and not
	// committed is published again by the survivor: at most one poll.
	if dups > pollRecords {
		t.Errorf("%d commands published twice, want at most %d (one poll of the crashed member)", dups, pollRecords)
	}

	glog.mu.Lock()
	defer glog.mu.Unlock()
	if glog.leaves != 0 {
		t.Errorf("%d LeaveGroup requests, want none (a crash, then a cleanup that runs after the checks)", glog.leaves)
	}
	var gens []int
	for gen := range glog.assign {
		gens = append(gens, int(gen))
	}
	sort.Ints(gens)
	for _, c := range glog.commits {
		owned := glog.assign[c.generation][c.member]
		for _, p := range c.partitions {
			ok := false
			for _, o := range owned {
				ok = ok || o == p
			}
			if !ok {
				t.Errorf("member %s committed partition %d in generation %d, where it owns %v (generations seen: %v)",
					c.member, p, c.generation, owned, gens)
			}
		}
		if c.member == aMember && c.at.After(crashed) {
			t.Errorf("the crashed member committed %v after its crash", c.partitions)
		}
	}
	t.Logf("%d commands on 10 keys, %d left on the crashed member's partitions %v at the crash; %d published twice; %d offset commits over generations %v; the survivors owned every partition %v after the crash (session %v)",
		total, undelivered, aParts, dups, len(glog.commits), gens, takeover.Round(time.Millisecond), crashSessionTimeout)
}
