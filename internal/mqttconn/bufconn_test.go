package mqttconn

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// TestBufConnPacketsWhole checks that packets written concurrently through
// paho's WriteTo (which locks a sync.Locker conn) arrive whole and in one
// piece each, and that a lone packet is flushed without further writes.
func TestBufConnPacketsWhole(t *testing.T) {
	client, server := net.Pipe()
	c := startBufConn(client)
	defer c.Close()
	if _, ok := net.Conn(c).(sync.Locker); !ok {
		t.Fatal("bufConn must implement sync.Locker")
	}
	const writers, each = 8, 200
	got := make(chan []*packets.ControlPacket, 1)
	go func() {
		var ps []*packets.ControlPacket
		for len(ps) < writers*each {
			p, err := packets.ReadPacket(server)
			if err != nil {
				t.Error(err)
				break
			}
			ps = append(ps, p)
		}
		got <- ps
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				pb := &packets.Publish{QoS: 0, Topic: "org/o/node/n/events", Payload: bytes.Repeat([]byte{byte(w)}, 100+i)}
				if _, err := pb.WriteTo(c); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case ps := <-got:
		for _, p := range ps {
			pub := p.Content.(*packets.Publish)
			if pub.Topic != "org/o/node/n/events" || bytes.Count(pub.Payload, pub.Payload[:1]) != len(pub.Payload) {
				t.Fatalf("interleaved packet: topic %q payload %q", pub.Topic, pub.Payload)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("packets not flushed")
	}

	// Reads go through the buffer: a packet written by the peer is read whole.
	go func() { _, _ = (&packets.Puback{PacketID: 7}).WriteTo(server) }()
	p, err := packets.ReadPacket(c)
	if err != nil || p.Content.(*packets.Puback).PacketID != 7 {
		t.Fatalf("read %v %v", p, err)
	}
	c.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read after close: %v", err)
	}
}
