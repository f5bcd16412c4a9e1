package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// cmdNow is the bridge's clock in these tests; the fraction matters for the
// expiry edge.
var cmdNow = time.Unix(1_700_000_000, 500_000_000)

// cmdBaseFields is a valid command, as raw JSON values in document order.
var cmdBaseFields = []struct{ k, v string }{
	{"type", `"reboot"`},
	{"version", `1`},
	{"correlation_id", `"c-1"`},
	{"issued_at", `1700000000`},
	{"ttl_sec", `60`},
	{"payload", `{"delay":5}`},
}

// cmdDoc returns the valid command with the raw values in set replaced (or
// added, after the known fields) and the fields in drop left out.
func cmdDoc(set map[string]string, drop ...string) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	done := map[string]bool{}
	write := func(k, v string) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%s", k, v)
	}
	for _, f := range cmdBaseFields {
		done[f.k] = true
		if cmdContains(drop, f.k) {
			continue
		}
		v := f.v
		if s, ok := set[f.k]; ok {
			v = s
		}
		write(f.k, v)
	}
	for k, v := range set {
		if !done[k] {
			write(k, v)
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

func cmdContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func cmdQuote(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestParseCommandValid(t *testing.T) {
	long := strings.Repeat("x", DefaultMaxStringLen)
	tests := []struct {
		name string
		body []byte
		want Command // compared without raw
	}{
		{
			name: "basic",
			body: cmdDoc(nil),
			want: Command{Type: "reboot", Version: 1, CorrelationID: "c-1", IssuedAt: 1700000000, TTLSec: 60, Payload: json.RawMessage(`{"delay":5}`)},
		},
		{
			name: "unknown fields ignored",
			body: cmdDoc(map[string]string{"priority": `"high"`, "extra": `[1,{"a":null}]`}),
			want: Command{Type: "reboot", Version: 1, CorrelationID: "c-1", IssuedAt: 1700000000, TTLSec: 60, Payload: json.RawMessage(`{"delay":5}`)},
		},
		{
			name: "whitespace around and inside",
			body: []byte(" \n\t{ \"type\" : \"t\" , \"version\":2,\"correlation_id\":\"c\",\"issued_at\":1700000000,\"ttl_sec\":10,\"payload\": { } }\r\n"),
			want: Command{Type: "t", Version: 2, CorrelationID: "c", IssuedAt: 1700000000, TTLSec: 10, Payload: json.RawMessage(`{ }`)},
		},
		{
			name: "escaped key and value",
			body: []byte(`{"t\u0079pe":"a\/b","version":1,"correlation_id":"\u00e9t\u00e9","issued_at":1700000000,"ttl_sec":10,"payload":{}}`),
			want: Command{Type: "a/b", Version: 1, CorrelationID: "été", IssuedAt: 1700000000, TTLSec: 10, Payload: json.RawMessage(`{}`)},
		},
		{
			name: "near-future issued_at within skew",
			body: cmdDoc(map[string]string{"issued_at": `1700000030`}),
			want: Command{Type: "reboot", Version: 1, CorrelationID: "c-1", IssuedAt: 1700000030, TTLSec: 60, Payload: json.RawMessage(`{"delay":5}`)},
		},
		{
			name: "ttl at max",
			body: cmdDoc(map[string]string{"ttl_sec": `86400`}),
			want: Command{Type: "reboot", Version: 1, CorrelationID: "c-1", IssuedAt: 1700000000, TTLSec: 86400, Payload: json.RawMessage(`{"delay":5}`)},
		},
		{
			name: "strings at max length, printable correlation_id with spaces",
			body: cmdDoc(map[string]string{"type": cmdQuote(long), "correlation_id": cmdQuote("req 42 — ünïcode ✓ " + strings.Repeat("y", DefaultMaxStringLen-29))}),
			want: Command{Type: long, Version: 1, CorrelationID: "req 42 — ünïcode ✓ " + strings.Repeat("y", DefaultMaxStringLen-29), IssuedAt: 1700000000, TTLSec: 60, Payload: json.RawMessage(`{"delay":5}`)},
		},
		{
			name: "large version, negative zero ttl neighbour",
			body: cmdDoc(map[string]string{"version": `9223372036854775807`}),
			want: Command{Type: "reboot", Version: math.MaxInt, CorrelationID: "c-1", IssuedAt: 1700000000, TTLSec: 60, Payload: json.RawMessage(`{"delay":5}`)},
		},
		{
			name: "nested payload",
			body: cmdDoc(map[string]string{"payload": `{"a":[1,2,{"b":"}"}],"c":null}`}),
			want: Command{Type: "reboot", Version: 1, CorrelationID: "c-1", IssuedAt: 1700000000, TTLSec: 60, Payload: json.RawMessage(`{"a":[1,2,{"b":"}"}],"c":null}`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCommand(tt.body, cmdNow, DefaultCommandLimits())
			if err != nil {
				t.Fatalf("ParseCommand(%s) error: %v", tt.body, err)
			}
			if !bytes.Equal(c.Raw(), tt.body) {
				t.Errorf("Raw() = %q, want the input %q", c.Raw(), tt.body)
			}
			c.raw = nil
			if c.Type != tt.want.Type || c.Version != tt.want.Version || c.CorrelationID != tt.want.CorrelationID ||
				c.IssuedAt != tt.want.IssuedAt || c.TTLSec != tt.want.TTLSec || !bytes.Equal(c.Payload, tt.want.Payload) {
				t.Errorf("got %+v\nwant %+v", c, tt.want)
			}
		})
	}
}

func TestParseCommandFieldErrors(t *testing.T) {
	type tc struct {
		name   string
		body   []byte
		field  string
		reason string // exact when set
	}
	tests := []tc{}
	for _, f := range cmdBaseFields {
		tests = append(tests, tc{name: "missing " + f.k, body: cmdDoc(nil, f.k), field: f.k, reason: "required"})
	}
	tests = append(tests,
		tc{name: "empty object", body: []byte(`{}`), field: "type", reason: "required"},
		tc{name: "field name in another case", body: bytes.Replace(cmdDoc(nil), []byte(`"type"`), []byte(`"Type"`), 1), field: "type", reason: `key "Type" differs from it only in case`},

		tc{name: "type number", body: cmdDoc(map[string]string{"type": `1`}), field: "type", reason: "must be a string"},
		tc{name: "type null", body: cmdDoc(map[string]string{"type": `null`}), field: "type", reason: "must be a string"},
		tc{name: "type object", body: cmdDoc(map[string]string{"type": `{}`}), field: "type", reason: "must be a string"},
		tc{name: "type empty", body: cmdDoc(map[string]string{"type": `""`}), field: "type", reason: "must not be empty"},
		tc{name: "type too long", body: cmdDoc(map[string]string{"type": cmdQuote(strings.Repeat("x", 257))}), field: "type", reason: "must be at most 256 bytes"},
		tc{name: "type too long in bytes", body: cmdDoc(map[string]string{"type": cmdQuote(strings.Repeat("é", 129))}), field: "type", reason: "must be at most 256 bytes"},

		tc{name: "version 0", body: cmdDoc(map[string]string{"version": `0`}), field: "version", reason: "must be an integer >= 1"},
		tc{name: "version negative", body: cmdDoc(map[string]string{"version": `-1`}), field: "version", reason: "must be an integer >= 1"},
		tc{name: "version fraction", body: cmdDoc(map[string]string{"version": `1.5`}), field: "version", reason: "must be an integer >= 1"},
		tc{name: "version 1.0", body: cmdDoc(map[string]string{"version": `1.0`}), field: "version", reason: "must be an integer >= 1"},
		tc{name: "version exponent", body: cmdDoc(map[string]string{"version": `1e3`}), field: "version", reason: "must be an integer >= 1"},
		tc{name: "version string", body: cmdDoc(map[string]string{"version": `"1"`}), field: "version", reason: "must be an integer >= 1"},
		tc{name: "version bool", body: cmdDoc(map[string]string{"version": `true`}), field: "version", reason: "must be an integer >= 1"},
		tc{name: "version null", body: cmdDoc(map[string]string{"version": `null`}), field: "version", reason: "must be an integer >= 1"},
		tc{name: "version overflow", body: cmdDoc(map[string]string{"version": `9223372036854775808`}), field: "version", reason: "must be an integer >= 1"},

		tc{name: "correlation_id number", body: cmdDoc(map[string]string{"correlation_id": `123`}), field: "correlation_id", reason: "must be a string"},
		tc{name: "correlation_id empty", body: cmdDoc(map[string]string{"correlation_id": `""`}), field: "correlation_id", reason: "must not be empty"},
		tc{name: "correlation_id too long", body: cmdDoc(map[string]string{"correlation_id": cmdQuote(strings.Repeat("c", 257))}), field: "correlation_id", reason: "must be at most 256 bytes"},
		tc{name: "correlation_id newline", body: cmdDoc(map[string]string{"correlation_id": `"a\nb"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},
		tc{name: "correlation_id NUL", body: cmdDoc(map[string]string{"correlation_id": `"a\u0000b"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},
		tc{name: "correlation_id tab", body: cmdDoc(map[string]string{"correlation_id": `"a\tb"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},
		tc{name: "correlation_id DEL", body: cmdDoc(map[string]string{"correlation_id": `"a\u007fb"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},
		tc{name: "correlation_id C1 control", body: cmdDoc(map[string]string{"correlation_id": `"a\u0085b"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},
		tc{name: "correlation_id bidi override", body: cmdDoc(map[string]string{"correlation_id": `"a\u202eb"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},
		tc{name: "correlation_id replacement char", body: cmdDoc(map[string]string{"correlation_id": `"a\ufffdb"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},
		tc{name: "correlation_id lone surrogate escape", body: cmdDoc(map[string]string{"correlation_id": `"a\ud800b"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},

		tc{name: "issued_at string", body: cmdDoc(map[string]string{"issued_at": `"1700000000"`}), field: "issued_at", reason: "must be an integer (Unix seconds)"},
		tc{name: "issued_at fraction", body: cmdDoc(map[string]string{"issued_at": `1700000000.5`}), field: "issued_at", reason: "must be an integer (Unix seconds)"},
		tc{name: "issued_at exponent", body: cmdDoc(map[string]string{"issued_at": `1.7e9`}), field: "issued_at", reason: "must be an integer (Unix seconds)"},
		tc{name: "issued_at null", body: cmdDoc(map[string]string{"issued_at": `null`}), field: "issued_at", reason: "must be an integer (Unix seconds)"},
		tc{name: "issued_at RFC 3339", body: cmdDoc(map[string]string{"issued_at": `"2023-11-14T22:13:20Z"`}), field: "issued_at", reason: "must be an integer (Unix seconds)"},
		tc{name: "issued_at overflow", body: cmdDoc(map[string]string{"issued_at": `99999999999999999999`}), field: "issued_at", reason: "must be an integer (Unix seconds)"},
		tc{name: "issued_at 31s ahead", body: cmdDoc(map[string]string{"issued_at": `1700000031`}), field: "issued_at", reason: "must not be more than 30s in the future (it is 31s ahead of the bridge's clock)"},
		tc{name: "issued_at an hour ahead", body: cmdDoc(map[string]string{"issued_at": `1700003600`}), field: "issued_at"},
		tc{name: "issued_at max int64", body: cmdDoc(map[string]string{"issued_at": `9223372036854775807`}), field: "issued_at"},

		tc{name: "ttl 0", body: cmdDoc(map[string]string{"ttl_sec": `0`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},
		tc{name: "ttl negative", body: cmdDoc(map[string]string{"ttl_sec": `-5`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},
		tc{name: "ttl over max", body: cmdDoc(map[string]string{"ttl_sec": `86401`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},
		tc{name: "ttl huge", body: cmdDoc(map[string]string{"ttl_sec": `9223372036854775807`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},
		tc{name: "ttl fraction", body: cmdDoc(map[string]string{"ttl_sec": `1.5`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},
		tc{name: "ttl exponent", body: cmdDoc(map[string]string{"ttl_sec": `1e2`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},
		tc{name: "ttl string", body: cmdDoc(map[string]string{"ttl_sec": `"10"`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},
		tc{name: "ttl null", body: cmdDoc(map[string]string{"ttl_sec": `null`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},

		tc{name: "payload array", body: cmdDoc(map[string]string{"payload": `[]`}), field: "payload", reason: "must be a JSON object"},
		tc{name: "payload string", body: cmdDoc(map[string]string{"payload": `"{}"`}), field: "payload", reason: "must be a JSON object"},
		tc{name: "payload null", body: cmdDoc(map[string]string{"payload": `null`}), field: "payload", reason: "must be a JSON object"},
		tc{name: "payload number", body: cmdDoc(map[string]string{"payload": `0`}), field: "payload", reason: "must be a JSON object"},
		tc{name: "payload bool", body: cmdDoc(map[string]string{"payload": `false`}), field: "payload", reason: "must be a JSON object"},

		tc{name: "duplicate known key", body: []byte(`{"type":"a","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":99999,"payload":{},"ttl_sec":10}`), field: "ttl_sec", reason: "duplicate key"},
		tc{name: "duplicate via escape", body: []byte(`{"type":"a","t\u0079pe":"b","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`), field: "type", reason: "duplicate key"},
		tc{name: "first field error wins", body: cmdDoc(map[string]string{"type": `""`, "ttl_sec": `0`}), field: "type", reason: "must not be empty"},

		// Go's encoding/json and many agents' parsers match keys ignoring
		// case (Unicode simple folding: ſ is s, K is k); the agent might
		// run the other value.
		tc{name: "case variant after the field", body: []byte(`{"type":"ping","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{},"TYPE":"factory-reset","Payload":{"wipe":true}}`), field: "type", reason: `key "TYPE" differs from it only in case`},
		tc{name: "case variant before the field", body: []byte(`{"Payload":{"wipe":true},"type":"ping","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`), field: "payload", reason: `key "Payload" differs from it only in case`},
		tc{name: "case variant written with escapes", body: []byte(`{"type":"ping","\u0054YPE":"factory-reset","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`), field: "type", reason: `key "TYPE" differs from it only in case`},
		tc{name: "duplicate written with an escape", body: []byte(`{"type":"ping","typ\u0065":"factory-reset","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`), field: "type", reason: "duplicate key"},
		tc{name: "case variant with long s", body: []byte(`{"type":"ping","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"ttl_\u017fec":86400,"payload":{}}`), field: "ttl_sec", reason: `key "ttl_ſec" differs from it only in case`},
		tc{name: "case variant of correlation_id", body: []byte(`{"type":"ping","version":1,"Correlation_ID":"other","correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`), field: "correlation_id", reason: `key "Correlation_ID" differs from it only in case`},
		tc{name: "case variant of version, issued_at", body: []byte(`{"type":"ping","version":1,"VERSION":2,"correlation_id":"c","ISSUED_AT":1,"issued_at":1700000000,"ttl_sec":10,"payload":{}}`), field: "version", reason: `key "VERSION" differs from it only in case`},
		tc{name: "case variant with another error after it", body: []byte(`{"TTL_SEC":5,"type":"","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`), field: "ttl_sec", reason: `key "TTL_SEC" differs from it only in case`},

		tc{name: "type newline", body: cmdDoc(map[string]string{"type": `"reboot\nnow"`}), field: "type", reason: "must be printable UTF-8 without control characters"},
		tc{name: "type NUL", body: cmdDoc(map[string]string{"type": `"reboot\u0000"`}), field: "type", reason: "must be printable UTF-8 without control characters"},
		tc{name: "type CR LF", body: cmdDoc(map[string]string{"type": `"a\r\nNats-Rollup: all"`}), field: "type", reason: "must be printable UTF-8 without control characters"},
		tc{name: "type DEL", body: cmdDoc(map[string]string{"type": `"a\u007f"`}), field: "type", reason: "must be printable UTF-8 without control characters"},
		tc{name: "type C1 control", body: cmdDoc(map[string]string{"type": `"a\u009b"`}), field: "type", reason: "must be printable UTF-8 without control characters"},
		tc{name: "type lone surrogate escape", body: cmdDoc(map[string]string{"type": `"a\udc00"`}), field: "type", reason: "must be printable UTF-8 without control characters"},
		tc{name: "type bidi override", body: cmdDoc(map[string]string{"type": `"a\u202e"`}), field: "type", reason: "must be printable UTF-8 without control characters"},
		tc{name: "correlation_id CR LF", body: cmdDoc(map[string]string{"correlation_id": `"c\r\nNr-Org: other"`}), field: "correlation_id", reason: "must be printable UTF-8 without control characters"},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCommand(tt.body, cmdNow, DefaultCommandLimits())
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("ParseCommand(%s) = %v, want ErrInvalidCommand", tt.body, err)
			}
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrExpired) {
				t.Errorf("error %v also matches ErrMalformed or ErrExpired", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FieldError", err)
			}
			if fe.Field != tt.field {
				t.Errorf("Field = %q, want %q (error %v)", fe.Field, tt.field, err)
			}
			if tt.reason != "" && fe.Reason != tt.reason {
				t.Errorf("Reason = %q, want %q", fe.Reason, tt.reason)
			}
			if want := fe.Field + ": " + fe.Reason; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}

func TestFieldErrorMessage(t *testing.T) {
	_, err := ParseCommand(cmdDoc(map[string]string{"ttl_sec": `0`}), cmdNow, DefaultCommandLimits())
	if got, want := fmt.Sprint(err), "ttl_sec: must be an integer between 1 and 86400"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("command from subject x: %w", err)
	var fe *FieldError
	if !errors.As(wrapped, &fe) || fe.Field != "ttl_sec" || !errors.Is(wrapped, ErrInvalidCommand) {
		t.Errorf("wrapped FieldError not found: %v", wrapped)
	}
}

func TestParseCommandMalformed(t *testing.T) {
	valid := string(cmdDoc(nil))
	tests := []struct {
		name string
		body []byte
	}{
		{name: "nil", body: nil},
		{name: "empty", body: []byte{}},
		{name: "whitespace", body: []byte(" \r\n\t ")},
		{name: "array", body: []byte(`[` + valid + `]`)},
		{name: "string", body: []byte(`"{}"`)},
		{name: "null", body: []byte(`null`)},
		{name: "number", body: []byte(`42`)},
		{name: "bool", body: []byte(`true`)},
		{name: "truncated", body: []byte(valid[:len(valid)-1])},
		{name: "open brace", body: []byte(`{`)},
		{name: "missing value", body: []byte(`{"type":}`)},
		{name: "trailing comma", body: []byte(`{"a":1,}`)},
		{name: "missing comma", body: []byte(`{"a":1 "b":2}`)},
		{name: "leading comma", body: []byte(`{,"a":1}`)},
		{name: "unquoted key", body: []byte(`{type:"a"}`)},
		{name: "single quotes", body: []byte(`{'type':'a'}`)},
		{name: "two objects", body: []byte(valid + valid)},
		{name: "trailing garbage", body: []byte(valid + "x")},
		{name: "trailing close brace", body: []byte(valid + "}")},
		{name: "invalid UTF-8 in value", body: []byte(strings.Replace(valid, "c-1", "c-\xff", 1))},
		{name: "invalid UTF-8 in unknown field", body: []byte(`{"x":"` + "\xc3\x28" + `"}`)},
		{name: "UTF-16 BOM", body: append([]byte{0xfe, 0xff}, valid...)},
		{name: "UTF-8 BOM", body: append([]byte{0xef, 0xbb, 0xbf}, valid...)},
		{name: "NaN", body: []byte(strings.Replace(valid, "60", "NaN", 1))},
		{name: "bad payload inside", body: []byte(strings.Replace(valid, `{"delay":5}`, `{"delay":}`, 1))},
		{name: "duplicate key then malformed", body: []byte(`{"type":"a","type":"b",`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCommand(tt.body, cmdNow, DefaultCommandLimits())
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseCommand(%q) = %v, want ErrMalformed", tt.body, err)
			}
			if errors.Is(err, ErrInvalidCommand) || errors.Is(err, ErrExpired) {
				t.Errorf("error %v also matches ErrInvalidCommand or ErrExpired", err)
			}
			if !strings.HasPrefix(err.Error(), "not a JSON object") {
				t.Errorf("error %q does not start with %q", err, "not a JSON object")
			}
		})
	}
}

func TestParseCommandExpired(t *testing.T) {
	tests := []struct {
		name    string
		body    []byte
		now     time.Time
		wantErr error
		remain  time.Duration
	}{
		{name: "expired a minute ago", body: cmdDoc(map[string]string{"issued_at": `1699999880`}), now: cmdNow, wantErr: ErrExpired},
		{name: "expiry just before now", body: cmdDoc(map[string]string{"issued_at": `1699999940`, "ttl_sec": `60`}), now: cmdNow, wantErr: ErrExpired},
		{name: "expiry equal to now", body: cmdDoc(map[string]string{"issued_at": `1699999940`, "ttl_sec": `60`}), now: time.Unix(1_700_000_000, 0), wantErr: ErrExpired},
		{name: "half a second left", body: cmdDoc(map[string]string{"issued_at": `1699999940`, "ttl_sec": `61`}), now: cmdNow, remain: 500 * time.Millisecond},
		{name: "one nanosecond left", body: cmdDoc(map[string]string{"issued_at": `1699999940`, "ttl_sec": `60`}), now: time.Unix(1_699_999_999, 999_999_999), remain: time.Nanosecond},
		{name: "min int64 issued_at", body: cmdDoc(map[string]string{"issued_at": `-9223372036854775808`, "ttl_sec": `86400`}), now: cmdNow, wantErr: ErrExpired},
		{name: "issued_at zero", body: cmdDoc(map[string]string{"issued_at": `0`}), now: cmdNow, wantErr: ErrExpired},
		{name: "future within skew, full ttl left", body: cmdDoc(map[string]string{"issued_at": `1700000030`, "ttl_sec": `10`}), now: cmdNow, remain: 39500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCommand(tt.body, tt.now, DefaultCommandLimits())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseCommand = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil {
				if got := c.Remaining(tt.now); got != tt.remain {
					t.Errorf("Remaining = %v, want %v", got, tt.remain)
				}
				return
			}
			var fe *FieldError
			if errors.Is(err, ErrInvalidCommand) || errors.Is(err, ErrMalformed) || errors.As(err, &fe) {
				t.Errorf("expired error %v also matches another class", err)
			}
			if !strings.HasPrefix(err.Error(), "command expired") {
				t.Errorf("error %q does not start with %q", err, "command expired")
			}
		})
	}
}

func TestCommandExpiresAtRemaining(t *testing.T) {
	c, err := ParseCommand(cmdDoc(nil), cmdNow, DefaultCommandLimits())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.ExpiresAt(), time.Unix(1_700_000_060, 0); !got.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v", got, want)
	}
	if got, want := c.Remaining(cmdNow), 59500*time.Millisecond; got != want {
		t.Errorf("Remaining = %v, want %v", got, want)
	}
	if got := c.Remaining(time.Unix(1_700_000_100, 0)); got != -40*time.Second {
		t.Errorf("Remaining after expiry = %v, want -40s", got)
	}

	// Hand-built commands with extreme values saturate instead of wrapping.
	for _, hi := range []Command{{IssuedAt: math.MaxInt64 - 5, TTLSec: 10}, {IssuedAt: math.MaxInt64}} {
		if !hi.ExpiresAt().After(cmdNow) || hi.Remaining(cmdNow) <= 0 {
			t.Errorf("%+v: ExpiresAt = %v, Remaining = %v", hi, hi.ExpiresAt(), hi.Remaining(cmdNow))
		}
	}
	for _, lo := range []Command{{IssuedAt: math.MinInt64 + 5, TTLSec: -10}, {IssuedAt: math.MinInt64}} {
		if !lo.ExpiresAt().Before(cmdNow) || lo.Remaining(cmdNow) >= 0 {
			t.Errorf("%+v: ExpiresAt = %v, Remaining = %v", lo, lo.ExpiresAt(), lo.Remaining(cmdNow))
		}
	}
	if (Command{}).Raw() != nil {
		t.Error("Raw of a hand-built Command is not nil")
	}
}

func TestCommandLimits(t *testing.T) {
	d := DefaultCommandLimits()
	if d.MaxTTL != 24*time.Hour || d.MaxClockSkew != 30*time.Second || d.MaxStringLen != 256 {
		t.Fatalf("DefaultCommandLimits = %+v", d)
	}
	tests := []struct {
		name   string
		limits CommandLimits
		body   []byte
		field  string // "" means accepted
		reason string
	}{
		{name: "zero limits take defaults: ttl over max", limits: CommandLimits{}, body: cmdDoc(map[string]string{"ttl_sec": `86401`}), field: "ttl_sec", reason: "must be an integer between 1 and 86400"},
		{name: "zero limits take defaults: ttl at max", limits: CommandLimits{}, body: cmdDoc(map[string]string{"ttl_sec": `86400`})},
		{name: "zero limits take defaults: skew", limits: CommandLimits{}, body: cmdDoc(map[string]string{"issued_at": `1700000031`}), field: "issued_at"},
		{name: "negative limits take defaults", limits: CommandLimits{MaxTTL: -1, MaxClockSkew: -1, MaxStringLen: -1}, body: cmdDoc(map[string]string{"ttl_sec": `86400`, "issued_at": `1700000030`})},
		{name: "custom max ttl", limits: CommandLimits{MaxTTL: time.Hour}, body: cmdDoc(map[string]string{"ttl_sec": `3601`}), field: "ttl_sec", reason: "must be an integer between 1 and 3600"},
		{name: "max ttl rounds down", limits: CommandLimits{MaxTTL: 1500 * time.Millisecond}, body: cmdDoc(map[string]string{"ttl_sec": `2`}), field: "ttl_sec", reason: "must be an integer between 1 and 1"},
		{name: "sub-second max ttl still allows 1", limits: CommandLimits{MaxTTL: time.Millisecond}, body: cmdDoc(map[string]string{"issued_at": `1700000000`, "ttl_sec": `1`})},
		{name: "custom string length", limits: CommandLimits{MaxStringLen: 5}, body: cmdDoc(map[string]string{"type": `"reboot"`}), field: "type", reason: "must be at most 5 bytes"},
		{name: "no skew: one second ahead", limits: CommandLimits{MaxClockSkew: time.Nanosecond}, body: cmdDoc(map[string]string{"issued_at": `1700000001`}), field: "issued_at"},
		{name: "no skew: this second", limits: CommandLimits{MaxClockSkew: time.Nanosecond}, body: cmdDoc(map[string]string{"issued_at": `1700000000`})},
		{name: "large skew", limits: CommandLimits{MaxClockSkew: time.Hour}, body: cmdDoc(map[string]string{"issued_at": `1700003600`})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCommand(tt.body, cmdNow, tt.limits)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("ParseCommand error: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("ParseCommand = %v, want a FieldError on %s", err, tt.field)
			}
			if tt.reason != "" && fe.Reason != tt.reason {
				t.Errorf("Reason = %q, want %q", fe.Reason, tt.reason)
			}
		})
	}
}

func TestCommandRaw(t *testing.T) {
	body := cmdDoc(map[string]string{"zz_unknown": `{"kept": true}`})
	in := bytes.Clone(body)
	c, err := ParseCommand(in, cmdNow, DefaultCommandLimits())
	if err != nil {
		t.Fatal(err)
	}
	for i := range in { // the caller reuses its buffer
		in[i] = 'X'
	}
	if !bytes.Equal(c.Raw(), body) {
		t.Errorf("Raw() = %q, want %q", c.Raw(), body)
	}
	if string(c.Payload) != `{"delay":5}` {
		t.Errorf("Payload = %s", c.Payload)
	}
}

func TestCommandMarshalRoundTrip(t *testing.T) {
	c, err := ParseCommand(cmdDoc(nil), cmdNow, DefaultCommandLimits())
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseCommand(b, cmdNow, DefaultCommandLimits())
	if err != nil {
		t.Fatalf("ParseCommand(%s): %v", b, err)
	}
	if c2.Type != c.Type || c2.Version != c.Version || c2.CorrelationID != c.CorrelationID ||
		c2.IssuedAt != c.IssuedAt || c2.TTLSec != c.TTLSec || !bytes.Equal(c2.Payload, c.Payload) {
		t.Errorf("round trip: %+v != %+v", c2, c)
	}
}

// largeBodies are 3 MB command documents, each with the error ParseCommand
// must return (TestCommandLargeBody); BenchmarkParseCommandLargeBody times
// them (quadratic behaviour would show there, not as a test timeout).
func largeBodies() []struct {
	name    string
	body    []byte
	wantErr error
} {
	const size = 3 << 20
	return []struct {
		name    string
		body    []byte
		wantErr error
	}{
		{name: "3 MB payload string", body: cmdDoc(map[string]string{"payload": `{"blob":"` + strings.Repeat("a", size) + `"}`})},
		{name: "3 MB of payload members", body: cmdDoc(map[string]string{"payload": `{` + strings.Repeat(`"k":[1,2,3],`, size/12) + `"end":0}`})},
		{name: "3 MB unknown field", body: cmdDoc(map[string]string{"zz": `"` + strings.Repeat("z", size) + `"`})},
		{name: "3 MB deep nesting", body: cmdDoc(map[string]string{"payload": `{"x":` + strings.Repeat("[", size) + strings.Repeat("]", size) + `}`}), wantErr: ErrMalformed},
		{name: "3 MB unterminated string", body: []byte(`{"type":"` + strings.Repeat("a", size)), wantErr: ErrMalformed},
		{name: "3 MB number", body: cmdDoc(map[string]string{"ttl_sec": strings.Repeat("9", size)}), wantErr: ErrInvalidCommand},
		{name: "3 MB type string", body: cmdDoc(map[string]string{"type": `"` + strings.Repeat("t", size) + `"`}), wantErr: ErrInvalidCommand},
		{name: "3 MB array", body: []byte(`[` + strings.Repeat(`1,`, size/2) + `1]`), wantErr: ErrMalformed},
	}
}

func TestCommandLargeBody(t *testing.T) {
	for _, tt := range largeBodies() {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCommand(tt.body, cmdNow, DefaultCommandLimits())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseCommand = %v, want %v", err, tt.wantErr)
			}
			if err == nil && !bytes.Equal(c.Raw(), tt.body) {
				t.Error("Raw() differs from the input")
			}
		})
	}
}

// BenchmarkParseCommandLargeBody is the speed of ParseCommand on 3 MB
// documents; it was a wall-clock assertion in TestCommandLargeBody.
func BenchmarkParseCommandLargeBody(b *testing.B) {
	for _, tt := range largeBodies() {
		b.Run(tt.name, func(b *testing.B) {
			b.SetBytes(int64(len(tt.body)))
			for i := 0; i < b.N; i++ {
				if _, err := ParseCommand(tt.body, cmdNow, DefaultCommandLimits()); !errors.Is(err, tt.wantErr) {
					b.Fatalf("ParseCommand = %v, want %v", err, tt.wantErr)
				}
			}
		})
	}
}

func TestTargetTopics(t *testing.T) {
	tests := []struct {
		name                             string
		target                           Target
		broadcast                        bool
		topic, reply, subject, key, desc string
	}{
		{
			name:    "node",
			target:  Target{Org: "o1", Node: "n-1_A"},
			topic:   "org/o1/node/n-1_A/cmd",
			reply:   "org/o1/node/n-1_A/reply",
			subject: "nr.org.o1.node.n-1_A.cmd",
			key:     "org/o1/node/n-1_A",
		},
		{
			name:      "broadcast",
			target:    Target{Org: "o1"},
			broadcast: true,
			topic:     "org/o1/broadcast/cmd",
			reply:     "",
			subject:   "nr.org.o1.broadcast.cmd",
			key:       "org/o1/broadcast",
		},
		{
			name:    "node named broadcast",
			target:  Target{Org: "broadcast", Node: "broadcast"},
			topic:   "org/broadcast/node/broadcast/cmd",
			reply:   "org/broadcast/node/broadcast/reply",
			subject: "nr.org.broadcast.node.broadcast.cmd",
			key:     "org/broadcast/node/broadcast",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := tt.target
			if err := tg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tg.Broadcast() != tt.broadcast {
				t.Errorf("Broadcast = %v", tg.Broadcast())
			}
			if got := tg.MQTTTopic(); got != tt.topic {
				t.Errorf("MQTTTopic = %q, want %q", got, tt.topic)
			}
			if got := tg.ReplyTopic(); got != tt.reply {
				t.Errorf("ReplyTopic = %q, want %q", got, tt.reply)
			}
			if got := tg.Subject("nr"); got != tt.subject {
				t.Errorf("Subject = %q, want %q", got, tt.subject)
			}
			if got := tg.Key(); got != tt.key {
				t.Errorf("Key = %q, want %q", got, tt.key)
			}
			// The contract's rules (docs/contract.md): subject = prefix + topic with / -> .; key =
			// topic without its last level.
			if want := "nr." + strings.ReplaceAll(tt.topic, "/", "."); tg.Subject("nr") != want {
				t.Errorf("Subject %q breaks the rule (want %q)", tg.Subject("nr"), want)
			}
			if want := tt.topic[:strings.LastIndexByte(tt.topic, '/')]; tg.Key() != want {
				t.Errorf("Key %q breaks the rule (want %q)", tg.Key(), want)
			}
			if got, err := ParseCommandSubject("nr", tg.Subject("nr")); err != nil || got != tg {
				t.Errorf("ParseCommandSubject(Subject) = %+v, %v", got, err)
			}
			if got, err := ParseCommandSubject("acme.nr", tg.Subject("acme.nr")); err != nil || got != tg {
				t.Errorf("ParseCommandSubject(Subject) with dotted prefix = %+v, %v", got, err)
			}
			if got, err := ParseCommandKey(tg.Key()); err != nil || got != tg {
				t.Errorf("ParseCommandKey(Key) = %+v, %v", got, err)
			}
		})
	}
}

// cmdBadIDs are IDs that must never reach a topic, subject or key, with the
// reason. The URL-decoded forms of %2B, %23, %2F, %00 are among them.
var cmdBadIDs = []struct{ name, id string }{
	{"empty", ""},
	{"plus", "a+b"},
	{"plus alone", "+"},
	{"hash", "#"},
	{"hash inside", "a#b"},
	{"slash", "a/b"},
	{"dot", "a.b"},
	{"NUL", "a\x00b"},
	{"dollar", "$SYS"},
	{"star", "*"},
	{"greater", ">"},
	{"space", "a b"},
	{"newline", "a\nb"},
	{"percent-encoded", "a%2Bb"},
	{"non-ASCII", "é"},
	{"invalid UTF-8", "\xff"},
	{"65 chars", strings.Repeat("a", 65)},
}

func TestTargetValidate(t *testing.T) {
	longID := strings.Repeat("z", 64)
	for _, ok := range []Target{{Org: "o"}, {Org: "o", Node: "n"}, {Org: longID, Node: longID}, {Org: "A-z_0", Node: "-_-"}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", ok, err)
		}
	}
	for _, bad := range cmdBadIDs {
		for _, tc := range []struct {
			which  string
			target Target
		}{
			{"org", Target{Org: bad.id, Node: "n"}},
			{"org", Target{Org: bad.id}},
			{"node", Target{Org: "o", Node: bad.id}},
		} {
			if tc.which == "node" && bad.id == "" {
				continue // an empty node is a broadcast
			}
			t.Run(tc.which+" "+bad.name, func(t *testing.T) {
				err := tc.target.Validate()
				if !errors.Is(err, ErrInvalidID) || !errors.Is(err, ErrInvalidTarget) {
					t.Fatalf("Validate(%+v) = %v, want ErrInvalidID and ErrInvalidTarget", tc.target, err)
				}
				if want := fmt.Sprintf("%s id %q", tc.which, bad.id); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %s", err, want)
				}
			})
		}
	}
}

func TestParseCommandSubject(t *testing.T) {
	type tc struct {
		name    string
		subject string
		want    Target
		wantErr error // ErrInvalidTarget for a wrong shape, ErrInvalidID for a bad ID
		mention string
	}
	tests := []tc{
		{name: "node", subject: "nr.org.o1.node.n1.cmd", want: Target{Org: "o1", Node: "n1"}},
		{name: "broadcast", subject: "nr.org.o1.broadcast.cmd", want: Target{Org: "o1"}},
		{name: "64-char ids", subject: "nr.org." + strings.Repeat("o", 64) + ".node." + strings.Repeat("n", 64) + ".cmd", want: Target{Org: strings.Repeat("o", 64), Node: strings.Repeat("n", 64)}},
		{name: "empty", subject: "", wantErr: ErrInvalidTarget, mention: `does not start with "nr."`},
		{name: "other prefix", subject: "xx.org.o1.node.n1.cmd", wantErr: ErrInvalidTarget},
		{name: "prefix without dot", subject: "nrorg.o1.node.n1.cmd", wantErr: ErrInvalidTarget},
		{name: "prefix only", subject: "nr.", wantErr: ErrInvalidTarget},
		{name: "events subject", subject: "nr.org.o1.node.n1.events", wantErr: ErrInvalidTarget, mention: "want nr.org.<org>.node.<node>.cmd or nr.org.<org>.broadcast.cmd"},
		{name: "reply subject", subject: "nr.org.o1.node.n1.reply", wantErr: ErrInvalidTarget},
		{name: "no kind", subject: "nr.org.o1.node.n1", wantErr: ErrInvalidTarget},
		{name: "extra token", subject: "nr.org.o1.node.n1.cmd.x", wantErr: ErrInvalidTarget},
		{name: "trailing dot", subject: "nr.org.o1.broadcast.cmd.", wantErr: ErrInvalidTarget},
		{name: "dot in id", subject: "nr.org.o.1.node.n1.cmd", wantErr: ErrInvalidTarget},
		{name: "broadcast with node", subject: "nr.org.o1.broadcast.n1.cmd", wantErr: ErrInvalidTarget},
		{name: "dlq subject", subject: "nr.dlq.cmd", wantErr: ErrInvalidTarget},
		{name: "empty org", subject: "nr.org..node.n1.cmd", wantErr: ErrInvalidID, mention: `org id ""`},
		{name: "empty node is not a broadcast", subject: "nr.org.o1.node..cmd", wantErr: ErrInvalidID, mention: `node id ""`},
		{name: "empty org broadcast", subject: "nr.org..broadcast.cmd", wantErr: ErrInvalidID},
		{name: "star org", subject: "nr.org.*.node.n1.cmd", wantErr: ErrInvalidID, mention: `org id "*"`},
		{name: "greater node", subject: "nr.org.o1.node.>.cmd", wantErr: ErrInvalidID},
	}
	for _, bad := range cmdBadIDs {
		if bad.id == "" || strings.Contains(bad.id, ".") {
			continue // covered above: these change the shape
		}
		tests = append(tests,
			tc{name: "org " + bad.name, subject: "nr.org." + bad.id + ".node.n1.cmd", wantErr: ErrInvalidID, mention: fmt.Sprintf("org id %q", bad.id)},
			tc{name: "node " + bad.name, subject: "nr.org.o1.node." + bad.id + ".cmd", wantErr: ErrInvalidID, mention: fmt.Sprintf("node id %q", bad.id)},
			tc{name: "broadcast org " + bad.name, subject: "nr.org." + bad.id + ".broadcast.cmd", wantErr: ErrInvalidID, mention: fmt.Sprintf("org id %q", bad.id)},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommandSubject("nr", tt.subject)
			checkTargetResult(t, got, err, tt.want, tt.wantErr, tt.mention, tt.subject)
		})
	}
}

func TestParseCommandKey(t *testing.T) {
	type tc struct {
		name    string
		key     string
		want    Target
		wantErr error
		mention string
	}
	tests := []tc{
		{name: "node", key: "org/o1/node/n1", want: Target{Org: "o1", Node: "n1"}},
		{name: "broadcast", key: "org/o1/broadcast", want: Target{Org: "o1"}},
		{name: "64-char ids", key: "org/" + strings.Repeat("o", 64) + "/node/" + strings.Repeat("n", 64), want: Target{Org: strings.Repeat("o", 64), Node: strings.Repeat("n", 64)}},
		{name: "empty", key: "", wantErr: ErrInvalidTarget, mention: "want org/<org>/node/<node> or org/<org>/broadcast"},
		{name: "topic not key", key: "org/o1/node/n1/cmd", wantErr: ErrInvalidTarget},
		{name: "broadcast topic not key", key: "org/o1/broadcast/cmd", wantErr: ErrInvalidTarget},
		{name: "leading slash", key: "/org/o1/broadcast", wantErr: ErrInvalidTarget},
		{name: "trailing slash", key: "org/o1/broadcast/", wantErr: ErrInvalidTarget},
		{name: "no org prefix", key: "o1/node/n1", wantErr: ErrInvalidTarget},
		{name: "slash in id", key: "org/o/1/node/n1", wantErr: ErrInvalidTarget},
		{name: "subject not key", key: "org.o1.node.n1", wantErr: ErrInvalidTarget},
		{name: "empty org", key: "org//node/n1", wantErr: ErrInvalidID, mention: `org id ""`},
		{name: "empty node is not a broadcast", key: "org/o1/node/", wantErr: ErrInvalidID, mention: `node id ""`},
		{name: "empty org broadcast", key: "org//broadcast", wantErr: ErrInvalidID},
	}
	for _, bad := range cmdBadIDs {
		if bad.id == "" || strings.Contains(bad.id, "/") {
			continue
		}
		tests = append(tests,
			tc{name: "org " + bad.name, key: "org/" + bad.id + "/node/n1", wantErr: ErrInvalidID, mention: fmt.Sprintf("org id %q", bad.id)},
			tc{name: "node " + bad.name, key: "org/o1/node/" + bad.id, wantErr: ErrInvalidID, mention: fmt.Sprintf("node id %q", bad.id)},
			tc{name: "broadcast org " + bad.name, key: "org/" + bad.id + "/broadcast", wantErr: ErrInvalidID, mention: fmt.Sprintf("org id %q", bad.id)},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommandKey(tt.key)
			checkTargetResult(t, got, err, tt.want, tt.wantErr, tt.mention, tt.key)
		})
	}
}

func checkTargetResult(t *testing.T, got Target, err error, want Target, wantErr error, mention, input string) {
	t.Helper()
	if wantErr == nil {
		if err != nil || got != want {
			t.Fatalf("parse(%q) = %+v, %v; want %+v", input, got, err, want)
		}
		return
	}
	if !errors.Is(err, wantErr) || !errors.Is(err, ErrInvalidTarget) {
		t.Fatalf("parse(%q) = %+v, %v; want %v", input, got, err, wantErr)
	}
	if wantErr == ErrInvalidTarget && errors.Is(err, ErrInvalidID) {
		t.Errorf("shape error %v also matches ErrInvalidID", err)
	}
	if got != (Target{}) {
		t.Errorf("parse(%q) returned %+v with an error", input, got)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("%q", input)) {
		t.Errorf("error %q does not quote the input", err)
	}
	if mention != "" && !strings.Contains(err.Error(), mention) {
		t.Errorf("error %q does not mention %q", err, mention)
	}
}

func FuzzParseCommand(f *testing.F) {
	f.Add(cmdDoc(nil))
	f.Add(cmdDoc(map[string]string{"extra": `[1,"x",{"y":null}]`}))
	f.Add(cmdDoc(map[string]string{"ttl_sec": `1.5`}))
	f.Add(cmdDoc(map[string]string{"issued_at": `1700000030`, "ttl_sec": `86400`}))
	f.Add(cmdDoc(map[string]string{"correlation_id": `"a\u0000b"`}))
	f.Add(cmdDoc(map[string]string{"payload": `[]`}))
	f.Add(cmdDoc(nil, "version"))
	f.Add([]byte(`{"type":"a","type":"b","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`))
	f.Add([]byte(`{"t\u0079pe":"x","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{"a":"\ud83d\ude00"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte("{\"type\":\"\xff\"}"))
	f.Add([]byte(`{"type":"ping","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{},"TYPE":"factory-reset","Payload":{"wipe":true}}`))
	f.Add([]byte(`{"type":"ping","\u0054YPE":"x","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`))
	f.Add([]byte(`{"type":"ping","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_\u017fec":10,"payload":{}}`))
	f.Add([]byte(`{"type":"a\r\nb","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{}}`))
	limits := DefaultCommandLimits()
	f.Fuzz(func(t *testing.T, body []byte) {
		in := bytes.Clone(body)
		c, err := ParseCommand(body, cmdNow, limits)
		if !bytes.Equal(body, in) {
			t.Fatal("ParseCommand modified its input")
		}
		if err != nil {
			n := 0
			for _, e := range []error{ErrMalformed, ErrInvalidCommand, ErrExpired} {
				if errors.Is(err, e) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v matches %d of ErrMalformed, ErrInvalidCommand, ErrExpired", err, n)
			}
			var fe *FieldError
			if errors.As(err, &fe) != errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error %v: FieldError and ErrInvalidCommand disagree", err)
			}
			return
		}
		if !bytes.Equal(c.Raw(), body) {
			t.Fatalf("Raw() = %q, want %q", c.Raw(), body)
		}
		if c.Type == "" || len(c.Type) > limits.MaxStringLen || !commandText(c.Type) {
			t.Fatalf("bad type %q", c.Type)
		}
		// No top-level key that an agent matching keys ignoring case
		// could take for a field, and no field twice.
		dec0 := json.NewDecoder(bytes.NewReader(body))
		_, _ = dec0.Token()
		seen := map[string]bool{}
		for dec0.More() {
			tok, _ := dec0.Token()
			key := tok.(string)
			var skip json.RawMessage
			_ = dec0.Decode(&skip)
			for _, name := range commandFieldNames {
				if strings.EqualFold(key, name) && (key != name || seen[name]) {
					t.Fatalf("accepted key %q next to field %s", key, name)
				}
			}
			seen[key] = true
		}
		if c.CorrelationID == "" || len(c.CorrelationID) > limits.MaxStringLen || !commandPrintable(c.CorrelationID) {
			t.Fatalf("bad correlation_id %q", c.CorrelationID)
		}
		if c.Version < 1 {
			t.Fatalf("bad version %d", c.Version)
		}
		if c.TTLSec < 1 || time.Duration(c.TTLSec)*time.Second > limits.MaxTTL {
			t.Fatalf("bad ttl_sec %d", c.TTLSec)
		}
		if time.Unix(c.IssuedAt, 0).After(cmdNow.Add(limits.MaxClockSkew)) {
			t.Fatalf("issued_at %d too far in the future", c.IssuedAt)
		}
		if r := c.Remaining(cmdNow); r <= 0 || r > limits.MaxTTL+limits.MaxClockSkew {
			t.Fatalf("Remaining = %v", r)
		}
		if len(c.Payload) == 0 || c.Payload[0] != '{' || !json.Valid(c.Payload) {
			t.Fatalf("payload %q is not a JSON object", c.Payload)
		}
		// What an agent decodes from the published bytes must be what was
		// validated.
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("accepted body does not decode: %v", err)
		}
		if m["type"] != c.Type || m["correlation_id"] != c.CorrelationID ||
			m["version"] != json.Number(fmt.Sprint(c.Version)) ||
			m["issued_at"] != json.Number(fmt.Sprint(c.IssuedAt)) ||
			m["ttl_sec"] != json.Number(fmt.Sprint(c.TTLSec)) {
			t.Fatalf("agent view %v differs from %+v", m, c)
		}
	})
}

// The threat the case checks answer: Go's encoding/json, like many agents'
// parsers, fills a field from a key that matches it only ignoring case (the
// last one wins), so an agent decoding a body ParseCommand had accepted with
// "type":"ping" would run "factory-reset".
func TestAgentParserMatchesKeysIgnoringCase(t *testing.T) {
	var agent struct {
		Type    string         `json:"type"`
		Payload map[string]any `json:"payload"`
	}
	body := `{"type":"ping","payload":{},"\u0054YPE":"factory-reset","Payload":{"wipe":true}}`
	if err := json.Unmarshal([]byte(body), &agent); err != nil {
		t.Fatal(err)
	}
	if agent.Type != "factory-reset" || agent.Payload["wipe"] != true {
		t.Fatalf("agent decoded %+v; the case check guards against something that does not happen", agent)
	}
	if _, err := ParseCommand([]byte(`{"type":"ping","version":1,"correlation_id":"c","issued_at":1700000000,"ttl_sec":10,"payload":{},"\u0054YPE":"factory-reset"}`), cmdNow, DefaultCommandLimits()); err == nil {
		t.Fatal("ParseCommand accepted it")
	}
}
