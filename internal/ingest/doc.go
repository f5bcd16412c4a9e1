// Package ingest receives what the nodes publish and hands it to the
// backbone: each Worker is one MQTT connection in the shared subscription
// that reads events and replies, writes each to a bridge.Sink and
// acknowledges it to the broker only once the sink stored it (or wrote it
// to the dead-letter subject), in receive order. It retries transient
// failures with backoff, dead-letters permanent ones and poison messages,
// reports a worker that cannot acknowledge (stall), and keeps the
// subscription to the ORG_ID scope. A Receiver is a replica's set of
// workers.
package ingest
