package natsstatus_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/natsstatus"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

func status(id string) *bridge.CommandStatus {
	now := time.Now().UTC()
	return &bridge.CommandStatus{Org: "acme", CorrelationID: id, Node: "n1", Type: "reboot", Topic: "org/acme/node/n1/cmd",
		Source: "http", Status: "accepted", IssuedAt: now.Truncate(time.Second), ExpiresAt: now.Add(time.Minute), AcceptedAt: now}
}

func TestStoreCompareAndSwapAndWatch(t *testing.T) {
	ns := testserver.StartNATS(t, testserver.NATSOptions{})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	leaks := goleak.IgnoreCurrent()
	func() {
		nc, js := testclient.ConnectNATS(t, ns.URL())
		defer nc.Close()
		ctx := context.Background()
		st, err := natsstatus.New(ctx, js, natsstatus.Config{Bucket: "NR_COMMAND_STATUS"}, natsstatus.Options{Manage: true, Replicas: 1, TTL: time.Hour}, log)
		if err != nil {
			t.Fatal(err)
		}
		info, err := js.KeyValue(ctx, "NR_COMMAND_STATUS")
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := info.Status(ctx); s.History() != 1 || s.TTL() != time.Hour {
			t.Errorf("bucket history %d ttl %s, want 1 and 1h", s.History(), s.TTL())
		}

		id := "c/1 with spaces é"
		if _, _, err := st.Get(ctx, "acme", id); !errors.Is(err, bridge.ErrStatusNotFound) {
			t.Fatalf("get unknown: %v, want ErrStatusNotFound", err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		ch, err := st.Watch(wctx, "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := st.Put(ctx, status(id), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, status(id), 0); !errors.Is(err, bridge.ErrStatusConflict) {
			t.Fatalf("second create: %v, want ErrStatusConflict", err)
		}
		got, grev, err := st.Get(ctx, "acme", id)
		if err != nil || grev != rev || got.CorrelationID != id {
			t.Fatalf("get: %+v rev %d (put %d) %v", got, grev, rev, err)
		}
		// Two writers from the same revision: exactly one wins.
		var wg sync.WaitGroup
		var wins, conflicts int
		var mu sync.Mutex
		for _, node := range []string{"n1", "n2"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := got.Clone()
				s.Broadcast = true
				s.AddReply(bridge.NewReply(node, []byte(`{}`), "", time.Now()))
				_, err := st.Put(ctx, s, rev)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, bridge.ErrStatusConflict):
					conflicts++
				default:
					t.Errorf("put: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || conflicts != 1 {
			t.Fatalf("concurrent puts from one revision: %d won, %d conflicts; want 1 and 1", wins, conflicts)
		}
		testserver.WaitFor(t, 5*time.Second, "the watch sees the reply", func() bool {
			select {
			case s := <-ch:
				return len(s.Replies) == 1
			default:
				return false
			}
		})
		wcancel()
		testserver.WaitFor(t, 5*time.Second, "watch channel closed", func() bool {
			for {
				select {
				case _, ok := <-ch:
					if !ok {
						return true
					}
				default:
					return false
				}
			}
		})
	}()
	// The in-process server starts goroutines for the new bucket's stream.
	goleak.VerifyNone(t, leaks,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*stream).signalConsumersLoop"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*stream).internalLoop"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
	)
}
