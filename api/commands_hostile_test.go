package api_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// Hostile command bodies over HTTP (issue 12.4): a key that is a field name
// in another case (also written with JSON escapes), a duplicate key, control
// characters in type or correlation_id. Go's encoding/json and many agents'
// parsers match keys ignoring case, so an accepted body with "type":"ping"
// and "TYPE":"factory-reset" could make a node run the second. Each is a 422
// naming the field, and nothing reaches MQTT.
func TestCommandHostileBodies(t *testing.T) {
	e := newCmdTestEnv(t, "")
	now := time.Now().Unix()
	// doc is a valid command with extra raw members spliced in before and
	// after the known fields.
	doc := func(before, after string) []byte {
		return fmt.Appendf(nil, `{%s"type":"ping","version":1,"correlation_id":"c-1","issued_at":%d,"ttl_sec":60,"payload":{}%s}`, before, now, after)
	}
	withType := func(typ, corr string) []byte {
		return fmt.Appendf(nil, `{"type":%s,"version":1,"correlation_id":%s,"issued_at":%d,"ttl_sec":60,"payload":{}}`, typ, corr, now)
	}
	const printable = "must be printable UTF-8 without control characters"
	tests := []struct {
		name      string
		body      []byte
		wantError string
		wantField string
	}{
		{"TYPE and Payload next to type and payload", doc("", `,"TYPE":"factory-reset","Payload":{"wipe":true}`),
			`type: key "TYPE" differs from it only in case`, "type"},
		{"Payload before payload", doc(`"Payload":{"wipe":true},`, ""),
			`payload: key "Payload" differs from it only in case`, "payload"},
		{`escaped \u0054YPE`, doc("", `,"\u0054YPE":"factory-reset"`),
			`type: key "TYPE" differs from it only in case`, "type"},
		{`escaped typ\u0065 (a duplicate)`, doc("", `,"typ\u0065":"factory-reset"`),
			"type: duplicate key", "type"},
		{"plain duplicate", doc("", `,"type":"factory-reset"`), "type: duplicate key", "type"},
		{"long s in ttl_sec", doc("", `,"ttl_\u017fec":86400`),
			`ttl_sec: key "ttl_ſec" differs from it only in case`, "ttl_sec"},
		{"Type alone", []byte(fmt.Sprintf(`{"Type":"ping","version":1,"correlation_id":"c-1","issued_at":%d,"ttl_sec":60,"payload":{}}`, now)),
			`type: key "Type" differs from it only in case`, "type"},
		{"Correlation_Id", doc("", `,"Correlation_Id":"other"`),
			`correlation_id: key "Correlation_Id" differs from it only in case`, "correlation_id"},
		{"type with LF", withType(`"reboot\nnow"`, `"c-1"`), "type: " + printable, "type"},
		{"type with CR LF and a header", withType(`"ping\r\nNats-Rollup: all"`, `"c-1"`), "type: " + printable, "type"},
		{"type with NUL", withType(`"ping\u0000"`, `"c-1"`), "type: " + printable, "type"},
		{"type with ESC", withType(`"\u001b[2Jping"`, `"c-1"`), "type: " + printable, "type"},
		{"type with a lone surrogate", withType(`"ping\ud800"`, `"c-1"`), "type: " + printable, "type"},
		{"correlation_id with CR LF", withType(`"ping"`, `"c\r\nNr-Org: other"`), "correlation_id: " + printable, "correlation_id"},
		{"correlation_id with NUL", withType(`"ping"`, `"c\u0000"`), "correlation_id: " + printable, "correlation_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.post(t, "/org/o1/node/n1/cmd", "application/json", tt.body)
			if res.status != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422; body %s", res.status, res.raw)
			}
			if res.body["error"] != tt.wantError || res.body["field"] != tt.wantField || len(res.body) != 2 {
				t.Errorf("body %s, want error %q and field %q", res.raw, tt.wantError, tt.wantField)
			}
		})
	}
	// Not one of them was published: the sentinel is the first message on
	// org/#.
	e.expectOnly(t, "/org/o1/node/n1/cmd", "org/o1/node/n1/cmd")
}
