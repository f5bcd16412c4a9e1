// Package natsconn opens the bridge's NATS connection with the options a
// long-running bridge needs: reconnect forever, retry the first connect, and
// log state changes.
package natsconn

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Config is the NATS connection configuration.
type Config struct {
	URL string `env:"NATS_URL" envDefault:"nats://localhost:4222" desc:"NATS server URL(s), comma-separated"`
}

// Connect returns a connection that reconnects forever. With
// RetryOnFailedConnect it returns before the server is reachable; callers
// wait for readiness through their first request. MaxReconnects(-1) matters:
// the default gives up after about two minutes and leaves JetStream async
// publishes unresolved forever.
func Connect(cfg Config, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	log = log.With("component", "nats")
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(200*time.Millisecond, time.Second),
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("NATS connection established", "url", c.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS connection lost", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS connection established", "url", c.ConnectedUrlRedacted(), "reconnect", true)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("NATS reconnect attempt failed", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("NATS async error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("NATS async error", "err", err)
		}),
	}
	nc, err := nats.Connect(cfg.URL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect NATS %s: %w", cfg.URL, err)
	}
	return nc, nil
}
