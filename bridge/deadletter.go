package bridge

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// HeaderOriginalSize is set on a dead letter that FitDeadLetter cut: the
// length of the payload the bridge received, before any cut.
const HeaderOriginalSize = "Nr-Original-Size"

// HeaderDroppedHeaders is set on a dead letter from which FitDeadLetter
// removed headers that were not the bridge's own (a node's user properties,
// a command record's headers) to make it fit: how many were removed.
const HeaderDroppedHeaders = "Nr-Dropped-Headers"

// Header is one backbone header of a dead letter, in the order it is
// written.
type Header struct {
	Name, Value string
}

// HeaderOverhead is what FitDeadLetter counts for each header on top of its
// name and value: NATS writes "Name: value\r\n", Kafka two varint lengths;
// 16 covers both with room to spare.
const HeaderOverhead = 16

// minKeptValue is how short FitDeadLetter may make the value of one of the
// bridge's own headers (Nr-Error, Nr-Topic, Nr-Source-Key ...) when nothing
// else is left to cut.
const minKeptValue = 256

// fitReserve is the room FitDeadLetter keeps for the two headers it may
// add, Nr-Original-Size and Nr-Dropped-Headers, with 20-digit values.
const fitReserve = len(HeaderOriginalSize) + len(HeaderDroppedHeaders) + 2*HeaderOverhead + 2*20

// FitDeadLetter cuts a dead letter until its encoded size fits limit bytes,
// so that a dead letter is never refused by the backbone for its size and no
// message is ever acknowledged without being stored or dead-lettered. limit
// is what the backbone takes for the headers and the payload together (NATS
// max_payload, or the Kafka topic's record limit minus the key); callers
// keep their own margin for framing below it.
//
// The order of cuts keeps what an operator needs to find and judge the
// message: first the headers that are not the bridge's own (names not
// starting "Nr-") are dropped, from the last, with Nr-Dropped-Headers
// saying how many; then the payload is cut, with Nr-Original-Size; last,
// the values of the bridge's own headers are shortened to minKeptValue
// bytes, longest first. Nr-Error and the origin headers are never removed.
// A dead letter that already fits is returned unchanged, sharing headers
// and payload.
func FitDeadLetter(headers []Header, payload []byte, limit int) ([]Header, []byte) {
	size := headersSize(headers) + len(payload)
	if size <= limit {
		return headers, payload
	}
	origSize, dropped := len(payload), 0
	for _, h := range headers {
		n, err := strconv.Atoi(h.Value)
		switch {
		case err != nil:
		case h.Name == HeaderOriginalSize:
			origSize = n // cut before: keep what was first received
		case h.Name == HeaderDroppedHeaders:
			dropped = n // cut before: count what that cut dropped too
		}
	}
	extra := fitReserve

	out := make([]Header, 0, len(headers)+2)
	for _, h := range headers {
		if h.Name == HeaderOriginalSize || h.Name == HeaderDroppedHeaders {
			continue // rewritten below
		}
		out = append(out, h)
	}
	for i := len(out) - 1; i >= 0 && headersSize(out)+len(payload)+extra > limit; i-- {
		if !ownHeader(out[i].Name) {
			out = append(out[:i], out[i+1:]...)
			dropped++
		}
	}
	if over := headersSize(out) + len(payload) + extra - limit; over > 0 {
		payload = payload[:max(len(payload)-over, 0)]
	}
	for headersSize(out)+len(payload)+extra > limit {
		longest := -1
		for i, h := range out {
			if len(h.Value) > minKeptValue && (longest < 0 || len(h.Value) > len(out[longest].Value)) {
				longest = i
			}
		}
		if longest < 0 {
			break // only short headers left: limit is smaller than any dead letter
		}
		over := headersSize(out) + len(payload) + extra - limit
		out[longest].Value = cutString(out[longest].Value, max(len(out[longest].Value)-over, minKeptValue))
	}
	if dropped > 0 {
		out = append(out, Header{HeaderDroppedHeaders, strconv.Itoa(dropped)})
	}
	if len(payload) < origSize {
		out = append(out, Header{HeaderOriginalSize, strconv.Itoa(origSize)})
	}
	return out, payload
}

// ownHeader reports whether name is one of the bridge's own headers, which
// FitDeadLetter never drops.
func ownHeader(name string) bool {
	return len(name) >= 3 && strings.EqualFold(name[:3], "nr-")
}

func headersSize(hs []Header) int {
	n := 0
	for _, h := range hs {
		n += len(h.Name) + len(h.Value) + HeaderOverhead
	}
	return n
}

// cutString returns at most n bytes of s, not splitting a UTF-8 sequence.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// maxReasonLen bounds the Nr-Error value ReasonLine makes.
const maxReasonLen = 1024

// ReasonLine is err's message as a dead letter's Nr-Error value: one line
// (control characters, CR and LF included, become spaces), valid UTF-8, at
// most 1,024 bytes. Every dead-letter path uses it, so a reason that quotes
// hostile input can never break a header.
func ReasonLine(err error) string {
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(err.Error(), " "))
	return cutString(s, maxReasonLen)
}
