package main

import (
	"context"
	"time"
)

// How SHUTDOWN_TIMEOUT (T) is split between the shutdown stages, in
// percent of T. Each stage gets its own share, so one that is stuck (a
// message the backbone never confirms) uses up its own share and not the
// others'; a stage that finishes early leaves its time to the later ones.
//
//	HTTP intake       10%: requests in progress (a ?wait ends at once)
//	workers           the rest, at least 60% (70% when HTTP is quick):
//	                  in-flight writes and their PUBACKs; the commands
//	                  source stops in parallel within the same window
//	publisher         10%: commands waiting for their PUBACK
//	tracker            5%: the last reply status updates
//	backbone          15%: flush and close
//
// With the default 10 s: HTTP 1 s, workers 6 to 7 s, publisher 1 s,
// tracker 0.5 s, backbone 1.5 s.
const (
	shareHTTP      = 10
	sharePublisher = 10
	shareTracker   = 5
	shareBackbone  = 15
	shareWorkers   = 100 - shareHTTP - sharePublisher - shareTracker - shareBackbone
)

// shutdownMargin is how far past SHUTDOWN_TIMEOUT a stage's deadline may
// fall: a stage gets its whole share even when an earlier one overran its
// own (an MQTT DISCONNECT the broker does not answer takes up to 2 s after
// the workers' share), but no stage runs past T + shutdownMargin. The
// process exits within SHUTDOWN_TIMEOUT + shutdownMargin, except when a
// server does not answer a goodbye that has its own bound after the
// deadline (MQTT DISCONNECT 2 s, Kafka LeaveGroup 5 s).
const shutdownMargin = 2 * time.Second

// commandsStopGrace is what the NATS commands source waits after its
// context ended for the server to confirm its unsubscribe; the source's
// deadline is that much before the workers', so both end together.
const commandsStopGrace = time.Second

// shutdownPlan hands each shutdown stage its deadline.
type shutdownPlan struct {
	total time.Duration
	end   time.Time // start + total
}

func newShutdownPlan(total time.Duration) *shutdownPlan {
	return &shutdownPlan{total: total, end: time.Now().Add(total)}
}

func (p *shutdownPlan) pct(n int) time.Duration { return p.total * time.Duration(n) / 100 }

// deadline is the end of a stage with share percent of the total whose
// slot ends reserve percent (the later stages' shares) before the end: the
// later of the slot's end and now + share, at most end + shutdownMargin.
func (p *shutdownPlan) deadline(share, reserve int) time.Time {
	return p.deadlineAt(time.Now(), share, reserve)
}

func (p *shutdownPlan) deadlineAt(now time.Time, share, reserve int) time.Time {
	d := p.end.Add(-p.pct(reserve))
	if own := now.Add(p.pct(share)); own.After(d) {
		d = own
	}
	if limit := p.end.Add(shutdownMargin); d.After(limit) {
		d = limit
	}
	return d
}

// stage returns the context of a stage (see deadline).
func (p *shutdownPlan) stage(share, reserve int) (context.Context, context.CancelFunc) {
	return context.WithDeadline(context.Background(), p.deadline(share, reserve))
}
