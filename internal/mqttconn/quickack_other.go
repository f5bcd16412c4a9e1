//go:build !linux

package mqttconn

import "net"

// withQuickAck is a no-op where TCP_QUICKACK does not exist (it is
// Linux-only); MQTT_TCP_QUICKACK then has no effect.
func withQuickAck(c net.Conn) net.Conn { return c }
