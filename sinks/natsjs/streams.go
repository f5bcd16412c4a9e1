package natsjs

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// streamConfigs are the streams the sink writes to.
func (c *Config) streamConfigs() []jetstream.StreamConfig {
	p := c.SubjectPrefix
	return []jetstream.StreamConfig{
		c.Stream(c.EventsStream, "nr-bridge: node events", jetstream.LimitsPolicy, p+".org.*.node.*.events"),
		c.Stream(c.RepliesStream, "nr-bridge: command replies", jetstream.LimitsPolicy, p+".org.*.node.*.reply"),
		c.Stream(c.DLQStream, "nr-bridge: dead letters", jetstream.LimitsPolicy, p+".dlq.>"),
	}
}

// ensureStreams sets up every stream of the sink (natsconn.Streams.SetUp).
func (s *Sink) ensureStreams(ctx context.Context) error {
	for _, sc := range s.cfg.streamConfigs() {
		if err := s.cfg.SetUp(ctx, s.js, sc, s.log); err != nil {
			return err
		}
	}
	return nil
}
