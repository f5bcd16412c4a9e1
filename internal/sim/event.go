package sim

import (
	"strconv"
)

// appendEvent appends one event's JSON to buf: who sent it, its per-node
// sequence number (from 1) and the publish time in Unix nanoseconds (ts, so
// a consumer can compute end-to-end latency), a few metrics that vary with
// seq, and a "pad" string that brings the document to size bytes when it is
// shorter.
func appendEvent(buf []byte, run string, n *node, seq uint64, ts int64, size int) []byte {
	start := len(buf)
	buf = append(buf, `{"run":"`...)
	buf = append(buf, run...)
	buf = append(buf, `","org":"`...)
	buf = append(buf, n.org...)
	buf = append(buf, `","node":"`...)
	buf = append(buf, n.id...)
	buf = append(buf, `","seq":`...)
	buf = strconv.AppendUint(buf, seq, 10)
	buf = append(buf, `,"ts":`...)
	buf = strconv.AppendInt(buf, ts, 10)
	buf = append(buf, `,"type":"telemetry","metrics":{"cpu":`...)
	buf = strconv.AppendFloat(buf, float64((seq*7919+uint64(n.index))%1000)/1000, 'f', 3, 64)
	buf = append(buf, `,"mem_mb":`...)
	buf = strconv.AppendUint(buf, 512+(seq*104729+uint64(n.index))%1536, 10)
	buf = append(buf, `,"temp_c":`...)
	buf = strconv.AppendFloat(buf, 35+float64((seq*31+uint64(n.index)*7)%400)/10, 'f', 1, 64)
	buf = append(buf, `,"uptime_s":`...)
	buf = strconv.AppendUint(buf, seq*60, 10)
	buf = append(buf, '}')
	const padField = `,"pad":""}`
	if pad := size - (len(buf) - start) - len(padField); pad > 0 {
		buf = append(buf, `,"pad":"`...)
		for range pad {
			buf = append(buf, 'x')
		}
		buf = append(buf, `"}`...)
		return buf
	}
	return append(buf, '}')
}

// msgID is the msg_id user property of an event: <run>.<org>.<node>.<seq>.
// It becomes the backbone's deduplication ID (Nats-Msg-Id), so it must be
// unique across runs that share a deduplication window.
func msgID(run string, n *node, seq uint64) string {
	return run + "." + n.org + "." + n.id + "." + strconv.FormatUint(seq, 10)
}
