// Package natsstatus keeps command statuses (bridge.StatusStore) in a
// JetStream key-value bucket, NR_COMMAND_STATUS by default, that every
// replica shares: one key per command (bridge.StatusKey), history 1, and
// compare-and-swap writes on the key's revision, so two replicas recording
// replies at once never lose each other's.
package natsstatus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nr-bridge/nr-bridge/bridge"
	"github.com/nr-bridge/nr-bridge/internal/natsconn"
)

// Config is the bucket's configuration. Defaults are in the envDefault
// tags.
type Config struct {
	Bucket string `env:"NATS_STATUS_BUCKET" envDefault:"NR_COMMAND_STATUS" desc:"JetStream key-value bucket of command statuses (created with NATS_MANAGE_STREAMS)"`
}

// Validate checks the values; errors name the variable.
func (c *Config) Validate() error {
	if c.Bucket == "" || len(c.Bucket) > 64 {
		return fmt.Errorf("NATS_STATUS_BUCKET %q: want 1 to 64 characters of A-Z a-z 0-9 _ -", c.Bucket)
	}
	for i := 0; i < len(c.Bucket); i++ {
		b := c.Bucket[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-') {
			return fmt.Errorf("NATS_STATUS_BUCKET %q: want 1 to 64 characters of A-Z a-z 0-9 _ -", c.Bucket)
		}
	}
	return nil
}

// defaultTimeout bounds a call whose ctx has no deadline.
const defaultTimeout = 5 * time.Second

// Options are how the bucket is created.
type Options struct {
	// Manage creates or updates the bucket at start (NATS_MANAGE_STREAMS);
	// false: it must exist.
	Manage bool
	// Replicas of the bucket's stream (NATS_STREAM_REPLICAS).
	Replicas int
	// TTL is how long a status is kept after its last write: the largest
	// command TTL plus the grace period. A bucket-wide TTL, since per-key
	// TTLs need nats-server 2.11.
	TTL time.Duration
}

// Store is the bucket; it implements bridge.StatusStore and is safe for
// concurrent use. It holds no goroutines of its own besides those of
// running watches.
type Store struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	// recreate sets the bucket up again after it was lost (deleted, or a
	// server that lost its store); nil without NATS_MANAGE_STREAMS.
	recreate func(ctx context.Context) error
	repairMu sync.Mutex
	repaired time.Time // the last recreate
	// maxValue is the largest status document Put writes: the bucket's
	// largest value or the server's max_payload, whichever is smaller,
	// minus room for the headers of a compare-and-swap write.
	maxValue int
}

// headerRoom is what a value leaves free below the limit for the headers
// of a KV write (Nats-Expected-Last-Subject-Sequence and framing).
const headerRoom = 1024

// newStore returns the store of kv, reading its value size limit.
func newStore(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, log *slog.Logger) *Store {
	limit := int64(js.Conn().MaxPayload())
	if st, err := kv.Status(ctx); err != nil {
		log.Warn("status bucket limits unknown, using the server's max_payload", "err", err)
	} else if b, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		if m := int64(b.StreamInfo().Config.MaxMsgSize); m > 0 && m < limit {
			limit = m
		}
	}
	return &Store{kv: kv, log: log, maxValue: max(int(limit)-headerRoom, headerRoom)}
}

// New opens the bucket, creating or updating it with opts.Manage. A bucket
// that exists with settings that cannot be changed is used as it is, with
// a WARN. It makes one attempt: call it once the server is reachable.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, opts Options, log *slog.Logger) (*Store, error) {
	log = log.With("component", "status", "backbone", "nats")
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if !opts.Manage {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if err != nil {
			return nil, fmt.Errorf("key-value bucket %s (NATS_STATUS_BUCKET) not found and NATS_MANAGE_STREAMS=false: create it or let the bridge manage it: %w", cfg.Bucket, err)
		}
		return newStore(ctx, js, kv, log), nil
	}
	kvCfg := jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "nr-bridge: command statuses",
		History:     1,
		TTL:         opts.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	}
	kv, err := natsconn.Adopt(ctx,
		func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateOrUpdateKeyValue(ctx, kvCfg) },
		func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, cfg.Bucket) },
		func(err error) error { return fmt.Errorf("create key-value bucket %s: %w", cfg.Bucket, err) },
		func(err error) {
			log.Warn("key-value bucket exists with settings the bridge cannot apply; using it as it is", "bucket", cfg.Bucket, "err", err)
		})
	if err != nil {
		return nil, err
	}
	st := newStore(ctx, js, kv, log)
	st.recreate = func(ctx context.Context) error {
		_, err := js.CreateOrUpdateKeyValue(ctx, kvCfg)
		return err
	}
	log.Info("status bucket ready", "bucket", cfg.Bucket, "ttl", opts.TTL.String(), "max_value_bytes", st.maxValue)
	return st, nil
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultTimeout)
}

// Get implements bridge.StatusStore.
func (s *Store) Get(ctx context.Context, org, correlationID string) (*bridge.CommandStatus, uint64, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	key := bridge.StatusKey(org, correlationID)
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, bridge.ErrStatusNotFound
		}
		return nil, 0, fmt.Errorf("get status %s: %w", key, err)
	}
	st, err := s.decode(key, e.Value())
	if err != nil {
		// Nothing the bridge writes is undecodable; a value someone else
		// put there must not block the command's status for good: it
		// counts as absent, and the next write replaces it (its revision
		// is returned for that).
		s.log.Warn("undecodable command status treated as absent", "key", key, "err", err)
		return nil, e.Revision(), fmt.Errorf("get status %s: %w: %w", key, bridge.ErrStatusNotFound, err)
	}
	return st, e.Revision(), nil
}

// Put implements bridge.StatusStore: Create for rev 0, else Update with
// rev as the expected last revision. A status too large for the bucket's
// values is cut to fit (bridge.MarshalStatus): reply payloads go first.
func (s *Store) Put(ctx context.Context, st *bridge.CommandStatus, rev uint64) (uint64, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	key := bridge.StatusKey(st.Org, st.CorrelationID)
	b, err := bridge.MarshalStatus(st, s.maxValue)
	if err != nil {
		return 0, fmt.Errorf("put status %s: %w", key, err)
	}
	var n uint64
	write := func() (uint64, error) {
		if rev == 0 {
			return s.kv.Create(ctx, key, b)
		}
		return s.kv.Update(ctx, key, b, rev)
	}
	n, err = write()
	if natsconn.StreamMissing(err) && s.repair(ctx) {
		n, err = write()
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch), isWrongLastSequence(err):
		return 0, fmt.Errorf("put status %s: %w", key, bridge.ErrStatusConflict)
	}
	// Documents are cut to fit the bucket, so a refusal for good (size
	// included) is a bucket whose limit was lowered since: rejected,
	// classified as every other write.
	return 0, bridge.BackboneError("put status "+key, err, false, natsconn.TooLarge(err) || natsconn.Permanent(err))
}

// repairInterval is how often at most the store sets up a lost bucket
// again.
const repairInterval = 2 * time.Second

// repair sets the bucket up again after a write found it missing, at most
// once per repairInterval, and reports whether it did: the write is then
// tried again. Statuses the lost bucket held are gone with it.
func (s *Store) repair(ctx context.Context) bool {
	if s.recreate == nil {
		return false
	}
	s.repairMu.Lock()
	defer s.repairMu.Unlock()
	if time.Since(s.repaired) < repairInterval {
		return false
	}
	s.repaired = time.Now()
	if err := s.recreate(ctx); err != nil {
		s.log.Error("status bucket missing and not recreated", "err", err)
		return false
	}
	s.log.Warn("status bucket was missing (deleted, or the server lost its store): recreated")
	return true
}

// isWrongLastSequence matches the CAS failures jetstream does not map
// (10071, and 10164 from replicated streams).
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return strings.Contains(err.Error(), "wrong last sequence")
}

// Watch implements bridge.StatusStore with a KV watch (an ordered push
// consumer on the key's subject): it first delivers the current value,
// then every new one.
func (s *Store) Watch(ctx context.Context, org, correlationID string) (<-chan *bridge.CommandStatus, error) {
	key := bridge.StatusKey(org, correlationID)
	w, err := s.kv.Watch(ctx, key, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch status %s: %w", key, err)
	}
	out := make(chan *bridge.CommandStatus, 1)
	go func() {
		defer close(out)
		defer func() {
			_ = w.Stop()
			// The library's callback sends on Updates under a lock that
			// its close handler needs: read until it closes the channel
			// (bounded, should the connection be gone already).
			giveUp := time.NewTimer(defaultTimeout)
			defer giveUp.Stop()
			for {
				select {
				case _, ok := <-w.Updates():
					if !ok {
						return
					}
				case <-giveUp.C:
					return
				}
			}
		}()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // end of the initial values
				}
				st, err := s.decode(key, e.Value())
				if err != nil {
					s.log.Warn("undecodable command status", "key", key, "err", err)
					continue
				}
				bridge.OfferStatus(out, st)
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// decode reads a stored status; one nested too deeply for encoding/json
// (written by an older version for a hostile reply) is repaired: the
// payload of the reply at fault is left out (truncated).
func (s *Store) decode(key string, b []byte) (*bridge.CommandStatus, error) {
	var st bridge.CommandStatus
	cut, err := bridge.UnmarshalLenient(b, &st)
	if err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	if cut {
		st.Repair()
		s.log.Warn("command status nested too deeply, reply payload cut", "key", key)
	}
	return &st, nil
}

var _ bridge.StatusStore = (*Store)(nil)
