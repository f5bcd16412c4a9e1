package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
)

// streamConfigs are the streams the sink writes to.
func (c *Config) streamConfigs() []jetstream.StreamConfig {
	p := c.SubjectPrefix
	base := func(name, desc string, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Replicas:    c.Replicas,
			MaxAge:      c.MaxAge,
			Duplicates:  c.DuplicateWindow,
		}
	}
	return []jetstream.StreamConfig{
		base(c.EventsStream, "nr-bridge: node events", p+".org.*.node.*.events"),
		base(c.RepliesStream, "nr-bridge: command replies", p+".org.*.node.*.reply"),
		base(c.DLQStream, "nr-bridge: dead letters", p+".dlq.>"),
	}
}

// EnsureStream creates a stream or updates it to cfg. A stream that exists
// with settings that cannot be changed in place (storage, retention,
// subjects owned by another stream) is used as it is, with a warning naming
// the conflict: the bridge keeps running instead of crash-looping, and the
// operator sees why. It is shared with the commands source.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, log *slog.Logger) error {
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	if err == nil {
		log.Info("stream ready", "stream", cfg.Name, "subjects", cfg.Subjects)
		return nil
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
	}
	if _, infoErr := js.Stream(ctx, cfg.Name); infoErr != nil {
		return fmt.Errorf("create stream %s (subjects %v): %w", cfg.Name, cfg.Subjects, err)
	}
	log.Warn("stream exists with settings the bridge cannot apply; using it as it is (fix the stream or set NATS_MANAGE_STREAMS=false)",
		"stream", cfg.Name, "err", err)
	return nil
}

// CheckStream verifies that an operator-managed stream exists.
func CheckStream(ctx context.Context, js jetstream.JetStream, name string) error {
	if _, err := js.Stream(ctx, name); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s not found and NATS_MANAGE_STREAMS=false: create it or let the bridge manage it: %w", name, err)
		}
		return fmt.Errorf("look up stream %s: %w", name, err)
	}
	return nil
}
