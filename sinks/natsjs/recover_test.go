package natsjs_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/bridgetest"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
	"github.com/nr-bridge/nr-bridge/internal/testclient"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

// A stream deleted while events flow is recreated without a restart, and
// every event the broker still holds arrives once. Without
// NATS_MANAGE_STREAMS the bridge cannot recreate it: Ready says why once
// publishes have failed for NATS_UNHEALTHY_AFTER, and events flow again
// once an operator recreates the stream.
func TestStreamDeleted(t *testing.T) {
	for _, managed := range []bool{true, false} {
		t.Run(fmt.Sprintf("managed=%v", managed), func(t *testing.T) {
			mq := testserver.StartMosquitto(t, testserver.MosquittoOptions{})
			ns := testserver.StartNATS(t, testserver.NATSOptions{})
			_, js := testclient.ConnectNATS(t, ns.URL())
			scfg := bridgetest.NATSSinkConfig()
			scfg.UnhealthyAfter = 2 * time.Second
			cfg := bridgetest.MQTTConfig(mq.URL(), "deleted")
			cfg.Workers, cfg.MaxInflight = 2, 100
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var sc jetstream.StreamConfig
			if !managed {
				// The operator's streams, as the managed ones would be.
				nc, err := natsconn.Connect(natsconn.Config{URL: ns.URL()}, "setup", bridgetest.Logger())
				if err != nil {
					t.Fatal(err)
				}
				setup, err := bridgetest.StartNATSSink(ctx, nc, scfg, bridgetest.Logger(), nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := setup.Close(ctx); err != nil {
					t.Fatal(err)
				}
				nc.Close()
				st, err := js.Stream(ctx, scfg.EventsStream)
				if err != nil {
					t.Fatal(err)
				}
				sc = st.CachedInfo().Config
				scfg.ManageStreams = false
			}
			r, sink := bridgetest.StartJetStreamBridge(t, cfg, ns.URL(), scfg, bridgetest.Logger(), nil)
			testserver.WaitFor(t, 10*time.Second, "workers ready", func() bool { return r.Ready() == nil })
			pub := testclient.ConnectMQTT(t, mq.URL(), "node")

			const before, after = 200, 300
			for i := range before {
				pub.Publish("org/acme/node/n1/events", fmt.Appendf(nil, "before-%d", i), nil)
			}
			testserver.WaitFor(t, 20*time.Second, "events before the deletion stored", func() bool {
				return testclient.StreamCount(js, scfg.EventsStream) == before
			})
			if err := js.DeleteStream(ctx, scfg.EventsStream); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for i := range after {
				pub.Publish("org/acme/node/n1/events", fmt.Appendf(nil, "after-%d", i), nil)
			}
			if !managed {
				testserver.WaitFor(t, 20*time.Second, "sink reports failing publishes", func() bool {
					err := sink.Ready()
					return err != nil && strings.Contains(err.Error(), "backbone writes failing for")
				})
				if _, err := js.CreateStream(ctx, sc); err != nil {
					t.Fatal(err)
				}
			}
			testserver.WaitFor(t, 30*time.Second, "events after the deletion stored", func() bool {
				return testclient.StreamCount(js, scfg.EventsStream) >= after
			})
			t.Logf("recovered in %v", time.Since(start).Round(time.Millisecond))
			seen := map[string]int{}
			for _, m := range testclient.ReadStream(t, js, scfg.EventsStream) {
				seen[string(m.Data)]++
			}
			for i := range after {
				if n := seen[fmt.Sprintf("after-%d", i)]; n != 1 {
					t.Errorf("after-%d stored %d times", i, n)
				}
			}
			testserver.WaitFor(t, 10*time.Second, "sink ready", func() bool { return sink.Ready() == nil })
		})
	}
}
