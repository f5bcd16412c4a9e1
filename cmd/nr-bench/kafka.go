package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// runKfaked is the -kfaked child mode: a one-broker kfake cluster on
// 127.0.0.1:port until SIGTERM, in its own process so its CPU is not
// counted in nr-bench's. The bridge creates its topics.
func runKfaked(port int) int {
	c, err := kfake.NewCluster(kfake.Ports(port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfaked:", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	c.Close()
	return 0
}

// startKafkaConsumer reads topic from the start and feeds every record to
// a consumer, like startConsumer does for NR_EVENTS: the msg_id is the
// bridge's Nr-Msg-Id header.
func startKafkaConsumer(brokers, topic string) (*consumer, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c := newConsumer(func() {
		cancel()
		<-done
		cl.Close()
	})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				id := ""
				for _, h := range r.Headers {
					if h.Key == "Nr-Msg-Id" {
						id = bridge.MsgIDOf(string(h.Value))
						break
					}
				}
				c.add(id, r.Value)
			})
		}
	}()
	return c, nil
}
