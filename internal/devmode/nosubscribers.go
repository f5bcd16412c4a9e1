package devmode

import (
	"bytes"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// pubackNoSubscribers makes the embedded broker answer a QoS 1 PUBLISH that
// matched no subscription with PUBACK reason 0x10 (No matching subscribers),
// as Mosquitto does, instead of mochi v2.7.9's 0x00. The bridge relies on it:
// a command nobody received is "no_subscribers" in its status, and a ?wait
// request returns at once instead of waiting out its time.
//
// mochi cannot send 0x10 itself: its PUBACK encoder writes the reason code
// only for codes >= 0x80 or when the packet carries properties, and the only
// PUBACK properties (reason string, user properties) must not be sent to a
// client that set Request Problem Information to 0, as the bridge's
// publisher does. So the hook writes the 5-byte PUBACK itself and tells mochi
// to drop the publish (there is nobody to deliver it to). A retained publish
// is left to mochi (it must be stored for later subscribers) and gets 0x00;
// MQTT 3.1.1 clients have no reason codes and are left alone too.
type pubackNoSubscribers struct {
	mqtt.HookBase
	srv *mqtt.Server
}

// ID names the hook in mochi's logs.
func (h *pubackNoSubscribers) ID() string { return "nr-dev-puback-no-subscribers" }

// Provides says the hook looks at every inbound PUBLISH.
func (h *pubackNoSubscribers) Provides(b byte) bool { return b == mqtt.OnPublish }

// OnPublish answers a QoS 1 MQTT v5 publish without subscribers with PUBACK
// 0x10 and rejects it, so that mochi neither acknowledges it again nor
// fans it out; every other publish passes unchanged.
func (h *pubackNoSubscribers) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos != 1 || pk.FixedHeader.Retain || cl.Net.Inline ||
		cl.Properties.ProtocolVersion != 5 || hasSubscribers(h.srv.Topics.Subscribers(pk.TopicName)) {
		return pk, nil
	}
	if err := writeRaw(cl, pubackPacket(pk.PacketID, packets.CodeNoMatchingSubscribers.Code)); err != nil {
		return pk, fmt.Errorf("puback 0x10 to %s: %w", cl.ID, err)
	}
	return pk, packets.ErrRejectPacket
}

// hasSubscribers reports whether a publish to the scanned topic reaches
// anyone: a plain or shared subscription (of a connected client or of a
// session kept for a disconnected one) or an in-process subscriber.
func hasSubscribers(s *mqtt.Subscribers) bool {
	return len(s.Subscriptions) > 0 || len(s.Shared) > 0 || len(s.InlineSubscriptions) > 0
}

// pubackPacket is an MQTT v5 PUBACK with a reason code and no properties
// (MQTT 5.0 section 3.4.2.1: the property length may be omitted).
func pubackPacket(id uint16, reason byte) []byte {
	return []byte{packets.Puback << 4, 3, byte(id >> 8), byte(id), reason}
}

// writeRaw writes an encoded packet to the client's connection under the
// client's lock, the lock mochi's WritePacket holds for each packet, so it
// never lands inside another packet.
func writeRaw(cl *mqtt.Client, b []byte) error {
	cl.Lock()
	defer cl.Unlock()
	if cl.Net.Conn == nil {
		return nil
	}
	_, err := bytes.NewReader(b).WriteTo(cl.Net.Conn)
	return err
}
