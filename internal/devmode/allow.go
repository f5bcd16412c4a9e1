package devmode

import (
	"bytes"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// allowAll lets every client connect, publish and subscribe: mochi denies
// everything unless an auth hook allows it (mochi's README), and dev mode
// has no users. It is mochi's auth.AllowHook, written out here because
// importing hooks/auth also pulls in gopkg.in/yaml.v3 (for its ledger), a
// dependency the module does not otherwise need.
type allowAll struct {
	mqtt.HookBase
}

// ID names the hook in mochi's logs.
func (h *allowAll) ID() string { return "allow-all-auth" }

// Provides says the hook answers authentication and ACL checks.
func (h *allowAll) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

// OnConnectAuthenticate allows every client.
func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck allows every topic, for reading and writing.
func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
