package main

// mutations is the committed list (docs/mutations.md): each breaks one
// promise of README.md or docs/ in the smallest way, and names the
// tests that must then fail. Search texts are exact and must occur once in
// File, so a refactoring that moves the code makes nr-mutate fail with "not
// applied" until the entry is updated, never pass silently.
var mutations = []Mutation{
	{
		Name:    "nats-writes-twice",
		Promise: "exactly once: every message with a msg_id is written to JetStream twice (JetStream drops the copy as a duplicate)",
		File:    "sinks/natsjs/sink.go",
		Search: `	fut, err := s.js.PublishMsgAsync(msg)
`,
		Replace: `	fut, err := s.js.PublishMsgAsync(msg)
	if err == nil && m.MsgID != "" {
		fut, err = s.js.PublishMsgAsync(msg)
	}
`,
		Tests: []Test{{Pkg: "./internal/ingest/", Run: "^(TestForwardEventsAndReplies|TestBackboneOutage)$"}},
	},
	{
		Name:    "ack-before-write",
		Promise: "a message is acknowledged (PUBACK) only after the backbone stored it",
		File:    "internal/ingest/flight.go",
		Search: `	w.sink.Write(w.ctx, m, f.done)
	return true, nil
`,
		Replace: `	f.ack()
	w.sink.Write(w.ctx, m, f.done)
	return true, nil
`,
		Tests: []Test{
			{Pkg: "./internal/ingest/", Run: "^(TestShutdownMidRetryDoesNotAck|TestAckAfterRetriedWrite|TestBackboneOutage)$"},
			{Pkg: "./cmd/nr-bridge/", Run: "^TestBinaryCrashRedelivers$"},
		},
	},
	{
		Name:    "ack-on-write-error",
		Promise: "a failed write is retried, never acknowledged",
		File:    "internal/ingest/flight.go",
		Search: `	w := f.w
	if err == nil {
		if f.m.DeadLetter != "" {`,
		Replace: `	w := f.w
	if true {
		if f.m.DeadLetter != "" {`,
		Tests: []Test{{Pkg: "./internal/ingest/", Run: "^(TestAckAfterRetriedWrite|TestShutdownMidRetryDoesNotAck|TestBackboneOutage)$"}},
	},
	{
		Name:    "skips-inflight-wait",
		Promise: "graceful shutdown: a stopping worker waits for its in-flight writes and their PUBACKs",
		File:    "internal/ingest/worker.go",
		Search:  `		for w.inflight > 0 && w.ctx.Err() == nil {`,
		Replace: `		for false && w.inflight > 0 && w.ctx.Err() == nil {`,
		Tests: []Test{
			{Pkg: "./internal/ingest/", Run: "^(TestStopWaitsForInflightWrites|TestForwardEventsAndReplies|TestBackboneOutage|TestShutdownMidRetryDoesNotAck)$"},
			{Pkg: "./cmd/nr-bridge/", Run: "^TestBinaryGracefulShutdownUnderLoad$"},
		},
	},
	{
		Name:    "drops-dead-letter",
		Promise: "the bridge never drops a message it received: a permanent write error is dead-lettered",
		File:    "internal/ingest/flight.go",
		Search: `	case permanent && f.m.DeadLetter == "":
		f.deadLetter(err)
		return
`,
		Replace: `	case permanent && f.m.DeadLetter == "":
		f.ack()
		w.release(f, false)
		return
`,
		Tests: []Test{{Pkg: "./internal/ingest/", Run: "^(TestOversizedEventDeadLettered|TestRejectedWriteDeadLettered)$"}},
	},
	{
		Name:    "poison-never-dead-lettered",
		Promise: "a message the backbone keeps refusing while it takes later ones is dead-lettered as poison, so the worker acknowledges again",
		File:    "internal/ingest/flight.go",
		Search:  `	if f.m.DeadLetter == "" && f.attempt >= poisonAttempts && w.laterWritten(f) {`,
		Replace: `	if false && f.m.DeadLetter == "" && f.attempt >= poisonAttempts && w.laterWritten(f) {`,
		Tests:   []Test{{Pkg: "./internal/ingest/", Run: "^TestPoisonDeadLettered$"}},
	},
	{
		Name:    "org-id-not-checked",
		Promise: "ORG_ID: a scoped bridge forwards only its org, even through an earlier scope's subscription",
		File:    "bridge/topic.go",
		Search: `func InScope(topic, orgID string) bool {
	if orgID == "" {`,
		Replace: `func InScope(topic, orgID string) bool {
	if true || orgID == "" {`,
		Tests: []Test{{Pkg: "./internal/ingest/", Run: "^(TestInScope|TestScopeChange)$"}},
	},
	{
		Name:    "org-id-not-subscribed",
		Promise: "ORG_ID: a scoped bridge subscribes to its org only",
		File:    "bridge/topic.go",
		Search: `	org := "+"
	if orgID != "" {`,
		Replace: `	org := "+"
	if false && orgID != "" {`,
		Tests: []Test{{Pkg: "./bridge/", Run: "^TestSubscriptionFilters$"}, {Pkg: "./internal/ingest/", Run: "^TestScopeChange$"}},
	},
	{
		Name:    "kafka-commit-before-puback",
		Promise: "a command record's offset is committed only once the broker acknowledged its publish (PUBACK)",
		File:    "sources/kafka/handle.go",
		Search:  `		c, _, err = s.in.Submit(ctx, bridge.SourceStream, t, r.Value)`,
		Replace: `		go s.in.Submit(ctx, bridge.SourceStream, t, r.Value)`,
		Tests:   []Test{{Pkg: "./sources/kafka/", Run: "^TestRetryUntilBrokerUpOrTTLRunsOut$"}},
	},
	{
		Name:    "reserved-properties-forwarded",
		Promise: "user properties named Nr-*, Nats-* or Content-Type never become backbone headers",
		File:    "bridge/message.go",
		Search:  `	return hasPrefixFold(name, "nr-") || hasPrefixFold(name, "nats-") || strings.EqualFold(name, HeaderContentType)`,
		Replace: `	return false && (hasPrefixFold(name, "nr-") || hasPrefixFold(name, "nats-") || strings.EqualFold(name, HeaderContentType))`,
		Tests:   []Test{{Pkg: "./bridge/", Run: "^TestReservedPropertiesDropped$"}, {Pkg: "./internal/ingest/", Run: "^TestReservedPropertiesNeverReachJetStream$"}},
	},
	{
		Name:    "dedupe-not-scoped",
		Promise: "one node can never make the backbone drop another node's message as a duplicate (msg_id scoped to org/node)",
		File:    "bridge/message.go",
		Search: `func (m *Message) DedupeID() string {
	if m.MsgID == "" {`,
		Replace: `func (m *Message) DedupeID() string {
	if true {
		return m.MsgID
	}
	if m.MsgID == "" {`,
		Tests: []Test{
			{Pkg: "./bridge/", Run: "^TestDedupeIDScopedToNode$"}, {Pkg: "./internal/ingest/", Run: "^TestDedupeScopedToNode$"},
			{Pkg: "./sinks/natsjs/", Run: "^TestNatsMsgDedupeID$"},
		},
	},
	{
		Name:    "nats-dedupe-not-scoped",
		Promise: "Nats-Msg-Id is <org>/<node>/<msg_id> (the NATS sink builds it inline, without DedupeID)",
		File:    "sinks/natsjs/sink.go",
		Search:  `		vals = append(vals, both[cut:])`,
		Replace: `		vals = append(vals, m.MsgID)`,
		Tests: []Test{
			{Pkg: "./sinks/natsjs/", Run: "^TestNatsMsgDedupeID$"},
			{Pkg: "./internal/ingest/", Run: "^TestDedupeScopedToNode$"},
		},
	},
	{
		Name:    "dead-letter-not-fitted",
		Promise: "a dead letter is cut to what the backbone takes, so it is never refused for its size",
		File:    "bridge/deadletter.go",
		Search: `	size := headersSize(headers) + len(payload)
	if size <= limit {`,
		Replace: `	size := headersSize(headers) + len(payload)
	if true || size <= limit {`,
		Tests: []Test{{Pkg: "./bridge/", Run: "^TestFitDeadLetter$"}, {Pkg: "./internal/ingest/", Run: "^(TestOversizedEventDeadLettered|TestHeadersTooLargeDeadLettered)$"}},
	},
	{
		Name:    "permanent-as-transient",
		Promise: "a write JetStream refuses for good (400) is dead-lettered at once, not retried forever",
		File:    "internal/natsconn/errors.go",
		Search: `func Permanent(err error) bool {
	if err == nil {`,
		Replace: `func Permanent(err error) bool {
	if true || err == nil {`,
		Tests: []Test{{Pkg: "./internal/ingest/", Run: "^TestRejectedWriteDeadLettered$"}},
	},
	{
		Name:    "command-case-variants",
		Promise: "a command with a key that differs from a field name only in case is refused (422)",
		File:    "bridge/command.go",
		Search:  `				if dup == nil && strings.EqualFold(key, name) {`,
		Replace: `				if false && dup == nil && strings.EqualFold(key, name) {`,
		Tests:   []Test{{Pkg: "./bridge/", Run: "^(TestAgentParserMatchesKeysIgnoringCase|TestParseCommandFieldErrors)$"}},
	},
	{
		Name:    "expired-command-accepted",
		Promise: "an expired command (issued_at + ttl_sec not after now) is never published",
		File:    "bridge/command.go",
		Search:  `	if exp := c.ExpiresAt(); !now.Before(exp) {`,
		Replace: `	if exp := c.ExpiresAt(); false && !now.Before(exp) {`,
		Tests:   []Test{{Pkg: "./bridge/", Run: "^TestParseCommandExpired$"}},
	},
}
