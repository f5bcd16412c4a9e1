package mqttconn

import (
	"net"
	"syscall"
)

// quickAckConn turns TCP_QUICKACK back on after every read; Linux clears it
// by itself, so a one-time setsockopt would not last. See withQuickAck.
type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
}

// withQuickAck makes the kernel acknowledge every TCP segment from the
// broker at once instead of delaying the ACK (Linux's delayed ACK waits for
// outgoing data to ride on, or a timer).
//
// Why: a broker with Nagle's algorithm on (Mosquitto's default) holds its
// next small PUBLISH until the previous segment is acknowledged, and a
// worker sends little besides its batched PUBACKs (MQTT_ACK_INTERVAL), so
// deliveries waited for delayed ACKs: at 5,000 msg/s the bridge's p50 to
// JetStream was 3.5 ms with quick ACKs off and 0.8 ms with them on. Under
// saturation the broker still coalesces packets while an ACK is on its way,
// which set_tcp_nodelay on the broker would stop (docs/performance.md).
func withQuickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c // a proxy's connection: leave it alone
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAckConn{Conn: c, raw: raw}
}

func (q *quickAckConn) Read(p []byte) (int, error) {
	n, err := q.Conn.Read(p)
	if n > 0 {
		_ = q.raw.Control(func(fd uintptr) {
			// Best effort: a failure only means delayed ACKs again.
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
	return n, err
}
