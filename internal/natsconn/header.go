package natsconn

import "github.com/nats-io/nats.go"

// Header builds the NATS header of a message from its headers in order (a
// repeated name keeps every value). H is the core's header type
// (bridge.Header), taken by its shape so that this package does not import
// the core; the sink's dead letters and the commands source's share it.
func Header[H ~struct{ Name, Value string }](hs []H) nats.Header {
	h := make(nats.Header, len(hs))
	for _, x := range hs {
		kv := struct{ Name, Value string }(x)
		h[kv.Name] = append(h[kv.Name], kv.Value)
	}
	return h
}
