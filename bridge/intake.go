package bridge

import (
	"context"
	"fmt"
	"time"
)

// Intake is the one way a command enters the bridge, whatever it comes
// from: the HTTP API, the NATS commands stream and the Kafka commands topic
// all hand it the raw body, the target and their source name, so every
// command is checked by the same rules in the same order (target IDs,
// ORG_ID scope, then the body with the same limits) and counted alike. It
// is safe for concurrent use.
type Intake struct {
	pub     Publisher
	limits  CommandLimits
	orgID   string
	metrics IntakeMetrics
	now     func() time.Time
}

// NewIntake returns the intake that publishes through pub. limits are the
// command limits bodies are parsed with (zero fields take their defaults);
// orgID is the bridge's scope, ORG_ID ("" when unscoped); m counts the
// commands refused before the publish (nil counts nothing; pub counts its
// own).
func NewIntake(pub Publisher, limits CommandLimits, orgID string, m IntakeMetrics) *Intake {
	if m == nil {
		m = NopMetrics{}
	}
	return &Intake{pub: pub, limits: limits.WithDefaults(), orgID: orgID, metrics: m, now: time.Now}
}

// IntakeMetrics is what the intake counts: commands refused before the
// publish (reason one of Reasons) and commands a source dead-lettered.
// internal/metrics implements it; calls must not block.
type IntakeMetrics interface {
	CommandRefused(source, reason string)
	DeadLettered(reason string)
}

// Limits returns the command limits, defaults filled in.
func (in *Intake) Limits() CommandLimits { return in.limits }

// OrgID is the bridge's scope, ORG_ID ("" when unscoped): the commands
// sources derive the name they share with the replicas of the same scope
// from it.
func (in *Intake) OrgID() string { return in.orgID }

// CheckTarget checks t's IDs (an error wrapping ErrInvalidID and
// ErrInvalidTarget) and the ORG_ID scope (ErrOutOfScope). Submit calls it
// first; the HTTP API calls it before reading a body too, so a bad target
// is refused without reading one.
func (in *Intake) CheckTarget(t Target) error { return CheckScope(t, in.orgID) }

// CheckScope checks t's IDs (an error wrapping ErrInvalidID and
// ErrInvalidTarget) and that t is inside orgID, the bridge's ORG_ID ("":
// unscoped; otherwise ErrOutOfScope). It is the one scope rule of commands
// and of the routes that read an org's commands and dead letters.
func CheckScope(t Target, orgID string) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if orgID != "" && t.Org != orgID {
		return fmt.Errorf("org %q: %w %q", t.Org, ErrOutOfScope, orgID)
	}
	return nil
}

// Submit checks target t (CheckTarget), parses raw as a command
// (ParseCommand with Limits) and publishes it, returning the parsed
// command (zero when the body did not parse) and the broker's answer. A
// refusal before the publish is counted under source with its reason.
// Classify says what an error means: Retry set means the same raw body may
// be submitted again later (a source retries until the TTL runs out),
// otherwise it is dead-lettered or refused.
func (in *Intake) Submit(ctx context.Context, source string, t Target, raw []byte) (Command, PublishResult, error) {
	if err := in.CheckTarget(t); err != nil {
		return Command{}, PublishResult{}, in.Refuse(source, err)
	}
	c, err := ParseCommand(raw, in.now(), in.limits)
	if err != nil {
		return Command{}, PublishResult{}, in.Refuse(source, err)
	}
	res, err := in.pub.Publish(ctx, t, c, source)
	return c, res, err
}

// Refuse counts a command from source refused before it could be published
// (a bad content type, an unreadable body, a subject or key that is no
// target) and returns err.
func (in *Intake) Refuse(source string, err error) error {
	in.metrics.CommandRefused(source, ReasonOf(err))
	return err
}

// DeadLettered counts a command a source wrote to its dead-letter subject
// or topic because of err (counted under nr_bridge_dead_letters_total
// beside the events).
func (in *Intake) DeadLettered(err error) {
	in.metrics.DeadLettered(ReasonOf(err))
}
