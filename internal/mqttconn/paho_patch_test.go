package mqttconn

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// publishPacket is a PUBLISH as an agent sends it: a 256-byte payload, the
// event topic, content type, correlation data and two user properties.
func publishPacket(t testing.TB) []byte {
	t.Helper()
	cp := packets.NewControlPacket(packets.PUBLISH)
	p := cp.Content.(*packets.Publish)
	p.QoS, p.PacketID, p.Topic = 1, 7, "org/acme/node/n1/events"
	p.Payload = bytes.Repeat([]byte{'x'}, 256)
	p.Properties = &packets.Properties{
		ContentType:     "application/json",
		CorrelationData: []byte("c-1"),
		User:            []packets.User{{Key: "fw", Value: "1.2.3"}, {Key: "site", Value: "lab"}},
	}
	var b bytes.Buffer
	if _, err := cp.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestPahoReadPacketAllocations guards the patch in third_party/paho.golang
// (go.mod replaces paho with it): paho v0.23.0 read every string of a packet
// through a bytes.Buffer grown to at least 512 bytes: 15.6 KB allocated for
// this 336-byte PUBLISH, the largest CPU cost of the bridge; patched it is
// about 1.2 KB. If the replace is dropped or the patch is lost in an
// upgrade, this fails.
func TestPahoReadPacketAllocations(t *testing.T) {
	raw := publishPacket(t)
	var cp *packets.ControlPacket
	read := func() {
		var err error
		if cp, err = packets.ReadPacket(bytes.NewReader(raw)); err != nil {
			t.Fatal(err)
		}
	}
	read()
	p := cp.Content.(*packets.Publish)
	if p.Topic != "org/acme/node/n1/events" || p.PacketID != 7 || p.QoS != 1 ||
		!bytes.Equal(p.Payload, bytes.Repeat([]byte{'x'}, 256)) ||
		p.Properties.ContentType != "application/json" || string(p.Properties.CorrelationData) != "c-1" ||
		len(p.Properties.User) != 2 || p.Properties.User[1] != (packets.User{Key: "site", Value: "lab"}) {
		t.Fatalf("packet read back wrong: %+v %+v", p, p.Properties)
	}

	const runs = 1000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		read()
	}
	runtime.ReadMemStats(&after)
	perPacket := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("%d-byte PUBLISH: %d bytes allocated per ReadPacket", len(raw), perPacket)
	const limit = 2048
	if perPacket > limit {
		t.Fatalf("ReadPacket allocates %d bytes per %d-byte PUBLISH, want at most %d: is third_party/paho.golang's patch in use?", perPacket, len(raw), limit)
	}
}

// BenchmarkPahoReadPacket is the MQTT read path of every forwarded message.
func BenchmarkPahoReadPacket(b *testing.B) {
	raw := publishPacket(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := packets.ReadPacket(bytes.NewReader(raw)); err != nil {
			b.Fatal(err)
		}
	}
}
