// Package bridge is the core of nr-bridge: the domain every other package
// plugs into, and nothing else. It imports only the standard library.
//
// It names:
//
//   - messages: Message (an event or reply on its way to a backbone), its
//     kinds, headers and dedupe ID, and how a dead letter is cut to fit
//     (message.go, deadletter.go);
//   - the topic grammar and ID rules: MQTT topics, NATS subjects, Kafka
//     keys, shared-subscription filters and the ORG_ID scope (topic.go);
//   - commands and their targets (command.go, target.go), the one intake
//     every command enters through (intake.go), and command status
//     (status.go, statusfit.go);
//   - the interfaces the rest plugs into: Sink (sink.go), Publisher
//     (publish.go), StatusStore (statusstore.go), the metrics ports
//     (metrics.go);
//   - one error taxonomy: the sentinels of errors.go and Classify
//     (classify.go), the one place that decides whether a failure is
//     retried, its dead-letter reason and metric label, and its HTTP
//     status.
//
// The MQTT transport (internal/mqttconn, internal/ingest), the publisher
// (internal/publisher), command tracking (internal/tracker), the backbones
// (sinks/, sources/, internal/natsconn, internal/kafkaconn) and the HTTP API
// (api) implement or use these; docs/architecture.md maps them.
package bridge
