package kafkastatus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// TestListNewestFirstPerOrg stores five commands of acme and two of
// other through one replica: a second replica's listing of acme returns
// acme's only, newest accepted first, cut at the limit; with
// KAFKA_STATUS_MAX_COMMANDS 4 it shows the newest four at most.
func TestListNewestFirstPerOrg(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	c := conn(t, k)
	a := open(t, c, defaultCfg)
	ctx := context.Background()
	if got, err := a.List(ctx, "acme", 10); err != nil || len(got) != 0 {
		t.Fatalf("empty topic: %d statuses, %v; want 0, nil", len(got), err)
	}
	base := time.Now().UTC().Add(-time.Minute)
	put := func(org, id string, i int) {
		s := status(id)
		s.Org, s.AcceptedAt = org, base.Add(time.Duration(i)*time.Second)
		if _, err := a.Put(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range []string{"c0", "c1", "c 2/é", "c3", "c4"} {
		put("acme", id, i)
	}
	put("other", "o1", 10)
	put("other", "o2", 11)

	got, err := a.List(ctx, "acme", 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := "[c4 c3 c 2/é]"; fmt.Sprint(listIDs(got)) != want {
		t.Errorf("acme limit 3: %q, want %s", listIDs(got), want)
	}
	if got, _ := a.List(ctx, "other", 100); fmt.Sprint(listIDs(got)) != "[o2 o1]" {
		t.Errorf("other: %q, want [o2 o1]", listIDs(got))
	}
	if _, err := a.List(ctx, "a.b", 10); !errors.Is(err, bridge.ErrInvalidID) {
		t.Errorf("org a.b: %v, want ErrInvalidID", err)
	}

	small := defaultCfg
	small.MaxCommands = 4
	b := open(t, c, small) // reads the topic from its start
	got, err = b.List(ctx, "acme", 100)
	if err != nil {
		t.Fatal(err)
	}
	if want := "[c4 c3 c 2/é c1]"; fmt.Sprint(listIDs(got)) != want {
		t.Errorf("second replica, 4 commands per org: %q, want %s", listIDs(got), want)
	}
}

func listIDs(sts []*bridge.CommandStatus) []string {
	out := make([]string, len(sts))
	for i, s := range sts {
		out[i] = s.CorrelationID
	}
	return out
}
