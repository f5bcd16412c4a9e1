package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The defaults of CommandLimits; DefaultCommandLimits explains them.
const (
	DefaultMaxTTL       = 24 * time.Hour
	DefaultMaxClockSkew = 30 * time.Second
	DefaultMaxStringLen = 256
)

// CommandLimits bounds what ParseCommand accepts. A zero or negative field
// takes its default, so CommandLimits{} is the same as DefaultCommandLimits().
type CommandLimits struct {
	// MaxTTL is the largest ttl_sec accepted, rounded down to whole seconds.
	// Default 24h (86400 s).
	MaxTTL time.Duration `env:"COMMAND_MAX_TTL" envDefault:"24h" desc:"largest ttl_sec a command may have (whole seconds, >= 1s)"`
	// MaxClockSkew is how far issued_at may be ahead of the bridge's clock,
	// rounded down to whole seconds (issued_at has whole-second resolution),
	// so a value below one second (e.g. 1ns) means "not in the future".
	// Default 30s.
	MaxClockSkew time.Duration `env:"COMMAND_MAX_CLOCK_SKEW" envDefault:"30s" desc:"how far a command's issued_at may be ahead of the bridge's clock (whole seconds; below 1s: not at all)"`
	// MaxStringLen is the longest type and correlation_id accepted, in bytes
	// of UTF-8. Default 256.
	MaxStringLen int `env:"COMMAND_MAX_STRING_LEN" envDefault:"256" desc:"longest type and correlation_id, in bytes (1 to 4096)"`
}

// DefaultCommandLimits returns the default limits, chosen as follows.
//
// MaxTTL 24h: a command is an instruction for now; one that is still queued a
// day later is more likely harmful than useful when a node reconnects, and
// the TTL becomes the MQTT message expiry, so it also bounds how long the
// broker keeps the command for an offline node.
//
// MaxClockSkew 30s: issuers' clocks are normally within a second of ours;
// 30s tolerates a drifting container or VM clock. Beyond that issued_at is
// wrong, and accepting it would let a command live longer than MaxTTL
// (issued_at in the future + ttl_sec).
//
// MaxStringLen 256: correlation_id becomes the MQTT correlation data and ends
// up in headers and log lines, type in logs; 256 bytes holds any UUID, ULID,
// trace ID or dotted command name with room to spare while keeping headers
// and logs bounded.
func DefaultCommandLimits() CommandLimits {
	return CommandLimits{
		MaxTTL:       DefaultMaxTTL,
		MaxClockSkew: DefaultMaxClockSkew,
		MaxStringLen: DefaultMaxStringLen,
	}
}

// Validate checks limits read from the environment, where a zero would
// silently mean the default; errors name the variable.
func (l CommandLimits) Validate() error {
	if l.MaxTTL < time.Second {
		return fmt.Errorf("COMMAND_MAX_TTL must be at least 1s, got %s", l.MaxTTL)
	}
	if l.MaxClockSkew <= 0 {
		return fmt.Errorf("COMMAND_MAX_CLOCK_SKEW must be > 0 (below 1s allows no skew), got %s", l.MaxClockSkew)
	}
	if l.MaxStringLen < 1 || l.MaxStringLen > 4096 {
		return fmt.Errorf("COMMAND_MAX_STRING_LEN must be between 1 and 4096, got %d", l.MaxStringLen)
	}
	return nil
}

// WithDefaults fills zero or negative fields with their defaults.
func (l CommandLimits) WithDefaults() CommandLimits {
	if l.MaxTTL <= 0 {
		l.MaxTTL = DefaultMaxTTL
	}
	if l.MaxClockSkew <= 0 {
		l.MaxClockSkew = DefaultMaxClockSkew
	}
	if l.MaxStringLen <= 0 {
		l.MaxStringLen = DefaultMaxStringLen
	}
	return l
}

// Command is a validated command for one node or a whole org (the target
// comes from the HTTP path, NATS subject or Kafka key, not from the body).
// Get one from ParseCommand: the fields are then valid and Raw holds the
// document to publish. Treat it as read-only (Raw is not rebuilt when a
// field changes); it is then safe to share between goroutines.
type Command struct {
	// Type names the command for the agent; non-empty.
	Type string `json:"type"`
	// Version is the version of the command's payload schema; >= 1.
	Version int `json:"version"`
	// CorrelationID ties the node's reply to the command; it is published as
	// the MQTT v5 correlation data. Non-empty printable UTF-8.
	CorrelationID string `json:"correlation_id"`
	// IssuedAt is when the issuer created the command, in Unix seconds.
	IssuedAt int64 `json:"issued_at"`
	// TTLSec is how long after IssuedAt the command may still be delivered,
	// in seconds; > 0.
	TTLSec int `json:"ttl_sec"`
	// Payload is the command's arguments, a JSON object, byte for byte as
	// received; the bridge does not look inside.
	Payload json.RawMessage `json:"payload"`

	raw []byte
}

// Raw returns the command document exactly as ParseCommand received it,
// including fields the bridge does not know. The publisher publishes these
// bytes, so that nothing is lost or reformatted on the way to the agent. The
// caller must not modify the returned slice. It is nil for a Command that
// did not come from ParseCommand.
func (c Command) Raw() []byte { return c.raw }

// ExpiresAt is when the command's TTL runs out: IssuedAt + TTLSec.
func (c Command) ExpiresAt() time.Time {
	// Saturate rather than wrap for a hand-built Command with extreme
	// values (ParseCommand never produces one), at a bound time.Time can
	// still represent and subtract.
	const limit = math.MaxInt64 / 2
	sec, ttl := c.IssuedAt, int64(c.TTLSec)
	switch {
	case sec > limit || ttl > 0 && sec > limit-ttl:
		sec = limit
	case sec < -limit || ttl < 0 && sec < -limit-ttl:
		sec = -limit
	default:
		sec += ttl
	}
	return time.Unix(sec, 0).UTC()
}

// Remaining is the TTL left at now: ExpiresAt() - now. Zero or negative
// means the command has expired and must not be published. The publisher
// sets the MQTT message expiry to Remaining rounded up to whole seconds, at
// least 1, so a node that comes back later never runs a stale command.
func (c Command) Remaining(now time.Time) time.Duration {
	return c.ExpiresAt().Sub(now)
}

// Indexes of the command fields in commandFieldNames, in the order they are
// checked (so the first error reported is deterministic).
const (
	cmdFieldType = iota
	cmdFieldVersion
	cmdFieldCorrelationID
	cmdFieldIssuedAt
	cmdFieldTTLSec
	cmdFieldPayload
	cmdFieldCount
)

var commandFieldNames = [cmdFieldCount]string{
	"type", "version", "correlation_id", "issued_at", "ttl_sec", "payload",
}

// ParseCommand decodes and validates a command body received at now.
//
// Every field is required and must have its JSON type: numbers must be
// written as integers (1.5, 1e3 and "10" are rejected), payload must be an
// object, type and correlation_id printable UTF-8 without control
// characters. Field names match exactly (case-sensitive). Unknown top-level
// fields are accepted and ignored, so issuers can add fields before the
// bridge knows them; they still reach the agent in Raw. A known field given
// twice, or a top-level key that equals a field name ignoring case but is
// not exactly it ("TYPE", "Payload", "ttl_\u017fec"), is rejected with a
// FieldError naming the field: keys are compared as decoded, so JSON
// escapes ("\u0054YPE", "typ\u0065") change nothing, and the agent's JSON
// parser, which may match keys ignoring case as Go's encoding/json does,
// could otherwise act on another value than the one validated here.
//
// The error wraps ErrMalformed when body is not a single JSON object (or
// not valid UTF-8), is a *FieldError (wrapping ErrInvalidCommand) for the
// first missing or invalid field, and wraps ErrExpired when issued_at +
// ttl_sec is not after now. limits bounds ttl_sec, how far issued_at may be
// in the future and the string lengths; see CommandLimits.
//
// ParseCommand keeps a copy of body, so the caller may reuse it. It does not
// limit the size of body: that is the caller's job (HTTP MaxBytesReader, the
// backbone's message size). Its cost is linear in the size of body.
func ParseCommand(body []byte, now time.Time, limits CommandLimits) (Command, error) {
	limits = limits.WithDefaults()
	fields, err := commandFields(body)
	if err != nil {
		return Command{}, err
	}
	for i, f := range fields {
		if f == nil {
			return Command{}, &FieldError{Field: commandFieldNames[i], Reason: "required"}
		}
	}

	var c Command
	if c.Type, err = commandString(fields, cmdFieldType, limits.MaxStringLen); err != nil {
		return Command{}, err
	}
	// type ends up in log lines and the agent's dispatch: a CR, LF, NUL or
	// escape sequence in it is never a command name.
	if !commandText(c.Type) {
		return Command{}, &FieldError{Field: "type", Reason: "must be printable UTF-8 without control characters"}
	}

	version, ok := commandInt(fields[cmdFieldVersion], 1, math.MaxInt)
	if !ok {
		return Command{}, &FieldError{Field: "version", Reason: "must be an integer >= 1"}
	}
	c.Version = int(version)

	if c.CorrelationID, err = commandString(fields, cmdFieldCorrelationID, limits.MaxStringLen); err != nil {
		return Command{}, err
	}
	if !commandText(c.CorrelationID) {
		return Command{}, &FieldError{Field: "correlation_id", Reason: "must be printable UTF-8 without control characters"}
	}

	if c.IssuedAt, ok = commandInt(fields[cmdFieldIssuedAt], math.MinInt64, math.MaxInt64); !ok {
		return Command{}, &FieldError{Field: "issued_at", Reason: "must be an integer (Unix seconds)"}
	}
	// Compare in whole seconds, so that a huge issued_at cannot overflow
	// time arithmetic; issued_at is whole seconds anyway. Checking this
	// first also bounds IssuedAt+TTLSec below.
	if nowSec := now.Unix(); c.IssuedAt > nowSec {
		ahead := c.IssuedAt - nowSec // negative only on overflow: absurdly far
		if ahead < 0 || ahead > int64(limits.MaxClockSkew/time.Second) {
			return Command{}, &FieldError{
				Field:  "issued_at",
				Reason: fmt.Sprintf("must not be more than %s in the future (it is %s ahead of the bridge's clock)", limits.MaxClockSkew, commandAhead(ahead)),
			}
		}
	}

	maxTTL := int64(limits.MaxTTL / time.Second)
	if maxTTL < 1 {
		maxTTL = 1
	}
	ttl, ok := commandInt(fields[cmdFieldTTLSec], 1, maxTTL)
	if !ok {
		return Command{}, &FieldError{Field: "ttl_sec", Reason: fmt.Sprintf("must be an integer between 1 and %d", maxTTL)}
	}
	c.TTLSec = int(ttl)

	if p := fields[cmdFieldPayload]; p[0] != '{' {
		return Command{}, &FieldError{Field: "payload", Reason: "must be a JSON object"}
	}
	c.Payload = fields[cmdFieldPayload]

	if exp := c.ExpiresAt(); !now.Before(exp) {
		return Command{}, fmt.Errorf("%w at %s (issued_at %d + ttl_sec %d), %s ago",
			ErrExpired, exp.Format(time.RFC3339), c.IssuedAt, c.TTLSec, now.Sub(exp).Truncate(time.Millisecond))
	}

	c.raw = bytes.Clone(body)
	return c, nil
}

// commandFields splits body, which must be one JSON object, into the raw
// values of the known command fields (nil when absent). It reads the object
// one top-level member at a time so that a large payload is scanned once.
func commandFields(body []byte) ([cmdFieldCount]json.RawMessage, error) {
	var fields [cmdFieldCount]json.RawMessage
	if len(bytes.Trim(body, " \t\r\n")) == 0 {
		return fields, fmt.Errorf("%w: empty body", ErrMalformed)
	}
	// encoding/json silently replaces invalid UTF-8; the agent's parser
	// might not, and we publish the bytes as received.
	if !utf8.Valid(body) {
		return fields, fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return fields, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fields, fmt.Errorf("%w: got %s", ErrMalformed, commandJSONKind(tok))
	}
	var dup error
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fields, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fields, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		for i, name := range commandFieldNames {
			if key != name {
				// Go's encoding/json and many agents' parsers fill a
				// field from a key that matches it ignoring case (with
				// Unicode folding: "ttl_\u017fec" is ttl_sec), so the
				// agent might read this value instead of the one
				// validated here.
				if dup == nil && strings.EqualFold(key, name) {
					dup = &FieldError{Field: name, Reason: fmt.Sprintf("key %q differs from it only in case", key)}
				}
				continue
			}
			if fields[i] != nil && dup == nil {
				dup = &FieldError{Field: name, Reason: "duplicate key"}
			}
			fields[i] = v
			break
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fields, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fields, fmt.Errorf("%w: data after the object", ErrMalformed)
	}
	// Reported only once the whole document is known to be an object, so a
	// body that is also malformed gets the 400 rather than the 422.
	return fields, dup
}

// commandJSONKind names the JSON value that starts with tok.
func commandJSONKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return fmt.Sprintf("%q", string(v))
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	default:
		return "a number"
	}
}

// commandString decodes the string field i, non-empty and at most maxLen
// bytes.
func commandString(fields [cmdFieldCount]json.RawMessage, i, maxLen int) (string, error) {
	name := commandFieldNames[i]
	var s string
	if fields[i][0] != '"' || json.Unmarshal(fields[i], &s) != nil {
		return "", &FieldError{Field: name, Reason: "must be a string"}
	}
	if s == "" {
		return "", &FieldError{Field: name, Reason: "must not be empty"}
	}
	if len(s) > maxLen {
		return "", &FieldError{Field: name, Reason: fmt.Sprintf("must be at most %d bytes", maxLen)}
	}
	return s, nil
}

// commandInt parses raw as a JSON number written as an integer in
// [lo, hi]. A fraction or exponent is refused even when the value is whole
// (1.0, 1e3): many agents decode these fields into integer types and would
// fail on them.
func commandInt(raw json.RawMessage, lo, hi int64) (int64, bool) {
	// Longer than any int64; also keeps a huge digit string cheap.
	if len(raw) == 0 || len(raw) > 20 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}

// commandPrintable reports whether s is valid UTF-8 made only of printable
// characters (unicode.IsPrint: letters, marks, numbers, punctuation, symbols
// and the ASCII space). That keeps the correlation ID safe to put in headers
// and log lines and to echo back as is: no control characters (CR and LF end
// a header line), no invisible format characters such as bidi overrides.
func commandPrintable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// commandText reports whether s may be a type or correlation_id:
// commandPrintable and no U+FFFD, which is also what encoding/json makes of
// a lone surrogate escape (\ud800) that another parser may decode
// differently; the agent must see the very string validated here (and the
// reply carry the very correlation ID).
func commandText(s string) bool {
	return commandPrintable(s) && !strings.ContainsRune(s, utf8.RuneError)
}

// commandAhead formats a number of seconds as a duration, without
// overflowing for absurd issued_at values.
func commandAhead(sec int64) string {
	if sec < 0 || sec > int64(math.MaxInt64/time.Second) {
		return "more than 290 years"
	}
	return (time.Duration(sec) * time.Second).String()
}
