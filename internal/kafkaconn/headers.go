package kafkaconn

import "github.com/twmb/franz-go/pkg/kgo"

// Headers builds a record's headers from headers in order. H is the core's
// header type (bridge.Header), taken by its shape so that this package does
// not import the core; the sink's dead letters and the commands source's
// share it.
func Headers[H ~struct{ Name, Value string }](hs []H) []kgo.RecordHeader {
	out := make([]kgo.RecordHeader, len(hs))
	for i, x := range hs {
		kv := struct{ Name, Value string }(x)
		out[i] = kgo.RecordHeader{Key: kv.Name, Value: []byte(kv.Value)}
	}
	return out
}
