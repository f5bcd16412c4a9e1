package kafkaconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/nr-bridge/nr-bridge/internal/health"
)

// PingInterval is how often a Monitor asks the cluster whether it is up;
// each ping also times out after PingInterval.
const PingInterval = 5 * time.Second

// pingRetry is how soon a Monitor pings again after a failure, so /readyz
// turns ready soon after the cluster comes back.
const pingRetry = time.Second

// errNotChecked is Ready's answer before the first ping returned.
var errNotChecked = errors.New("kafka: not checked yet")

// Monitor tracks whether the cluster answers, for /readyz. franz-go
// connects lazily and closes idle connections, so the state of its
// connections says little; instead the monitor sends a metadata request
// (kgo.Client.Ping) every PingInterval, on a health.Poller. NewMonitor
// starts nothing; Start starts the pings, Close stops them.
type Monitor struct {
	*health.Poller
}

// NewMonitor returns a monitor of the cluster behind cl; Ready reports the
// result of the last ping, and changes are logged to log. It does not close
// cl.
func NewMonitor(cl *kgo.Client, log *slog.Logger) *Monitor {
	ping := func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, PingInterval)
		defer cancel()
		if err := cl.Ping(pctx); err != nil {
			return fmt.Errorf("kafka not reachable: %w", err)
		}
		return nil
	}
	changed := func(prev, now error) {
		switch {
		case now != nil && (prev == nil || prev == errNotChecked):
			log.Warn("Kafka not reachable", "err", now)
		case now == nil && prev != nil:
			log.Info("Kafka reachable")
		}
	}
	return &Monitor{health.NewPoller(errNotChecked, PingInterval, pingRetry, ping, changed)}
}

// WaitReachable pings the cluster through cl with backoff (500 ms doubling
// to 10 s, backoff.UntilReachable) until it answers or ctx ends, logging
// each failed attempt, so the bridge can start before Kafka does. A
// refusal that waiting cannot fix (Refused: SASL authentication failed, a
// broker certificate that does not verify) is returned at once.
func WaitReachable(ctx context.Context, cl *kgo.Client, log *slog.Logger) error {
	return backoff.UntilReachable(ctx, "connect to Kafka", log, "Kafka not reachable yet, retrying", Refused,
		func(ctx context.Context) error {
			pctx, cancel := context.WithTimeout(ctx, PingInterval)
			defer cancel()
			if err := cl.Ping(pctx); err != nil {
				if Refused(err) {
					return fmt.Errorf("connect to Kafka: %w", err)
				}
				return err
			}
			return nil
		})
}
