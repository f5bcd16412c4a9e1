package kafkaconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nr-bridge/nr-bridge/internal/backoff"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
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
// (kgo.Client.Ping) every PingInterval. Its goroutine runs until Close.
type Monitor struct {
	cl     *kgo.Client
	log    *slog.Logger
	state  atomic.Pointer[error] // nil pointer value = up
	cancel context.CancelFunc
	done   chan struct{}
}

// NewMonitor starts pinging the cluster through cl; Ready reports the
// result of the last ping, and changes are logged to log. Close stops it;
// it does not close cl.
func NewMonitor(cl *kgo.Client, log *slog.Logger) *Monitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Monitor{cl: cl, log: log, cancel: cancel, done: make(chan struct{})}
	m.state.Store(&errNotChecked)
	go m.loop(ctx)
	return m
}

func (m *Monitor) loop(ctx context.Context) {
	defer close(m.done)
	for {
		pctx, cancel := context.WithTimeout(ctx, PingInterval)
		err := m.cl.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		wait := PingInterval
		prev := *m.state.Load()
		if err != nil {
			err = fmt.Errorf("kafka not reachable: %w", err)
			wait = pingRetry
			if prev == nil || prev == errNotChecked {
				m.log.Warn("Kafka not reachable", "err", err)
			}
			m.state.Store(&err)
		} else {
			if prev != nil {
				m.log.Info("Kafka reachable")
			}
			var up error
			m.state.Store(&up)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// Ready returns nil while the cluster answered the last ping, else why not.
func (m *Monitor) Ready() error { return *m.state.Load() }

// Close stops the pings and waits for the goroutine to end.
func (m *Monitor) Close() {
	m.cancel()
	<-m.done
}

// WaitReachable pings the cluster through cl with backoff (500 ms doubling
// to 10 s) until it answers or ctx ends, logging each failed attempt, so
// the bridge can start before Kafka does. A refusal that waiting cannot fix
// (SASL authentication failed, a broker certificate that does not verify)
// is returned at once.
func WaitReachable(ctx context.Context, cl *kgo.Client, log *slog.Logger) error {
	backoff := backoff.Exponential(500*time.Millisecond, 10*time.Second)
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, PingInterval)
		err := cl.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if refused(err) {
			return fmt.Errorf("connect to Kafka: %w", err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("connect to Kafka: %w (last error: %v)", ctx.Err(), err)
		}
		log.Warn("Kafka not reachable yet, retrying", "err", err, "attempt", attempt)
		select {
		case <-time.After(backoff(attempt)):
		case <-ctx.Done():
			return fmt.Errorf("connect to Kafka: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

// refused reports whether err is the cluster rejecting the bridge's
// credentials or the bridge rejecting the cluster's certificate.
func refused(err error) bool {
	var certErr *tls.CertificateVerificationError
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.As(err, &certErr)
}
