package devmode

import (
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// noSendQuota turns off mochi-mqtt v2.7.9's outbound flow control (the send
// quota that enforces each client's Receive Maximum), because both of its
// code paths are broken in ways the bridge hits within seconds under load:
//
//   - Stall (mochi v2.7.9 server.go:719-727): once a client's quota is used up, further
//     QoS 1 messages are stored and sent one per packet the client sends,
//     but deleted from the in-flight table when sent, so their PUBACKs never
//     give the quota back. A client that acknowledges in batches (the
//     bridge's workers, every MQTT_ACK_INTERVAL) stops receiving anything
//     after a burst larger than its Receive Maximum, until it reconnects.
//   - Deadlock: after every packet from a client that has messages in flight
//     and quota left, mochi calls Inflight.NextImmediate, which read-locks
//     the in-flight table twice (NextImmediate, then GetAll). When another
//     client's publish is waiting to write-lock the same table in between,
//     both goroutines block forever, and with them the publishing client
//     (no more PUBACKs) and the subscriber. Observed in the -dev end-to-end
//     test about once in ten runs of a 2000-message burst.
//
// With the quota pinned at 0 and its maximum at 0, mochi takes neither path:
// it sends every message at once (publishToClient only defers when the
// maximum is above 0) and never calls NextImmediate. What is lost is the
// broker honouring a client's Receive Maximum; paho does not enforce it
// either, and the bridge's workers still bound their own work
// (MQTT_MAX_INFLIGHT) and push back through TCP. Past that, mochi's limits
// apply: MaximumInflight stored messages per client, and the per-client
// outbound queue (MaximumClientWritesPending), beyond which mochi drops a
// message for that client; OnPublishDropped logs each such drop as a
// warning, so it is never silent.
//
// The quota is pinned when a session is being established (before the
// client is visible to publishers) and again once it is established,
// because taking over an existing session replaces the in-flight table
// (Inflight.Clone) and resets the quota.
type noSendQuota struct {
	mqtt.HookBase
	log *slog.Logger
}

// ID names the hook in mochi's logs.
func (h *noSendQuota) ID() string { return "nr-dev-no-send-quota" }

// Provides lists the events the hook handles.
func (h *noSendQuota) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnPublishDropped:
		return true
	}
	return false
}

// OnSessionEstablish pins the new client's send quota at 0.
func (h *noSendQuota) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	cl.State.Inflight.ResetSendQuota(0)
}

// OnSessionEstablished pins it again after a session takeover.
func (h *noSendQuota) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	cl.State.Inflight.ResetSendQuota(0)
}

// OnPublishDropped logs a message mochi dropped for a client whose outbound
// queue was full.
func (h *noSendQuota) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	h.log.Warn("dev broker dropped a message: the client's outbound queue is full", "client_id", cl.ID, "topic", pk.TopicName)
}
