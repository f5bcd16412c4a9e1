package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Bounds FitStatus falls back to when a status does not fit its record.
const (
	// maxFitContentType is what a reply's content type is cut to.
	maxFitContentType = 256
	// maxFitError is what a failed command's error is cut to.
	maxFitError = 1024
)

// ErrStatusTooLarge means a status cannot be made to fit the store's
// record size even without reply payloads, content types and all but its
// first reply: the limit is absurdly small. Stores wrap it.
var ErrStatusTooLarge = errors.New("command status too large for the store")

// DropPayload leaves r's payload out and sets Truncated, keeping Size.
func (r *Reply) DropPayload() {
	if r.Payload != nil || r.PayloadBase64 != "" {
		r.Payload, r.PayloadBase64, r.Truncated = nil, "", true
	}
}

// CutContentType shortens r's content type to at most n bytes, at a rune
// boundary.
func (r *Reply) CutContentType(n int) {
	r.ContentType = cutUTF8(r.ContentType, n)
}

func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// MarshalStatus encodes s as JSON of at most limit bytes, the largest
// value the store can keep, so that no reply can make a status
// unwritable (and with it every later reply unrecorded). When s is too
// large it marshals a copy cut in this order until it fits: reply
// payloads left out (Truncated), largest first; content types cut to 256
// bytes; the error cut to 1 KiB; the replies after the first dropped
// (counted in RepliesDropped), last first. It fails with
// ErrStatusTooLarge only when even that does not fit.
func MarshalStatus(s *CommandStatus, limit int) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil || len(b) <= limit {
		return b, err
	}
	c := s.Clone()
	// Payloads: the kept bytes are what they take in the document
	// (NewReply compacts and escapes), so drop the largest until enough
	// is freed, then check.
	for len(b) > limit {
		excess := len(b) - limit
		order := make([]int, 0, len(c.Replies))
		for i, r := range c.Replies {
			if len(r.Payload)+len(r.PayloadBase64) > 0 {
				order = append(order, i)
			}
		}
		if len(order) == 0 {
			break
		}
		slices.SortStableFunc(order, func(a, b int) int {
			return payloadLen(c.Replies[b]) - payloadLen(c.Replies[a])
		})
		for _, i := range order {
			excess -= payloadLen(c.Replies[i])
			c.Replies[i].DropPayload()
			if excess <= 0 {
				break
			}
		}
		if b, err = json.Marshal(c); err != nil {
			return nil, err
		}
	}
	if len(b) > limit {
		for i := range c.Replies {
			c.Replies[i].CutContentType(maxFitContentType)
		}
		c.Error = cutUTF8(c.Error, maxFitError)
		if b, err = json.Marshal(c); err != nil {
			return nil, err
		}
	}
	for len(b) > limit && len(c.Replies) > 1 {
		// About how many replies must go; at least one per round.
		per := max(1, (len(b)-2)/len(c.Replies))
		n := min(len(c.Replies)-1, max(1, (len(b)-limit+per-1)/per))
		c.Replies = c.Replies[:len(c.Replies)-n]
		c.RepliesDropped += n
		if b, err = json.Marshal(c); err != nil {
			return nil, err
		}
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%d bytes at the least, limit %d: %w", len(b), limit, ErrStatusTooLarge)
	}
	return b, nil
}

func payloadLen(r Reply) int { return len(r.Payload) + len(r.PayloadBase64) }

// repairDepth is the depth below which UnmarshalLenient cuts values out of
// a document encoding/json refuses for its nesting (10,000 levels).
const repairDepth = 1000

// cutMark replaces, as a JSON string, what UnmarshalLenient cut. Repair
// finds it in reply payloads.
const cutMark = `"\u0000nr-bridge: cut\u0000"`

// UnmarshalLenient decodes a stored status document (or a record holding
// one) into v like json.Unmarshal, except that a document nested too
// deeply for encoding/json, as older versions stored for a hostile reply,
// is decoded with its values below 1,000 levels cut out; call Repair on
// the statuses and replies decoded to mark what was cut. It reports
// whether it cut anything.
func UnmarshalLenient(b []byte, v any) (cut bool, err error) {
	err = json.Unmarshal(b, v)
	var se *json.SyntaxError
	if err == nil || !errors.As(err, &se) || !strings.Contains(se.Error(), "exceeded max depth") {
		return false, err
	}
	if err := json.Unmarshal(cutDeep(b, repairDepth), v); err != nil {
		return true, err
	}
	return true, nil
}

// cutDeep returns b with every array or object that starts deeper than
// maxDepth replaced by cutMark.
func cutDeep(b []byte, maxDepth int) []byte {
	var out bytes.Buffer
	out.Grow(len(b))
	depth, skipFrom := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth == maxDepth+1 && skipFrom == 0 {
				skipFrom = depth
				out.WriteString(cutMark)
			}
		case c == ']' || c == '}':
			if skipFrom != 0 && depth == skipFrom {
				skipFrom = 0
				depth--
				continue
			}
			depth--
		}
		if skipFrom == 0 {
			out.WriteByte(c)
		}
	}
	return out.Bytes()
}

// Repair marks a reply whose payload UnmarshalLenient cut: payload left
// out, Truncated set.
func (r *Reply) Repair() {
	if bytes.Contains(r.Payload, []byte(cutMark)) {
		r.Payload, r.Truncated = nil, true
	}
}

// Repair marks the replies whose payload UnmarshalLenient cut.
func (s *CommandStatus) Repair() {
	for i := range s.Replies {
		s.Replies[i].Repair()
	}
}
