package mqttconn

import (
	"context"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/eclipse/paho.golang/autopaho"
)

// TestQuickAck dials a real TCP listener through the bridge's connector and
// checks, with getsockopt, that every read leaves TCP_QUICKACK on when
// MQTT_TCP_QUICKACK is true, and that false leaves the socket alone.
func TestQuickAck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ack := make([]byte, 3)
				for i := 0; i < 50; i++ {
					if _, err := c.Write([]byte("0123456789")); err != nil {
						return
					}
					if _, err := io.ReadFull(c, ack); err != nil {
						return
					}
				}
			}()
		}
	}()
	u := &url.URL{Scheme: "tcp", Host: ln.Addr().String()}

	for _, on := range []bool{true, false} {
		c, err := connector(on)(context.Background(), autopaho.ClientConfig{}, u)
		if err != nil {
			t.Fatal(err)
		}
		bc := c.(*bufConn)
		_, wrapped := bc.Conn.(*quickAckConn)
		if wrapped != on {
			t.Fatalf("MQTT_TCP_QUICKACK=%t: connection is %T", on, bc.Conn)
		}
		if !on {
			c.Close()
			continue
		}
		raw := bc.Conn.(*quickAckConn).raw
		buf := make([]byte, 10)
		for i := 0; i < 50; i++ {
			if _, err := io.ReadFull(bc.Conn, buf); err != nil {
				t.Fatal(err)
			}
			var v int
			var gerr error
			if err := raw.Control(func(fd uintptr) {
				v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK)
			}); err != nil || gerr != nil {
				t.Fatal(err, gerr)
			}
			if v != 1 {
				t.Fatalf("read %d: TCP_QUICKACK = %d after a read, want 1", i, v)
			}
			// Answering right after a read is what puts Linux into delayed
			// ACK ("pingpong") mode, as a worker's PUBACKs do; the next read
			// must turn quick ACKs back on.
			if _, err := bc.Conn.Write([]byte("ack")); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
	}
}
