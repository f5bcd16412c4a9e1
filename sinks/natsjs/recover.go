package natsjs

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/internal/natsconn"
)

// repairInterval is how often at most the sink checks and recreates its
// streams while publishes find no stream.
const repairInterval = 2 * time.Second

// observe records a publish outcome for Ready and, when no stream took the
// message, asks for a repair. It never blocks.
func (s *Sink) observe(err error) {
	s.health.Observe(err)
	if natsconn.StreamMissing(err) {
		s.repairer.Ask()
	}
}

// repair ensures the streams again (the same as at start: created or
// updated with NATS_MANAGE_STREAMS, else only checked, which reports the
// missing one) when some are missing. It runs on the repairer's goroutine.
func (s *Sink) repair() {
	ctx, cancel := context.WithTimeout(context.Background(), repairInterval)
	defer cancel()
	missing := s.missingStreams(ctx)
	if len(missing) == 0 {
		return
	}
	if err := s.ensureStreams(ctx); err != nil {
		s.log.Error("streams missing and not recreated; writes wait", "streams", missing, "err", err)
		return
	}
	s.log.Warn("streams were missing (deleted, or the server lost its store): recreated", "streams", missing)
}

// missingStreams lists the sink's streams that the server says do not
// exist; nil when it cannot tell (not connected, a timeout).
func (s *Sink) missingStreams(ctx context.Context) []string {
	var missing []string
	for _, sc := range s.cfg.streamConfigs() {
		if _, err := s.js.Stream(ctx, sc.Name); errors.Is(err, jetstream.ErrStreamNotFound) {
			missing = append(missing, sc.Name)
		}
	}
	return missing
}
