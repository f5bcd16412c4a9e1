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
// message, asks the repair loop to recreate the streams. It never blocks.
func (s *Sink) observe(err error) {
	s.health.Observe(err)
	if natsconn.StreamMissing(err) {
		select {
		case s.repair <- struct{}{}:
		default: // a repair is already asked for
		}
	}
}

// repairLoop ensures the streams again (the same as at start: created or
// updated with NATS_MANAGE_STREAMS, else only checked, which reports the
// missing one) at most once per repairInterval, until Close.
func (s *Sink) repairLoop() {
	defer close(s.repairDone)
	var last time.Time
	for {
		select {
		case <-s.repair:
		case <-s.stopRepair:
			return
		}
		if wait := time.Until(last.Add(repairInterval)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-s.stopRepair:
				return
			}
		}
		last = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), repairInterval)
		missing := s.missingStreams(ctx)
		var err error
		if len(missing) > 0 {
			err = s.ensureStreams(ctx)
		}
		cancel()
		switch {
		case err != nil:
			s.log.Error("streams missing and not recreated; writes wait", "streams", missing, "err", err)
		case len(missing) > 0:
			s.log.Warn("streams were missing (deleted, or the server lost its store): recreated", "streams", missing)
		}
	}
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
