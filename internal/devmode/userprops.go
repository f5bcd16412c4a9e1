package devmode

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// keepPublishUserProperties works around mochi-mqtt v2.7.9 dropping the
// user properties of every PUBLISH it sends to a client that connected with
// Request Problem Information = 0. The spec ([MQTT-3.1.2-29]) only forbids
// reason strings and user properties on packets other than PUBLISH, CONNACK
// and DISCONNECT; mochi applies it to all packets.
//
// It matters because paho's ConnectProperties zero value sends Request
// Problem Information = 0, and autopaho builds exactly that for any client
// with a session expiry, such as the bridge's workers: without this hook the
// workers would get events without msg_id (no JetStream deduplication) and
// without the user properties the bridge turns into headers.
type keepPublishUserProperties struct {
	mqtt.HookBase
}

// ID names the hook in mochi's logs.
func (h *keepPublishUserProperties) ID() string { return "nr-dev-publish-user-properties" }

// Provides says the hook only looks at packets about to be encoded.
func (h *keepPublishUserProperties) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

// OnPacketEncode lets a PUBLISH carry its user properties whatever the
// client asked for problem information.
func (h *keepPublishUserProperties) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish {
		pk.Mods.DisallowProblemInfo = false
	}
	return pk
}
