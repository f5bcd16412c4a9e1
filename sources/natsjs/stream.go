package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
)

// streamConfig is the commands stream: a work queue (a message is removed
// once acked or terminated) on disk, with the shared replicas, max age and
// dedupe window, so upstream services may set Nats-Msg-Id.
func streamConfig(cfg Config, streams natsconn.Streams) jetstream.StreamConfig {
	p := streams.SubjectPrefix
	return streams.Stream(cfg.Stream, "nr-bridge: commands to nodes (work queue)", jetstream.WorkQueuePolicy,
		p+".org.*.node.*.cmd", p+".org.*.broadcast.cmd")
}

// consumerConfig is the durable name binds to, with the same settings on
// every replica of its scope, so CreateOrUpdateConsumer from any of them is
// a no-op for the others; filters are the subjects of its org for a scoped
// consumer (none: every command). Redelivery is unlimited: a command leaves
// the stream only acked (published) or terminated (dead-lettered).
func consumerConfig(cfg Config, name string, filters []string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        name,
		FilterSubjects: filters,
		Description:    "nr-bridge: publishes commands to MQTT",
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxAckPending:  cfg.MaxAckPending,
		MaxDeliver:     -1,
	}
}

// setup creates or checks the stream and creates or updates the consumer,
// retrying while the server is unreachable until ctx ends.
func (s *Source) setup(ctx context.Context) (jetstream.Consumer, error) {
	var cons jetstream.Consumer
	err := backoff.UntilReachable(ctx, "set up commands stream", s.log, "JetStream not reachable yet, retrying",
		func(err error) bool { return !natsconn.Unreachable(err) },
		func(ctx context.Context) (err error) {
			cons, err = s.ensure(ctx)
			return err
		})
	return cons, err
}

// ensure sets up the stream (natsconn.Streams.SetUp) and the durable
// consumer, adopting one whose settings cannot change in place
// (natsconn.Adopt).
func (s *Source) ensure(ctx context.Context) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sc := streamConfig(s.cfg, s.streams)
	if err := s.streams.SetUp(ctx, s.js, sc, s.log); err != nil {
		return nil, err
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, sc.Name, consumerConfig(s.cfg, s.consumer, s.filters))
	if err == nil {
		s.log.Info("commands consumer ready", "stream", sc.Name, "consumer", s.consumer, "filter", s.filters)
		return cons, nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && len(s.filters) > 0 && (apiErr.ErrorCode == errCodeWQMultipleUnfiltered || apiErr.ErrorCode == errCodeWQNotUnique) {
		// The work queue already has the shared unfiltered consumer (an
		// earlier version's, or an unscoped replica's), which every
		// message would also match: keep using it, as before.
		if shared, infoErr := s.js.Consumer(ctx, sc.Name, DefaultConsumer); infoErr == nil {
			s.log.Warn("the commands stream has the shared consumer "+DefaultConsumer+": using it, so other orgs' commands it hands this replica are dead-lettered as out of scope; delete it once no replica uses it, and this replica creates its own",
				"stream", sc.Name, "consumer", s.consumer, "err", err)
			s.consumer = DefaultConsumer
			return shared, nil
		}
	}
	// A setting that cannot change in place (the ack policy, say): use the
	// consumer as it is rather than crash-loop, and say why.
	return natsconn.Adopt(ctx,
		func(context.Context) (jetstream.Consumer, error) { return nil, err },
		func(ctx context.Context) (jetstream.Consumer, error) { return s.js.Consumer(ctx, sc.Name, s.consumer) },
		func(cerr error) error {
			if errors.As(cerr, &apiErr) {
				return fmt.Errorf("create consumer %s on %s: %w", s.consumer, sc.Name, cerr)
			}
			return fmt.Errorf("create or update consumer %s on %s: %w", s.consumer, sc.Name, cerr)
		},
		func(cerr error) {
			s.log.Warn("commands consumer exists with settings the bridge cannot apply; using it as it is",
				"stream", sc.Name, "consumer", s.consumer, "err", cerr)
		})
}

// JetStream's errors for a consumer that would overlap another on a work
// queue stream: a second unfiltered one, or a filter another consumer's
// subjects (or no filter) already cover.
const (
	errCodeWQMultipleUnfiltered jetstream.ErrorCode = 10099
	errCodeWQNotUnique          jetstream.ErrorCode = 10100
)
