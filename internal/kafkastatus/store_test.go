package kafkastatus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/kafkaconn"
	"github.com/nr-bridge/nr-bridge/internal/kafkastatus"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func conn(t *testing.T, k *testserver.Kafka) kafkaconn.Config {
	t.Helper()
	var c kafkaconn.Config
	environ := map[string]string{"KAFKA_BROKERS": strings.Join(k.Brokers(), ","), "KAFKA_TOPIC_PARTITIONS": "3"}
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		t.Fatal(err)
	}
	return c
}

func open(t *testing.T, c kafkaconn.Config, cfg kafkastatus.Config) *kafkastatus.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := kafkastatus.New(c, cfg, time.Hour, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

var defaultCfg = kafkastatus.Config{Topic: "nr.command-status", MaxCommands: 1000, MaxBytes: 64 << 20}

func status(id string) *bridge.CommandStatus {
	now := time.Now().UTC()
	return &bridge.CommandStatus{Org: "acme", CorrelationID: id, Broadcast: true, Type: "reboot", Topic: "org/acme/broadcast/cmd",
		Source: "http", Status: "accepted", IssuedAt: now.Truncate(time.Second), ExpiresAt: now.Add(time.Minute), AcceptedAt: now}
}

// TestTwoReplicasMergeReplies has two stores (two replicas) add a reply to
// the same broadcast from the same revision at once: both replies survive,
// on both replicas, and in a third replica started afterwards from the
// topic alone.
func TestTwoReplicasMergeReplies(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	c := conn(t, k)
	a, b := open(t, c, defaultCfg), open(t, c, defaultCfg)
	ctx := context.Background()

	// The topic is compacted, with the retention of the statuses.
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rc, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, "nr.command-status")
	if err != nil {
		t.Fatal(err)
	}
	cfgs := map[string]string{}
	for _, r := range rc {
		for _, kv := range r.Configs {
			cfgs[kv.Key] = kv.MaybeValue()
		}
	}
	if cfgs["cleanup.policy"] != "compact,delete" || cfgs["retention.ms"] != "3600000" {
		t.Errorf("topic configs cleanup.policy %q retention.ms %q", cfgs["cleanup.policy"], cfgs["retention.ms"])
	}

	wctx, wcancel := context.WithCancel(ctx)
	ch, err := b.Watch(wctx, "acme", "bc-1")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := a.Put(ctx, status("bc-1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, status("bc-1"), 0); !errors.Is(err, bridge.ErrStatusConflict) {
		t.Fatalf("create again: %v, want ErrStatusConflict", err)
	}
	testserver.WaitFor(t, 5*time.Second, "b sees the command", func() bool {
		_, _, err := b.Get(ctx, "acme", "bc-1")
		return err == nil
	})
	var wg sync.WaitGroup
	for i, st := range []*kafkastatus.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur, r, err := st.Get(ctx, "acme", "bc-1")
			if err != nil {
				t.Error(err)
				return
			}
			cur.AddReply(bridge.NewReply(fmt.Sprintf("n%d", i+1), fmt.Appendf(nil, `{"from":%d}`, i+1), "", time.Now()))
			if _, err := st.Put(ctx, cur, r); err != nil {
				t.Errorf("put reply %d: %v", i+1, err)
			}
		}()
	}
	wg.Wait()
	_ = rev
	for name, st := range map[string]*kafkastatus.Store{"a": a, "b": b} {
		testserver.WaitFor(t, 5*time.Second, "both replies on "+name, func() bool {
			s, _, err := st.Get(ctx, "acme", "bc-1")
			return err == nil && len(s.Replies) == 2
		})
	}
	testserver.WaitFor(t, 5*time.Second, "the watch sees both replies", func() bool {
		select {
		case s := <-ch:
			return len(s.Replies) == 2
		default:
			return false
		}
	})
	wcancel()

	// A replica started later reads the same status from the topic.
	late := open(t, c, defaultCfg)
	s, _, err := late.Get(ctx, "acme", "bc-1")
	if err != nil || len(s.Replies) != 2 || string(s.Replies[0].Payload) == string(s.Replies[1].Payload) {
		t.Fatalf("late replica: %+v %v", s, err)
	}
}

// TestViewIsBounded keeps only the most recent commands.
func TestViewIsBounded(t *testing.T) {
	k := testserver.StartKafka(t, testserver.KafkaOptions{})
	cfg := defaultCfg
	cfg.MaxCommands = 3
	st := open(t, conn(t, k), cfg)
	ctx := context.Background()
	for i := range 5 {
		if _, err := st.Put(ctx, status(fmt.Sprintf("c-%d", i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		_, _, err := st.Get(ctx, "acme", fmt.Sprintf("c-%d", i))
		if i < 2 && !errors.Is(err, bridge.ErrStatusNotFound) || i >= 2 && err != nil {
			t.Errorf("c-%d: %v", i, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	var c kafkaconn.Config
	if err := env.ParseWithOptions(&c, env.Options{Environment: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     kafkastatus.Config
		wantErr string
	}{
		{"defaults", defaultCfg, ""},
		{"same as replies", kafkastatus.Config{Topic: "nr.replies", MaxCommands: 1, MaxBytes: 1 << 20}, `KAFKA_STATUS_TOPIC "nr.replies" must differ from the events, replies, commands and dead-letter topics`},
		{"bad name", kafkastatus.Config{Topic: "a b", MaxCommands: 1, MaxBytes: 1 << 20}, `KAFKA_STATUS_TOPIC "a b": want 1 to 249 characters of a-z A-Z 0-9 . _ -, not . or ..`},
		{"no commands", kafkastatus.Config{Topic: "x", MaxCommands: 0, MaxBytes: 1 << 20}, "KAFKA_STATUS_MAX_COMMANDS must be >= 1, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate(c)
			if got := fmt.Sprint(err); tt.wantErr == "" && err != nil || tt.wantErr != "" && got != tt.wantErr {
				t.Fatalf("Validate: %v, want %q", err, tt.wantErr)
			}
		})
	}
}
