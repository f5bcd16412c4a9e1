package backoff

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Setup delays: how the backbones retry their setup while the server is not
// reachable yet (500 ms doubling to 10 s).
const (
	SetupMin = 500 * time.Millisecond
	SetupMax = 10 * time.Second
)

// UntilReachable is the one retry-until-reachable loop of the backbones
// (JetStream streams and consumers, the Kafka cluster): it calls try until
// it succeeds, returns an error for which giveUp says waiting cannot help
// (a refusal: bad credentials, a stream the bridge must not create), or ctx
// ends. Each failed attempt is logged at WARN with msg, err and attempt,
// and followed by an Exponential(SetupMin, SetupMax) delay. When ctx ends
// the error is op wrapped around ctx's error, with the last failure.
func UntilReachable(ctx context.Context, op string, log *slog.Logger, msg string, giveUp func(error) bool, try func(context.Context) error) error {
	delay := Exponential(SetupMin, SetupMax)
	for attempt := 0; ; attempt++ {
		err := try(ctx)
		if err == nil {
			return nil
		}
		if giveUp(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (last error: %v)", op, ctx.Err(), err)
		}
		log.Warn(msg, "err", err, "attempt", attempt)
		select {
		case <-time.After(delay(attempt)):
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", op, ctx.Err(), err)
		}
	}
}
