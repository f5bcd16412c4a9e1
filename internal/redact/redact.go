// Package redact keeps credentials out of everything the bridge prints: every
// URL in a log line, a /readyz reason, an HTTP error or a configuration error
// goes through URLs, and the logger's ReplaceAttr is Attr.
package redact

import (
	"log/slog"
	"strings"
)

// URLs returns s with the user information of every URL in it
// replaced by "redacted": tcp://user:secret@host:1883 becomes
// tcp://redacted@host:1883, nats://token@a:4222,nats://b:4222 becomes
// nats://redacted@a:4222,nats://b:4222. s may be a URL, a comma-separated
// list of them, or any text that embeds them, such as a connection error
// ("failed to connect to tcp://user:secret@host:1883: ..."), which is why it
// scans text instead of parsing one URL: every URL the bridge prints (log
// lines, /readyz reasons, configuration errors) goes through it, so a URL
// that does not even parse (a '/' or '@' left unescaped in a password)
// loses its credentials too.
//
// After each "://" it looks at the text up to the next white space, quote,
// '<', '>' or "://"; if that holds an '@', everything before the last '@'
// that precedes the first '/', '?' or '#' (or, with none there, before the
// last '@' at all) is the user information. Text without "://" and '@' is
// returned as is, without allocating.
func URLs(s string) string {
	if !strings.Contains(s, "://") || !strings.Contains(s, "@") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	rest := s
	for {
		i := strings.Index(rest, "://")
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		b.WriteString(rest[:i+3])
		rest = rest[i+3:]
		end := len(rest)
		if j := strings.IndexAny(rest, " \t\r\n\"'`<>"); j >= 0 {
			end = j
		}
		if j := strings.Index(rest[:end], "://"); j >= 0 {
			end = j
		}
		span := rest[:end]
		at := -1
		if p := strings.IndexAny(span, "/?#"); p >= 0 {
			at = strings.LastIndexByte(span[:p], '@')
		}
		if at < 0 {
			at = strings.LastIndexByte(span, '@')
		}
		if at >= 0 {
			b.WriteString("redacted")
			rest = rest[at:]
		}
	}
}

// Attr is a slog.HandlerOptions.ReplaceAttr function that passes
// every string and error value of a log record (the message included, and
// so the lines of paho's and other libraries' loggers) through URLs.
// The bridge's logger uses it so that a URL with credentials cannot reach a
// log line, whichever library wrote the error that embeds it.
func Attr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); strings.Contains(s, "://") {
			if r := URLs(s); r != s {
				a.Value = slog.StringValue(r)
			}
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && err != nil {
			if s := err.Error(); strings.Contains(s, "://") {
				if r := URLs(s); r != s {
					a.Value = slog.StringValue(r)
				}
			}
		}
	}
	return a
}
