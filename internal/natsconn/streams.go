package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Streams is what the JetStream sink, the commands source and the status
// bucket share: the subject prefix, the dead-letter stream, and how the
// bridge sets up the streams it uses. Defaults are in the envDefault tags.
type Streams struct {
	SubjectPrefix   string        `env:"NATS_SUBJECT_PREFIX" envDefault:"nr" desc:"first token of every subject (nr.org.<org>.node.<node>.events)"`
	DLQStream       string        `env:"NATS_DLQ_STREAM" envDefault:"NR_DLQ" desc:"stream for dead letters (<prefix>.dlq.>)"`
	ManageStreams   bool          `env:"NATS_MANAGE_STREAMS" envDefault:"true" desc:"create or update the streams at start; false = use them as the operator configured them (they must exist)"`
	Replicas        int           `env:"NATS_STREAM_REPLICAS" envDefault:"1" desc:"replicas of each managed stream (1 to 5)"`
	MaxAge          time.Duration `env:"NATS_STREAM_MAX_AGE" envDefault:"168h" desc:"how long managed streams keep messages (0 = forever)"`
	DuplicateWindow time.Duration `env:"NATS_DUPLICATE_WINDOW" envDefault:"10m" desc:"JetStream dedupe window for Nats-Msg-Id; should exceed the longest redelivery delay (MQTT_SESSION_EXPIRY)"`
}

// Validate checks the values; errors name the variable.
func (c *Streams) Validate() error {
	if c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, " \t\r\n*>") || strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		return fmt.Errorf("NATS_SUBJECT_PREFIX %q: want NATS tokens without wildcards or spaces, e.g. nr", c.SubjectPrefix)
	}
	if !ValidName(c.DLQStream) {
		return fmt.Errorf("NATS_DLQ_STREAM %q: stream names cannot be empty or contain spaces, . * > / \\", c.DLQStream)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("NATS_STREAM_REPLICAS must be between 1 and 5, got %d", c.Replicas)
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("NATS_STREAM_MAX_AGE must be >= 0, got %s", c.MaxAge)
	}
	if c.DuplicateWindow <= 0 || (c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge) {
		return fmt.Errorf("NATS_DUPLICATE_WINDOW must be > 0 and <= NATS_STREAM_MAX_AGE, got %s", c.DuplicateWindow)
	}
	return nil
}

// ValidName reports whether s may name a stream or a consumer: not empty,
// no spaces, . * > / \.
func ValidName(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n.*>/\\")
}

// Stream is a stream of the bridge on disk with the shared replicas, max
// age and dedupe window.
func (c *Streams) Stream(name, desc string, retention jetstream.RetentionPolicy, subjects ...string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: desc,
		Subjects:    subjects,
		Storage:     jetstream.FileStorage,
		Retention:   retention,
		Replicas:    c.Replicas,
		MaxAge:      c.MaxAge,
		Duplicates:  c.DuplicateWindow,
	}
}

// SetUp makes sure the stream sc exists, bounded by a 5 s timeout: with
// ManageStreams it is created or updated (EnsureStream), else only looked
// up (CheckStream).
func (c *Streams) SetUp(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c.ManageStreams {
		return EnsureStream(ctx, js, sc, log)
	}
	return CheckStream(ctx, js, sc.Name)
}

// EnsureStream creates a stream or updates it to cfg. A stream that exists
// with settings that cannot be changed in place (storage, retention,
// subjects owned by another stream) is used as it is, with a warning naming
// the conflict (Adopt): the bridge keeps running instead of crash-looping,
// and the operator sees why.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, log *slog.Logger) error {
	_, err := Adopt(ctx,
		func(ctx context.Context) (jetstream.Stream, error) { return js.CreateOrUpdateStream(ctx, cfg) },
		func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, cfg.Name) },
		func(err error) error {
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) {
				return fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
			}
			return fmt.Errorf("create stream %s (subjects %v): %w", cfg.Name, cfg.Subjects, err)
		},
		func(err error) {
			log.Warn("stream exists with settings the bridge cannot apply; using it as it is (fix the stream or set NATS_MANAGE_STREAMS=false)",
				"stream", cfg.Name, "err", err)
		})
	if err == nil {
		log.Info("stream ready", "stream", cfg.Name, "subjects", cfg.Subjects)
	}
	return err
}

// Adopt is the one ensure-or-adopt of the JetStream setup (streams,
// consumers, key-value buckets): it applies the bridge's settings with
// apply; when the server refuses them with an API error (a setting that
// cannot change in place) and lookup finds the object, it calls adopted
// with the refusal and returns that object, used as it is. Otherwise the
// error is returned through wrap. Errors other than API errors (not
// connected, a timeout) are never adopted over.
func Adopt[T any](ctx context.Context, apply, lookup func(context.Context) (T, error), wrap func(error) error, adopted func(error)) (T, error) {
	v, err := apply(ctx)
	if err == nil {
		return v, nil
	}
	var zero T
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return zero, wrap(err)
	}
	existing, lerr := lookup(ctx)
	if lerr != nil {
		return zero, wrap(err)
	}
	adopted(err)
	return existing, nil
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

// JetStream returns a JetStream context on nc with opts; the sink, the
// commands source and the status bucket each take their own.
func JetStream(nc *nats.Conn, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}
